"""Chunked, vmapped, device-sharded evaluation of a grid, with a streaming Pareto front.

The grid is never materialized: a chunk is a range of flat indices, and each point's knob values
are decoded from its index (mixed radix) inside the jitted function, so host memory holds one
chunk and the running front. Each finished chunk writes its front and valid count to
``<out>/chunks/``; a rerun into the same directory skips their Pareto work (resume; kept rows are
re-evaluated, ~0.1 s per million points, rather than copied to disk twice), and shards
(``shard i of n``: a contiguous slice of the grid) merge into the exact front of the whole grid
because the front of a union is the front of the union of fronts.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dse.core.accuracy import AccuracyParams
from dse.core.conventions import Conventions
from dse.core.design import Design, is_valid
from dse.core.hardware import Hardware
from dse.core.metrics import COMPILER_OPTIONS, evaluate, map_points
from dse.core.serving import SERVE_KNOBS, serve
from dse.explore.export import write_parquet, write_text
from dse.explore.pareto import _dominated_by, dominated_by_staircase, front_rows, merge_fronts, objective_matrix, pareto_front
from dse.explore.space import Knob, set_knob, specialize_design


#: front rows used on the device to discard dominated points of a chunk before the exact filter
SEED_ROWS = 128


@dataclass(frozen=True)
class Grid:
    knobs: tuple[Knob, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(k.values) for k in self.knobs)

    @property
    def size(self) -> int:
        return int(np.prod(self.sizes, dtype=np.int64)) if self.knobs else 1

    @property
    def strides(self) -> tuple[int, ...]:
        """Mixed-radix strides: the last knob varies fastest."""
        out, acc = [], 1
        for n in reversed(self.sizes):
            out.append(acc)
            acc *= n
        return tuple(reversed(out))

    def shard_range(self, shard: int, num_shards: int) -> tuple[int, int]:
        n = self.size
        return shard * n // num_shards, (shard + 1) * n // num_shards

    def fingerprint(self, extra: str = "") -> str:
        h = hashlib.sha256(extra.encode())
        for k in self.knobs:
            h.update(k.key.encode())
            h.update(np.asarray(k.values, np.float64).tobytes())
        return h.hexdigest()[:16]


def _point(index, values, strides, sizes, design, hw, acc, conv, keys, derive_d_head, dtype):
    d, h = design, hw
    out = {}
    for key, vals, stride, size in zip(keys, values, strides, sizes):
        v = vals[(index // stride) % size]
        d, h = set_knob(d, h, key, v)
        out[key] = v
    if derive_d_head:
        d = Design(type(d.arch)(**{**d.arch.__dict__, "d_head": d.arch.d_model / d.arch.n_heads}), d.quant, d.workload)
    d = jax.tree.map(lambda x: jnp.asarray(x, dtype), d)
    h = jax.tree.map(lambda x: jnp.asarray(x, dtype), h)
    m = evaluate(d, h, conv, acc)
    if any(k in SERVE_KNOBS for k in keys):  # a serving knob is swept: add the steady-state serve.* columns
        m.update({f"serve.{k}": v for k, v in serve(d, h, conv).items()})
    valid = is_valid(d)
    if derive_d_head:
        valid = valid & (jnp.mod(d.arch.d_model, d.arch.n_heads) == 0)
    out.update(m)
    out["valid"] = valid
    return out


@partial(jax.jit, static_argnames=("conv", "keys", "derive_d_head", "dtype", "objectives", "fits_only"),
         compiler_options=COMPILER_OPTIONS)
def eval_indices(indices, values, strides, sizes, design, hw, acc, seed=None, limit=None, *, conv, keys,
                 derive_d_head, dtype, objectives=(), fits_only=True):
    """Metrics (and knob values, and a ``valid`` mask) of the grid points at ``indices``.

    With ``seed`` (rows of objectives, minimized; +inf rows dominate nothing) and ``objectives``
    (``(key, dir)`` pairs), also ``cand``: valid (and fitting, with ``fits_only``) points that no
    seed row dominates, the only ones that can join the Pareto front — computed in the same
    compiled call, so the prefilter costs no extra pass or compilation. Indices at or past
    ``limit`` (the padding of a shard's last chunk) are not valid.
    """
    out = map_points(lambda i: _point(i, values, strides, sizes, design, hw, acc, conv, keys,
                                      derive_d_head, dtype), indices)
    if limit is not None:
        out["valid"] = out["valid"] & (indices < limit)
    if seed is not None:
        base = out["valid"] & out["fits_memory"] if fits_only else out["valid"]
        obj = objective_matrix(out, [{"key": k, "dir": d} for k, d in objectives], jnp)
        out["cand"] = base & ~_dominated_by(obj, seed.astype(obj.dtype))
    return out


def _shard_over_devices(indices):
    devices = jax.local_devices()
    if len(devices) == 1 or len(indices) % len(devices):
        return indices
    mesh = jax.sharding.Mesh(np.array(devices), ("points",))
    return jax.device_put(indices, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("points")))


@dataclass
class SweepResult:
    front: pd.DataFrame
    points: int  # grid points in this shard
    valid: int  # points that satisfy every design rule (and the row filter)
    rows_written: int | None  # rows in the results file (None when rows are not kept)
    chunks_resumed: int


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: ``chunks_done`` of ``chunks`` are saved in ``chunk_dir`` (a rerun resumes)."""

    def __init__(self, chunks_done: int, chunks: int, chunk_dir: Path):
        super().__init__(f"interrupted: {chunks_done} of {chunks} chunks are saved in {chunk_dir}; "
                         "rerun the same command into the same directory (hydra.run.dir=...) to resume from them")
        self.chunks_done, self.chunks, self.chunk_dir = chunks_done, chunks, chunk_dir


@partial(jax.jit, static_argnames=("dirs",))
def _not_dominated(cols, seed, *, dirs):
    """Rows (objective columns, directions ``dirs``) that no row of ``seed`` (minimized) dominates."""
    obj = jnp.stack([c * (1.0 if d == "min" else -1.0) for c, (_, d) in zip(cols, dirs)], axis=1)
    return ~_dominated_by(obj, seed.astype(obj.dtype))


def _seed_front(obj: np.ndarray, mask: np.ndarray, keep: int, rows: int = 4096) -> np.ndarray:
    """At most ``keep`` rows of the front of an evenly spread sample of a chunk's candidate rows
    (a witness set for the prefilter of the first chunk)."""
    from dse.explore.pareto import pareto_mask
    cand = np.flatnonzero(mask)
    sample = obj[cand[np.linspace(0, len(cand) - 1, min(len(cand), rows)).astype(int)]] if len(cand) else obj[:0]
    sample = sample[np.isfinite(sample).all(1)]
    front = sample[pareto_mask(sample)] if len(sample) else sample
    return front[np.linspace(0, len(front) - 1, min(len(front), keep)).astype(int)] if len(front) else front


def run_sweep(design: Design, hw: Hardware, acc: AccuracyParams, conv: Conventions, grid: Grid, *,
              out_dir: str | os.PathLike, objectives: Sequence[dict], chunk_size: int = 262_144,
              shard: int = 0, num_shards: int = 1, keep_rows: bool = True, fits_only: bool = True,
              derive_d_head: bool = False, dtype: str = "float32", progress: bool = True,
              row_filter: str | None = None, results_path: str | os.PathLike | None = None,
              constants: dict | None = None, scenarios: Sequence[str] = ()) -> SweepResult:
    """Evaluate one shard of ``grid`` chunk by chunk; return its Pareto front (rows of all columns).

    ``row_filter``: a pandas query (column names in backticks when they contain dots) that rows
    must satisfy to be kept, e.g. a parameter budget. ``scenarios``: knobs that are conditions, not
    choices (context, batch): the front is taken per value of them (``pareto.pareto_front``). With ``keep_rows``, every kept row goes to
    ``results_path`` (default ``<out_dir>/results.parquet``), one row group per chunk, with the
    ``constants`` as extra columns, encoded by a second thread while the next chunk is evaluated.

    Where the time goes (the 884,736-point sweep of issue 16, ~30 s before): the exact front of
    each chunk was O(n·|front|) (26 s); now rows dominated by a sample of the running front (or,
    for the first chunk, by the front of a sample of the chunk) are dropped on the device; on the
    host, rows the running front or the front of a sample of the chunk dominates are dropped by a
    staircase table (``pareto.dominated_by_staircase``), and the exact front of the rest is a sweep
    line in O(n log² n) over the objective columns only (dse.explore.pareto). Rows are written
    once as Parquet, straight from numpy columns (no pandas round trip, no re-read).
    """
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import ExitStack

    from dse.explore.export import atomic_path

    design = specialize_design(design, grid.knobs)
    out = Path(out_dir)
    chunk_dir = out / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    keys = tuple(k.key for k in grid.knobs)
    fp = grid.fingerprint(repr((conv, dtype, derive_d_head, row_filter, jax.tree.map(float, (design, hw, acc)))))
    manifest = chunk_dir / f"manifest-{shard}-of-{num_shards}.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") != fp:
        for f in chunk_dir.glob(f"*-{shard}-of-{num_shards}-*.*"):
            f.unlink()  # another grid or design was swept here before: start this shard over
    write_text(manifest, json.dumps({"fingerprint": fp, "keys": keys, "size": grid.size}))

    lo, hi = grid.shard_range(shard, num_shards)
    values = tuple(jnp.asarray(k.values, dtype) for k in grid.knobs)
    strides = tuple(jnp.asarray(s, jnp.int64) for s in grid.strides)
    sizes = tuple(jnp.asarray(s, jnp.int64) for s in grid.sizes)
    n_dev = len(jax.local_devices())
    chunk = int(min(chunk_size, max(hi - lo, 1)))
    chunk = -(-chunk // n_dev) * n_dev
    starts = list(range(lo, hi, chunk))
    front, n_valid, resumed, n_rows = pd.DataFrame(), 0, 0, 0  # the running front of the shard
    constants = constants or {}
    obj_spec = tuple((o["key"], o.get("dir", "min")) for o in objectives)
    tags = [f"{shard}-of-{num_shards}-{c:06d}" for c in range(len(starts))]
    files = [(chunk_dir / f"front-{t}.parquet", chunk_dir / f"count-{t}.json") for t in tags]
    finished = [f.exists() and n.exists() for f, n in files]
    first_seed = None  # the front of a sample of the first evaluated chunk (before the running front exists)

    def seed_rows():
        # Rows dominated by some front point cannot join the front: they are dropped on the device,
        # checked against an evenly spread sample of the running front (any subset of evaluated
        # points is a valid witness). A row filter may remove a witness: then no prefilter.
        seed = np.full((SEED_ROWS, len(objectives)), np.inf)
        if row_filter or scenarios:  # a row of another scenario is no witness
            return seed
        f = objective_matrix(front, objectives) if len(front) else first_seed
        if f is not None and len(f):
            seed[:min(len(f), SEED_ROWS)] = f[np.linspace(0, len(f) - 1, min(len(f), SEED_ROWS)).astype(int)]
        return seed

    def dispatch(c):  # asynchronous: the device evaluates chunk c while the host works on the previous one
        idx = jnp.arange(starts[c], starts[c] + chunk, dtype=jnp.int64)
        return eval_indices(_shard_over_devices(idx), values, strides, sizes, design, hw, acc,
                            jnp.asarray(seed_rows(), dtype), hi, conv=conv, keys=keys, derive_d_head=derive_d_head,
                            dtype=jnp.dtype(dtype), objectives=obj_spec, fits_only=fits_only)

    bar = _progress(len(starts), hi - lo, progress)
    writer, done, pending = None, 0, {}
    pool, writes = ThreadPoolExecutor(max_workers=1), []
    try:
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(results_path or out / "results.parquet")) if keep_rows else None
            for c, start in enumerate(starts):
                front_file, count_file = files[c]
                table = None
                if finished[c]:
                    front_c = pd.read_parquet(front_file)
                    n_valid += int(json.loads(count_file.read_text())["valid"])
                    if keep_rows:  # the rows again (cheaper than keeping a second copy of them on disk)
                        res = pending.pop(c) if c in pending else dispatch(c)
                        valid = np.asarray(res.pop("valid"))
                        res.pop("cand")
                        idx = np.arange(start, start + chunk, dtype=np.int64)
                        table = _rows_table(idx, {k: np.asarray(v) for k, v in res.items()}, valid, row_filter)
                    resumed += 1
                else:
                    res = pending.pop(c) if c in pending else dispatch(c)
                    valid, cand = np.asarray(res.pop("valid")), np.asarray(res.pop("cand"))
                    if not len(front) and first_seed is None and not row_filter and not scenarios:
                        first_seed = _seed_front(objective_matrix(res, objectives), cand, SEED_ROWS)
                        if len(first_seed):
                            cand = cand & np.asarray(_not_dominated(tuple(res[k] for k, _ in obj_spec),
                                                                    jnp.asarray(seed_rows(), dtype), dirs=obj_spec))
                    nxt = next((j for j in range(c + 1, len(starts)) if not finished[j]), None)
                    if nxt is not None:
                        pending[nxt] = dispatch(nxt)
                    idx = np.arange(start, start + chunk, dtype=np.int64)
                    front_c, table, n_chunk_valid = _chunk_rows(idx, {k: np.asarray(v) for k, v in res.items()}, valid,
                                                                cand, objectives, fits_only, row_filter, keep_rows,
                                                                scenarios, objective_matrix(front, objectives)
                                                                if len(front) else None)
                    write_text(count_file, json.dumps({"valid": n_chunk_valid}))
                    write_parquet(front_file, front_c)
                    n_valid += n_chunk_valid
                done += 1
                if table is not None:
                    table = _with_constants(table, constants)
                    if writer is None:
                        writer = _rows_writer(tmp, table.schema, ("grid_index", *keys))
                    # encoding Parquet is the sweep's largest cost: a thread does it (pyarrow releases the GIL)
                    # on the core the evaluation leaves idle, in chunk order, at most two chunks behind
                    while len(writes) >= 2:
                        writes.pop(0).result()
                    writes.append(pool.submit(writer.write_table, table))
                    n_rows += table.num_rows
                front = merge_fronts(front, front_c, objectives, scenarios)
                bar.update(min(chunk, hi - start))
            for w in writes:
                w.result()
            writes.clear()
            if writer is not None:
                writer.close()
                writer = None
            elif keep_rows:
                pd.DataFrame().to_parquet(tmp)
    except KeyboardInterrupt:
        raise SweepInterrupted(done, len(starts), chunk_dir) from None
    finally:
        for w in writes:  # let a write in flight finish before the file closes
            w.exception()
        pool.shutdown()
        if writer is not None:
            writer.close()
        bar.close()
    return SweepResult(front, hi - lo, n_valid, n_rows if keep_rows else None, resumed)


