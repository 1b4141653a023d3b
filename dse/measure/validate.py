"""Predicted (cost model on the measured device) vs measured (reference decoder) latency.

The device is measured first, by microbenchmarks only (:mod:`dse.measure.roofline`), at the
shapes the reference model uses; the validation cases are never used to set a number. Two
predictions are reported: ``before`` uses the plain measured roofline (best matmul FLOP/s, one
matrix-vector product's bandwidth, per-call overhead); ``after`` uses the cost model's shape
terms (:class:`dse.core.hardware.Hardware`), fitted to two microbenchmarks: a chain of matmuls
over many distinct weight matrices of the reference's shapes at 1 … 256 rows (bandwidth as a
decoder streams its weights, and GEMM efficiency rising with rows), and the reference's own
attention kernels alone at shapes of their own (their FLOP/s relative to weight GEMMs).
"""
from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dse.core.conventions import conventions
from dse.core.design import Design, Quant, Workload, make_arch
from dse.core.hardware import Hardware, make_hardware
from dse.core.metrics import evaluate, phase_tables
from dse.core.ops import KV_DEPENDENT, Op
from dse.core.roofline import op_time
from dse.measure import calibrate as cal
from dse.measure.reference import RefConfig, decode_attention, init_params, prefill_attention, time_case
from dse.measure.roofline import (call_overhead, kernel_overhead, matmul_chain, matmul_fixed_cost, matmul_flops,
                                 matvec_bandwidth, memory_capacity, stream_bandwidth, timeit)

#: the reference implementation computes the full masked score matrix and keeps it in memory
REFERENCE_CONVENTIONS = conventions("default", fused_attention=False, causal_halving=False)

#: (case, phase, batch, length, n_kv_heads, gated): memory-bound decode and compute-bound prefill,
#: several batches, contexts and KV-head counts
CASES = [
    ("dec_b1_k256", "decode", 1, 256, 16, True), ("dec_b1_k2048", "decode", 1, 2048, 16, True),
    ("dec_b4_k1024", "decode", 4, 1024, 16, True), ("dec_b8_k1024_gqa4", "decode", 8, 1024, 4, True),
    ("dec_b8_k1024_mqa", "decode", 8, 1024, 1, True), ("dec_b16_k512_gqa4", "decode", 16, 512, 4, True),
    ("dec_b32_k256_mqa", "decode", 32, 256, 1, True), ("dec_b1_k512_plain", "decode", 1, 512, 16, False),
    ("pre_b1_p128", "prefill", 1, 128, 16, True), ("pre_b1_p512", "prefill", 1, 512, 16, True),
    ("pre_b2_p256_gqa4", "prefill", 2, 256, 4, True), ("pre_b1_p1024_mqa", "prefill", 1, 1024, 1, True),
    ("pre_b4_p128_plain", "prefill", 4, 128, 16, False), ("pre_b1_p256_plain", "prefill", 1, 256, 16, False),
]
QUICK = [CASES[0], CASES[3], CASES[8], CASES[10]]


#: attention microbenchmarks (phase, batch, length, n_kv_heads): groups of 1, 4 and 16 query heads
#: per KV head, decode and prefill; shapes of their own, not the validation cases
ATTENTION_SHAPES = [("decode", 2, 1536, 16), ("decode", 4, 768, 4), ("decode", 16, 768, 1),
                    ("prefill", 1, 384, 16), ("prefill", 2, 192, 2)]


