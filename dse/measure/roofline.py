"""The device's own roofline, measured with JAX microbenchmarks (whatever device JAX runs on).

- matmul: achieved FLOP/s of ``jnp.dot`` per dtype over square and skinny shapes (2·m·n·k FLOPs);
- streaming bandwidth: ``y = x * a + b`` over arrays much larger than the last-level cache
  (one read and one write per element: the STREAM "scale" kernel, McCalpin 1995);
- matrix-vector at decode shapes: bytes of the matrix / time (weights streamed once per token);
- per-kernel overhead: the time of a jitted call on a tiny input (dispatch and launch).

Timing: compile excluded, warm-up, ``block_until_ready``, median of repeats.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def timeit(fn, *args, repeats: int = 7, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median wall time of ``fn(*args)`` (already jitted), compilation excluded."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


_dot = jax.jit(jnp.dot)


def matmul_flops(dtype=jnp.float32, shapes=((1024, 1024, 1024), (2048, 2048, 2048), (512, 4096, 4096)),
                 repeats: int = 5) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for m, k, n in shapes:
        a = jnp.asarray(rng.standard_normal((m, k)), dtype)
        b = jnp.asarray(rng.standard_normal((k, n)), dtype)
        t = timeit(_dot, a, b, repeats=repeats)
        out.append({"kernel": "matmul", "dtype": jnp.dtype(dtype).name, "shape": f"{m}x{k}x{n}", "seconds": t,
                    "flops_per_s": 2.0 * m * n * k / t})
    return out


_scale = jax.jit(lambda x: x * 1.0001 + 0.5, donate_argnums=0)  # in place: no fresh pages to fault in


def stream_bandwidth(n_bytes: int = 512 << 20, repeats: int = 7) -> dict:
    x = jnp.ones(n_bytes // 4, jnp.float32)
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        x = jax.block_until_ready(_scale(x))
        if i >= 2:
            times.append(time.perf_counter() - t)
    t = float(np.median(times))
    return {"kernel": "stream_scale", "dtype": "float32", "shape": str(x.size), "seconds": t,
            "bytes_per_s": 2.0 * x.size * 4 / t}


def matvec_bandwidth(rows: int = 8192, cols: int = 8192, batch: int = 1, repeats: int = 7) -> dict:
    w = jnp.ones((rows, cols), jnp.float32)
    v = jnp.ones((cols, batch), jnp.float32)
    t = timeit(_dot, w, v, repeats=repeats)
    return {"kernel": "matvec", "dtype": "float32", "shape": f"{rows}x{cols}x{batch}", "seconds": t,
            "bytes_per_s": w.size * 4 / t}


@jax.jit
def _tiny(x):
    return x + 1.0


def kernel_overhead(repeats: int = 200) -> dict:
    x = jnp.ones((8,), jnp.float32)
    t = timeit(_tiny, x, repeats=repeats, warmup=20)
    return {"kernel": "tiny_call", "dtype": "float32", "shape": "8", "seconds": t}


def numpy_check(rows: int = 8192, cols: int = 8192, size: int = 2048) -> dict:
    """A second method: numpy's (BLAS) matrix-vector bandwidth and matmul FLOP/s on the same machine."""
    w, v = np.ones((rows, cols), np.float32), np.ones(cols, np.float32)
    w @ v
    ts = []
    for _ in range(7):
        t = time.perf_counter()
        w @ v
        ts.append(time.perf_counter() - t)
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    a @ a
    tm = []
    for _ in range(3):
        t = time.perf_counter()
        a @ a
        tm.append(time.perf_counter() - t)
    return {"numpy_matvec_bytes_per_s": w.size * 4 / float(np.median(ts)),
            "numpy_flops_per_s": 2.0 * size ** 3 / float(np.median(tm))}


def measure_device(quick: bool = False) -> tuple[dict, list[dict]]:
    """(hardware config dict for conf/hardware, raw measurements)."""
    shapes = ((1024, 1024, 1024), (1024, 4096, 1024)) if quick else \
        ((1024, 1024, 1024), (2048, 2048, 2048), (512, 4096, 4096), (4096, 1024, 4096))
    rows = matmul_flops(jnp.float32, shapes, repeats=3 if quick else 5)
    dev = jax.devices()[0]
    if dev.platform != "cpu":  # 16-bit units exist on accelerators; on a CPU bf16 is emulated
        rows += matmul_flops(jnp.bfloat16, shapes, repeats=3 if quick else 5)
    stream = stream_bandwidth(256 << 20 if quick else 512 << 20)
    mv = matvec_bandwidth(4096 if quick else 8192, 4096 if quick else 8192)
    ovh = kernel_overhead()
    rows += [stream, mv, ovh]
    f32 = max(r["flops_per_s"] for r in rows if r.get("dtype") == "float32" and r["kernel"] == "matmul")
    bf16 = [r["flops_per_s"] for r in rows if r.get("dtype") == "bfloat16"]
    peak16 = max(bf16) if bf16 else 0.0
    # the bandwidth a decode step sees is that of streaming weights through a matrix-vector product
    hw = {"name": "measured", "mem_bw": mv["bytes_per_s"],
          "mem_capacity": _memory_capacity(dev), "peak_flops": {"fp32": f32, "bf16": peak16, "fp16": peak16,
                                                                "fp8": 0.0, "int8": 0.0, "int4": 0.0},
          "link_bw": 0.0, "link_latency": 0.0, "flops_efficiency": 1.0, "mem_efficiency": 1.0,
          "kernel_overhead_s": ovh["seconds"]}
    return hw, rows


def _memory_capacity(dev) -> float:
    stats = getattr(dev, "memory_stats", lambda: None)()
    if stats and stats.get("bytes_limit"):
        return float(stats["bytes_limit"])
    try:
        import os
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16e9