def _filtered(idx, cols, valid, row_filter) -> pd.DataFrame:
    """The valid rows of a chunk that satisfy ``row_filter`` (a pandas query)."""
    df = pd.DataFrame({"grid_index": idx[valid], **{k: v[valid] for k, v in cols.items()}})
    try:
        return df.query(row_filter).reset_index(drop=True)
    except Exception as e:  # pandas raises many types for a bad expression
        from dse.core.design import DesignError
        raise DesignError(f"sweep.filter={row_filter!r}: {type(e).__name__}: {e}; write a pandas query over the "
                          "result columns, e.g. 'params < 7e9' or '`workload.batch` <= 64'") from None


def _rows_table(idx, cols, valid, row_filter):
    """The kept rows of one evaluated chunk as an Arrow table (no copy when every point is valid)."""
    import pyarrow as pa
    if row_filter:
        return pa.Table.from_pandas(_filtered(idx, cols, valid, row_filter), preserve_index=False)
    table = pa.table({"grid_index": idx, **cols} if valid.all() else
                     {"grid_index": idx[valid], **{k: v[valid] for k, v in cols.items()}})
    # numpy arrays hold no nulls (NaN stays a float): declared non-null, no definition levels to encode
    return pa.Table.from_arrays(table.columns, schema=pa.schema([f.with_nullable(False) for f in table.schema]))


