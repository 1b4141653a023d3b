"""Chunked, vmapped, device-sharded evaluation of a grid, with a streaming Pareto front.

The grid is never materialized: a chunk is a range of flat indices, and each point's knob values
are decoded from its index (mixed radix) inside the jitted function, so host memory holds one
chunk and the running front. Each finished chunk writes its front (and, if kept, its rows) to
``<out>/chunks/``; a rerun into the same directory skips finished chunks (resume), and shards
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
from dse.core.metrics import evaluate
from dse.explore.export import write_parquet, write_text
from dse.explore.pareto import dominated_by, merge_fronts, objective_matrix, pareto_front
from dse.explore.space import Knob, set_knob


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
    valid = is_valid(d)
    if derive_d_head:
        valid = valid & (jnp.mod(d.arch.d_model, d.arch.n_heads) == 0)
    out.update(m)
    out["valid"] = valid
    return out


@partial(jax.jit, static_argnames=("conv", "keys", "derive_d_head", "dtype"))
def eval_indices(indices, values, strides, sizes, design, hw, acc, *, conv, keys, derive_d_head, dtype):
    """Metrics (and knob values, and a ``valid`` mask) of the grid points at ``indices``."""
    return jax.vmap(lambda i: _point(i, values, strides, sizes, design, hw, acc, conv, keys,
                                     derive_d_head, dtype))(indices)


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
    valid: int  # points that satisfy every design rule
    results_files: list[Path]  # per-chunk result files, in order (empty when rows are not kept)
    chunks_resumed: int


def run_sweep(design: Design, hw: Hardware, acc: AccuracyParams, conv: Conventions, grid: Grid, *,
              out_dir: str | os.PathLike, objectives: Sequence[dict], chunk_size: int = 262_144,
              shard: int = 0, num_shards: int = 1, keep_rows: bool = True, fits_only: bool = True,
              derive_d_head: bool = False, dtype: str = "float32", progress: bool = True,
              row_filter: str | None = None) -> SweepResult:
    """Evaluate one shard of ``grid`` chunk by chunk; return its Pareto front (rows of all columns).

    ``row_filter``: a pandas query (column names in backticks when they contain dots) that rows
    must satisfy to be kept, e.g. a parameter budget.
    """
    out = Path(out_dir)
    chunk_dir = out / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    keys = tuple(k.key for k in grid.knobs)
    fp = grid.fingerprint(repr((conv, dtype, derive_d_head, row_filter, jax.tree.map(float, (design, hw, acc)))))
    manifest = chunk_dir / f"manifest-{shard}-of-{num_shards}.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") != fp:
        for f in chunk_dir.glob(f"*-{shard}-of-{num_shards}-*.parquet"):
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
    front, files, n_valid, resumed = pd.DataFrame(), [], 0, 0  # the running front of the shard
    bar = _progress(len(starts), hi - lo, progress)
    for c, start in enumerate(starts):
        tag = f"{shard}-of-{num_shards}-{c:06d}"
        front_file, rows_file = chunk_dir / f"front-{tag}.parquet", chunk_dir / f"rows-{tag}.parquet"
        if front_file.exists() and (rows_file.exists() or not keep_rows):
            front_c = pd.read_parquet(front_file)
            n_valid += int(json.loads((chunk_dir / f"count-{tag}.json").read_text())["valid"])
            resumed += 1
        else:
            idx = np.arange(start, start + chunk, dtype=np.int64)
            res = eval_indices(_shard_over_devices(jnp.asarray(idx)), values, strides, sizes, design, hw, acc,
                               conv=conv, keys=keys, derive_d_head=derive_d_head, dtype=jnp.dtype(dtype))
            valid = res.pop("valid") & (jnp.asarray(idx) < hi)
            prefilter = not keep_rows and not row_filter and len(front) > 0
            if prefilter:
                # Rows dominated by a point of the front so far cannot join it: drop them on the device,
                # checking against an evenly spread sample of the front (any subset is a valid witness).
                n_chunk_valid = int(valid.sum())
                seed = objective_matrix(front, objectives)
                seed = seed[np.linspace(0, len(seed) - 1, min(len(seed), SEED_ROWS)).astype(int)]
                cand = valid & ~dominated_by(objective_matrix(res, objectives, jnp), seed)
                if fits_only:
                    cand = cand & res["fits_memory"]
                take = np.asarray(cand)
            else:
                take = np.asarray(valid)
            df = pd.DataFrame({k: np.asarray(v)[take] for k, v in res.items()})
            df.insert(0, "grid_index", idx[take])
            if row_filter:
                df = df.query(row_filter).reset_index(drop=True)
            if not prefilter:
                n_chunk_valid = len(df)
            front_c = pareto_front(df, objectives, fits_only=fits_only)
            if keep_rows:
                write_parquet(rows_file, df)
            write_text(chunk_dir / f"count-{tag}.json", json.dumps({"valid": n_chunk_valid}))
            write_parquet(front_file, front_c)
            n_valid += n_chunk_valid
        if keep_rows:
            files.append(rows_file)
        front = merge_fronts(front, front_c, objectives)
        bar.update(min(chunk, hi - start))
    bar.close()
    return SweepResult(front, hi - lo, n_valid, files, resumed)


def _progress(n_chunks: int, n_points: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=n_points, unit="pt", unit_scale=True, disable=not enabled or n_chunks <= 1,
                desc="sweep", mininterval=0.5)