def attention_kernels(cfg: RefConfig, phase: str, batch: int, length: int, n_kv: int, repeats: int) -> float:
    """Seconds of the reference's attention alone, over ``cfg.n_layers`` distinct layers' inputs."""
    rc = dataclasses.replace(cfg, n_kv_heads=n_kv)
    g, d, rng = cfg.n_heads // n_kv, cfg.d_head, np.random.default_rng(2)

    def arr(*shape):
        return jnp.asarray(rng.standard_normal(shape, dtype=np.float32), cfg.dtype)

    if phase == "decode":
        q, k, v = arr(batch, n_kv, g, d), arr(batch, n_kv, 1, d), arr(batch, n_kv, 1, d)
        caches = [(arr(batch, n_kv, length, d), arr(batch, n_kv, length, d)) for _ in range(cfg.n_layers)]
        fn = jax.jit(lambda q, k, v, caches: sum(decode_attention(rc, q, k, v, ck, cv)[0, 0, 0, 0] for ck, cv in caches))
        return timeit(fn, q, k, v, caches, repeats=repeats)
    mask = jnp.tril(jnp.ones((length, length), bool))
    sets = [(arr(batch, n_kv, g, length, d), arr(batch, n_kv, length, d), arr(batch, n_kv, length, d))
            for _ in range(cfg.n_layers)]
    fn = jax.jit(lambda sets: sum(prefill_attention(rc, q, k, v, mask)[0, -1, 0] for q, k, v in sets))
    return timeit(fn, sets, repeats=repeats)


def host():
    """Where the cost model runs during validation: the host CPU (small, many tiny ops), leaving the
    accelerator to the measurements; the default device when no CPU backend is loaded."""
    try:
        return jax.default_device(jax.devices("cpu")[0])
    except RuntimeError:
        return contextlib.nullcontext()


def _candidates(hw_cfg: dict, **grids) -> Hardware:
    """``hw_cfg`` as a Hardware whose fields in ``grids`` are arrays: one candidate per element."""
    return dataclasses.replace(_hardware(hw_cfg), **{k: jnp.asarray(v) for k, v in grids.items()})


def _log_fit(model_s, measured_s) -> tuple:
    """Index of the candidate (leading axes of ``model_s``) with least squared log error over the last axis."""
    loss = ((np.log(np.asarray(model_s)) - np.log(np.asarray(measured_s))) ** 2).sum(-1)
    return np.unravel_index(np.argmin(loss), loss.shape)


def fit_gemm(chain: list[dict], hw_cfg: dict, bits: float = 32.0) -> tuple[float, float, float]:
    """(mem_bw, flops_efficiency, gemm_half_tokens) fitted to the matmul chain: the cost model's own
    matmul time (:func:`dse.core.roofline.op_time`) for every candidate on a grid, plus the call's
    ``step_overhead_s``, least squares on log time (every row count weighs the same)."""
    m, F, B, n, t = (np.asarray([r[k] for r in chain], float) for k in ("rows", "flops", "bytes", "matmuls", "seconds"))
    step = hw_cfg.get("step_overhead_s", 0.0)
    t = np.maximum(t - step, 0.05 * t)  # the chain is one jitted call: one step's fixed cost
    busy = np.maximum(t - n * hw_cfg["kernel_overhead_s"], 0.05 * t)
    bw = (B[0] / busy[0]) * np.geomspace(1.0, 4.0, 41)[:, None, None, None]
    eff = np.linspace(0.2, 1.0, 81)[None, :, None, None]
    half = np.geomspace(0.1, 1000.0, 121)[None, None, :, None]
    hw = _candidates(hw_cfg, mem_bw=bw, flops_efficiency=eff, gemm_half_tokens=half)
    op = Op(count=n, flops=F / n, weight_bytes=B / n, act_read=0.0, act_write=0.0, kv_read=0.0, kv_write=0.0,
            comm_bytes=0.0, bits=bits, gemm_rows=m)
    i, j, k = _log_fit(n * op_time(op, hw, 1.0, REFERENCE_CONVENTIONS).time_s, t)
    # the grid's best point starts the shared least-squares fit (dse.measure.calibrate.fit_log), the
    # one fitting path of the CPU microbenchmarks and the published GPU measurements
    x0 = np.array([0.0, cal.to_param(cal.UNIT, eff[0, j, 0, 0], 1.0),
                   cal.to_param(cal.POSITIVE, half[0, 0, k, 0], 1.0)])
    base = dataclasses.replace(_hardware(hw_cfg), mem_bw=float(bw[i, 0, 0, 0]))
    x, _ = cal.fit_log(_gemm_residual, x0, (base, op, jnp.log(jnp.asarray(t))))
    got = _gemm_hardware(x, base)
    return float(got.mem_bw), float(got.flops_efficiency), float(got.gemm_half_tokens)