def _chunk_rows(idx, cols, valid, cand, objectives, fits_only, row_filter, keep_rows, scenarios=(), witnesses=None):
    """(front, rows as an Arrow table or None, valid count) of one evaluated chunk (host arrays).
    ``witnesses``: the running front's objective matrix (minimized); candidates it dominates are
    not on the merged front, so the chunk's front leaves them out (the union's front is the same)."""
    import pyarrow as pa
    if row_filter:
        df = _filtered(idx, cols, valid, row_filter)
        table = pa.Table.from_pandas(df, preserve_index=False) if keep_rows else None
        return pareto_front(df, objectives, fits_only=fits_only, scenarios=scenarios), table, len(df)
    if scenarios:
        front = pareto_front(pd.DataFrame({"grid_index": idx[cand], **{k: v[cand] for k, v in cols.items()}}),
                             objectives, fits_only=fits_only, scenarios=scenarios)
    else:  # the front from the objective columns of the candidates; only its rows are gathered
        # first drop candidates that the running front or the front of a sample of the chunk
        # dominates (most of them: they share a chunk's few accuracy levels), by the staircase
        obj = objective_matrix(cols, objectives)
        sample = _seed_front(obj, cand, keep=4096)
        among = np.flatnonzero(cand)
        among = among[~dominated_by_staircase(obj[among], sample if witnesses is None else
                                              np.concatenate([witnesses, sample]))]
        rows = front_rows(cols, objectives, fits_only=fits_only, among=among)
        front = pd.DataFrame({"grid_index": idx[rows], **{k: v[rows] for k, v in cols.items()}})
    return front, _rows_table(idx, cols, valid, None) if keep_rows else None, int(valid.sum())


