"""The device's own roofline, measured with JAX microbenchmarks (whatever device JAX runs on).

- matmul: achieved FLOP/s of ``jnp.dot`` per dtype over square and skinny shapes (2·m·n·k FLOPs);
- streaming bandwidth: ``y = x * a + b`` over arrays much larger than the last-level cache
  (one read and one write per element: the STREAM "scale" kernel, McCalpin 1995);
- matrix-vector at decode shapes: bytes of the matrix / time (weights streamed once per token);
- a chain of matmuls over many distinct weight matrices at a model's shapes, for 1 … 256 rows
  (tokens): out-of-cache weight streaming and the small-batch GEMM efficiency, as inside a model;
- per-call (step) overhead: the time of a jitted call on a tiny input (host dispatch and sync);
- per-kernel overhead: the marginal time of one more kernel inside a jitted program (a chain of
  dependent tiny matmuls, which no compiler fuses): what a model's layers pay per operator;
- a second method: numpy's BLAS on the same machine (matrix-vector bandwidth, matmul FLOP/s).

:mod:`dse.measure.validate` combines them at the shapes of the reference model.

Timing: compile excluded, warm-up, ``block_until_ready``, median of repeats.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def timeit(fn, *args, repeats: int = 7, warmup: int = 2, best: bool = False, min_time: float = 0.1,
           max_repeats: int = 300) -> float:
    """Median (``best``: minimum) wall time of ``fn(*args)`` (already jitted), compilation excluded.

    At least ``repeats`` calls, more while they add up to less than ``min_time`` seconds (up to
    ``max_repeats``): a call of a millisecond on a GPU gets enough samples for a stable median.
    """
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    while len(times) < repeats or (sum(times) < min_time and len(times) < max_repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.min(times) if best else np.median(times))


_dot = jax.jit(jnp.dot)


def matmul_flops(dtype=jnp.float32, shapes=((1024, 1024, 1024), (2048, 2048, 2048), (512, 4096, 4096)),
                 repeats: int = 5, best: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for m, k, n in shapes:
        a = jnp.asarray(rng.standard_normal((m, k)), dtype)
        b = jnp.asarray(rng.standard_normal((k, n)), dtype)
        t = timeit(_dot, a, b, repeats=repeats, best=best)
        out.append({"kernel": "matmul", "dtype": jnp.dtype(dtype).name, "shape": f"{m}x{k}x{n}", "seconds": t,
                    "flops_per_s": 2.0 * m * n * k / t})
    return out


_scale = jax.jit(lambda x: x * 1.0001 + 0.5, donate_argnums=0)  # in place: no fresh pages to fault in


def stream_bandwidth(n_bytes: int = 512 << 20, repeats: int = 7, dtype=jnp.float32) -> dict:
    size = jnp.dtype(dtype).itemsize
    x = jnp.ones(n_bytes // size, dtype)
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        x = jax.block_until_ready(_scale(x))
        if i >= 2:
            times.append(time.perf_counter() - t)
    t = float(np.median(times))
    return {"kernel": "stream_scale", "dtype": x.dtype.name, "shape": str(x.size), "seconds": t,
            "bytes_per_s": 2.0 * x.size * size / t}


def matvec_bandwidth(rows: int = 8192, cols: int = 8192, batch: int = 1, repeats: int = 7, dtype=jnp.float32) -> dict:
    w = jnp.ones((rows, cols), dtype)
    v = jnp.ones((cols, batch), dtype)
    t = timeit(_dot, w, v, repeats=repeats)
    return {"kernel": "matvec", "dtype": w.dtype.name, "shape": f"{rows}x{cols}x{batch}", "seconds": t,
            "bytes_per_s": w.size * w.dtype.itemsize / t}


def matmul_chain(shapes, rows=(1, 2, 4, 8, 16, 32, 64, 128, 256), min_bytes: float = 256e6,
                 repeats: int = 5, best: bool = False, dtype=jnp.float32) -> list[dict]:
    """``x @ W`` over distinct matrices of ``shapes`` (k, n) in ``dtype``, cycled until ``min_bytes``.

    One jitted program of many matmuls, like a decoder's layers: the weights are streamed from
    memory (the set is much larger than the last-level cache) and every matmul pays its launch
    as it would inside a model. Per row count m: time, FLOPs 2·m·Σkn, weight bytes (element size)·Σkn.
    """
    size = jnp.dtype(dtype).itemsize
    per_set = sum(k * n for k, n in shapes) * size
    n_sets = max(1, int(np.ceil(min_bytes / per_set)))
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.standard_normal((k, n), dtype=np.float32), dtype) for _ in range(n_sets) for k, n in shapes]
    weight_bytes = float(n_sets * per_set)

    @jax.jit
    def chain(xs, ws):
        return sum((xs[w.shape[0]] @ w)[0, 0] for w in ws)

    out = []
    for m in rows:
        xs = {k: jnp.ones((m, k), dtype) for k in {k for k, _ in shapes}}
        t = timeit(chain, xs, ws, repeats=repeats, best=best)
        flops = 2.0 * m * weight_bytes / size
        out.append({"kernel": "matmul_chain", "dtype": jnp.dtype(dtype).name, "shape": f"{m}x{len(ws)}", "rows": m,
                    "matmuls": len(ws), "seconds": t, "flops": flops, "bytes": weight_bytes,
                    "flops_per_s": flops / t, "bytes_per_s": weight_bytes / t})
    return out


def matmul_fixed_cost(shapes, min_bytes: float = 256e6, repeats: int = 5, dtype=jnp.float32) -> dict:
    """Seconds per matmul beyond its bytes and FLOPs: the one-row matmul chain over the same weights
    split into twice as many matrices (each (k, n) as (k, n/2) twice: the same bytes and FLOPs),
    (t_split − t) / (extra matmuls), best of ``repeats``. A diagnostic the fits do not use yet: on an
    H200 in bfloat16 the chain took ~12 µs per matmul at every row count, which the bandwidth fit
    absorbed (README, Validation)."""
    split = [part for k, n in shapes for part in ((k, n // 2), (k, n - n // 2))]
    whole = matmul_chain(shapes, rows=(1,), min_bytes=min_bytes, repeats=repeats, best=True, dtype=dtype)[0]
    halves = matmul_chain(split, rows=(1,), min_bytes=min_bytes, repeats=repeats, best=True, dtype=dtype)[0]
    extra = halves["matmuls"] - whole["matmuls"]
    return {"kernel": "matmul_fixed_cost", "dtype": whole["dtype"], "shape": f"1x{whole['matmuls']}vs{halves['matmuls']}",
            "matmuls": extra, "seconds": max(halves["seconds"] - whole["seconds"], 0.0) / extra}


@jax.jit
def _tiny(x):
    return x + 1.0


def call_overhead(repeats: int = 200) -> dict:
    """Seconds of one jitted call on a tiny input: host dispatch, launch and synchronization (a step's fixed cost)."""
    x = jnp.ones((8,), jnp.float32)
    t = timeit(_tiny, x, repeats=repeats, warmup=20)
    return {"kernel": "tiny_call", "dtype": "float32", "shape": "8", "seconds": t}


def _launch_chain(n: int):
    @jax.jit
    def chain(x, a):
        for _ in range(n):  # dependent 8x8 matmuls: one kernel each, nothing to fuse or overlap
            x = jnp.tanh(x @ a)
        return x
    return chain


def kernel_overhead(n: int = 64, repeats: int = 50) -> dict:
    """Seconds per kernel inside one jitted program: (t(n kernels) − t(1 kernel)) / (n − 1), best of
    ``repeats`` — on a GPU the launch gap between dependent kernels, on a CPU the runtime's cost per op."""
    x, a = jnp.ones((8, 8), jnp.float32), jnp.eye(8, dtype=jnp.float32) * 0.5
    one = timeit(_launch_chain(1), x, a, repeats=repeats, warmup=5, best=True)
    many = timeit(_launch_chain(n), x, a, repeats=repeats, warmup=5, best=True)
    return {"kernel": "kernel_chain", "dtype": "float32", "shape": f"{n}x8x8x8", "seconds": max(many - one, 0.0) / (n - 1)}


def numpy_check(rows: int = 8192, cols: int = 8192, size: int = 2048) -> dict:
    """A second method: numpy's (BLAS) matrix-vector bandwidth and matmul FLOP/s on the same machine."""
    w, v = np.ones((rows, cols), np.float32), np.ones(cols, np.float32)
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    t_mv = timeit(np.dot, w, v, repeats=7, warmup=2)  # block_until_ready passes numpy arrays through
    t_mm = timeit(np.dot, a, a, repeats=5, warmup=2)
    return {"numpy_matvec_bytes_per_s": w.size * 4 / t_mv, "numpy_flops_per_s": 2.0 * size ** 3 / t_mm}


def memory_capacity(dev) -> float:
    """The device's memory in bytes (the allocator's limit on accelerators, physical RAM on a CPU)."""
    stats = getattr(dev, "memory_stats", lambda: None)()
    if stats and stats.get("bytes_limit"):
        return float(stats["bytes_limit"])
    try:
        import os
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16e9