def _gemm_hardware(x, base: Hardware) -> Hardware:
    return dataclasses.replace(base, mem_bw=base.mem_bw * jnp.exp(x[0]),
                               flops_efficiency=cal.from_param(cal.UNIT, x[1], 1.0),
                               gemm_half_tokens=cal.from_param(cal.POSITIVE, x[2], 1.0))


def _gemm_residual(x, base: Hardware, op: Op, log_t):
    """log(model) − log(measured) of the matmul chain at the parameters ``x`` (cost model's op_time)."""
    return jnp.log(op.count * op_time(op, _gemm_hardware(x, base), 1.0, REFERENCE_CONVENTIONS).time_s) - log_t


def _attention_call_s(design: Design, hw: Hardware, phase: str):
    """The cost model's time of one jitted call of the reference's attention kernels: the call's step
    overhead plus every KV-dependent operator of ``phase`` (launches included)."""
    ops, times = phase_tables(design, hw, REFERENCE_CONVENTIONS)[phase]
    return hw.step_overhead_s + sum(ops[k].count * times[k].time_s for k in ops if k in KV_DEPENDENT)


def _attention_times(cfg: RefConfig, hw_cfg: dict, shapes, factors) -> np.ndarray:
    """:func:`_attention_call_s` per (factor, shape), each factor an attn_efficiency."""
    hw = _candidates(hw_cfg, attn_efficiency=np.asarray(factors)[:, None])
    return np.concatenate([_attention_call_s(_design(cfg, batch, length, n_kv, True), hw, phase)
                           for phase, batch, length, n_kv in shapes], axis=-1)


def _refine_attention(cfg: RefConfig, hw_cfg: dict, shapes, measured, start: float) -> float:
    """attn_efficiency by the shared least-squares fit (dse.measure.calibrate.fit_log), from the grid's best."""
    designs = [(phase, _design(cfg, batch, length, n_kv, True)) for phase, batch, length, n_kv in shapes]
    base = _hardware(hw_cfg)

    def residual(x, base, log_t):
        hw = dataclasses.replace(base, attn_efficiency=cal.from_param(cal.UNIT, x[0], 1.0))
        return jnp.log(jnp.stack([_attention_call_s(d, hw, phase) for phase, d in designs])) - log_t
    x, _ = cal.fit_log(residual, np.array([cal.to_param(cal.UNIT, min(start, 0.999), 1.0)]),
                       (base, jnp.log(jnp.asarray(measured))))
    return float(cal.from_param(cal.UNIT, x[0], 1.0))