def _rows_writer(path, schema, stats_columns):
    """The Parquet writer of the kept rows, the sweep's largest cost. Per column and 262,144-row
    chunk (pyarrow 26, 2-core Xeon; timings vary +-30% on this VM): a float column ~1.3 ms nullable
    with statistics, ~0.8-1.1 ms declared non-null (no definition levels) without statistics,
    whole chunk per batch; a constant number ~0.5-0.9 ms plain + snappy (1.6 ms as dictionary,
    2 ms delta-encoded); a constant string 1.7 ms as a one-entry dictionary (5-11 ms plain).
    Min/max statistics (for readers' row-group filters) only on ``stats_columns``, the grid's index
    and knobs, which a chunk's row range bounds: a metric's or a constant's range rarely lets a
    reader skip a chunk of a grid."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    strings = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    return pq.ParquetWriter(path, schema, compression="snappy", use_dictionary=strings or False,
                            write_statistics=[c for c in stats_columns if c in schema.names],
                            write_batch_size=1 << 20)


def _with_constants(table, constants: dict, _cache={}):
    """The table with one column per constant: numbers by ``pa.repeat``, strings as a one-entry
    dictionary (see ``_rows_writer``; they read back as pandas categoricals), declared non-null
    unless the value is None (no definition levels to encode: a quarter of the writer's time). The
    columns are built once per row count and reused: every full chunk has the same number of rows."""
    import pyarrow as pa

    def column(v, n):
        if isinstance(v, str):
            return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([v]))
        if isinstance(v, int) and not isinstance(v, bool):  # pa.repeat of an int: ~8 ms per 262,144 rows
            return pa.array(np.full(n, v, np.int64))
        return pa.repeat(v, n)
    key = (table.num_rows, tuple(constants), tuple(map(repr, constants.values())))
    if key not in _cache:
        _cache.clear()
        _cache[key] = [column(v, table.num_rows) for v in constants.values()]
    fields = [*table.schema, *(pa.field(k, c.type, nullable=v is None)
                               for (k, v), c in zip(constants.items(), _cache[key]))]
    return pa.Table.from_arrays([*table.columns, *_cache[key]], schema=pa.schema(fields))


def _progress(n_chunks: int, n_points: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=n_points, unit="pt", unit_scale=True, disable=not enabled or n_chunks <= 1,
                desc="sweep", mininterval=0.5)