def measure(cfg: RefConfig, quick: bool = False) -> tuple[dict, dict, list[dict]]:
    """(roofline-only hardware, shape-aware hardware, raw rows), all from microbenchmarks."""
    reps = 3 if quick else 5
    dev = jax.devices()[0]
    cpu = dev.platform == "cpu"
    # peak, bandwidth and GEMM efficiency are capabilities: the best of many repeats (a burst of load
    # on a shared machine only slows a repeat down); an accelerator needs larger problems to fill it
    sizes = (1024, 2048) if cpu else (2048, 4096, 8192)
    square = matmul_flops(cfg.dtype, tuple((n, n, n) for n in sizes), repeats=3 * reps, best=True)
    peak = max(r["flops_per_s"] for r in square)
    mv = matvec_bandwidth(4096, 4096 if quick else 8192, repeats=reps, dtype=cfg.dtype)
    stream = stream_bandwidth(128 << 20 if quick else 512 << 20, repeats=reps, dtype=cfg.dtype)
    # a jitted call's fixed cost (a step) and each kernel's inside it (on a CPU ~8 µs and ~1 µs here)
    step, ovh = call_overhead(), kernel_overhead()
    base = {"name": "measured", "mem_bw": mv["bytes_per_s"], "mem_capacity": memory_capacity(dev),
            "peak_flops": {cfg.peak_key: peak}, "kernel_overhead_s": ovh["seconds"], "step_overhead_s": step["seconds"]}
    # the reference's weight matrices, streamed as a decoder does, at 1 … 256 tokens
    layer_shapes = ((cfg.d_model, cfg.d_model), (cfg.d_model, cfg.d_ff), (cfg.d_ff, cfg.d_model))
    # several times an accelerator's L2; as many matrices in any precision
    chain_bytes = (128e6 if quick else 256e6) * (1 if cpu else 4) * cfg.bits / 32
    chain = matmul_chain(layer_shapes, rows=(1, 2, 4, 8, 16, 32, 64, 128, 256), min_bytes=chain_bytes,
                         repeats=3 * reps, best=True, dtype=cfg.dtype)
    fixed = matmul_fixed_cost(layer_shapes, min_bytes=chain_bytes, repeats=3 * reps, dtype=cfg.dtype)
    with host():
        bw, eff, half = fit_gemm(chain, base, cfg.bits)
    shaped = {**base, "mem_bw": bw, "flops_efficiency": eff, "gemm_half_tokens": half, "attn_efficiency": 1.0}
    # the attention GEMMs' achieved fraction of the compute roofline: least squares on log time
    # over the attention microbenchmarks (one factor for all shapes)
    shapes = ATTENTION_SHAPES[::2] if quick else ATTENTION_SHAPES
    measured = np.asarray([attention_kernels(cfg, *shape, reps) for shape in shapes])
    factors = np.geomspace(0.05, 1.0, 60)
    with host():
        model = _attention_times(cfg, shaped, shapes, factors)
        (best,) = _log_fit(model, measured)
        shaped["attn_efficiency"] = _refine_attention(cfg, shaped, shapes, measured, float(factors[best]))
    attn = [{"kernel": f"attention_{phase}", "dtype": cfg.dtype, "shape": f"b{batch}_len{length}_kv{n_kv}",
             "seconds": t, "model_s": m} for (phase, batch, length, n_kv), t, m in zip(shapes, measured, model[best])]
    return base, shaped, square + [mv, stream, step, ovh, fixed] + chain + attn


def _design(cfg: RefConfig, batch: int, length: int, n_kv: int, gated: bool) -> Design:
    arch = make_arch(n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, n_kv_heads=n_kv,
                     d_ff=cfg.d_ff if gated else 4 * cfg.d_model, vocab=cfg.vocab, gated_mlp=gated)
    return Design(arch, Quant(cfg.bits, cfg.bits, cfg.bits), Workload(float(batch), float(length), 1.0, 1.0))


def _hardware(hw_cfg: dict):
    return make_hardware(**{k: v for k, v in hw_cfg.items() if k != "name"})


def predict(cfg: RefConfig, hw_cfg: dict, phase: str, batch: int, length: int, n_kv: int, gated: bool) -> float:
    with host():
        m = evaluate(_design(cfg, batch, length, n_kv, gated), _hardware(hw_cfg), REFERENCE_CONVENTIONS)
    return float(m["prefill.time_s"] if phase == "prefill" else m["decode.time_s"])


def run_validation(quick: bool = False, cfg: RefConfig = RefConfig(), progress=print) -> tuple[pd.DataFrame, dict, list]:
    base, shaped, raw = measure(cfg, quick)
    rows = []
    params = {}
    for case, phase, batch, length, n_kv, gated in (QUICK if quick else CASES):
        rc = dataclasses.replace(cfg, n_kv_heads=n_kv, gated=gated, d_ff=cfg.d_ff if gated else 4 * cfg.d_model)
        key = (n_kv, gated)
        if key not in params:
            params = {key: init_params(rc)}  # one model in memory at a time
        measured = time_case(rc, params[key], phase, batch, length, repeats=5)
        before = predict(cfg, base, phase, batch, length, n_kv, gated)
        after = predict(cfg, shaped, phase, batch, length, n_kv, gated)
        rows.append({"case": case, "phase": phase, "batch": batch, "length": length, "n_kv_heads": n_kv,
                     "gated_mlp": gated, "predicted_s": after, "measured_s": measured,
                     "error": after / measured - 1, "predicted_before_s": before, "error_before": before / measured - 1})
        progress(f"{case:22s} measured {measured * 1e3:8.2f} ms  predicted {after * 1e3:8.2f} ms "
                 f"({100 * (after / measured - 1):+.0f}%; roofline only {100 * (before / measured - 1):+.0f}%)")
    return pd.DataFrame(rows), shaped, raw
