"""Predicted (cost model on the measured device) vs measured (reference decoder) latency.

The device is measured first, by microbenchmarks only (:mod:`dse.measure.roofline`), at the
shapes the reference model uses; the validation cases are never used to set a number. Two
predictions are reported: ``before`` uses the plain measured roofline (best matmul FLOP/s,
matrix-vector bandwidth, per-call overhead); ``after`` adds the two shape terms of the cost model
(:class:`dse.core.hardware.Hardware`): GEMM efficiency rising with the number of rows, fitted
to a microbenchmark sweep of rows, and the attention kernels' achieved fraction of the roofline.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dse.core.conventions import conventions
from dse.core.design import Design, Quant, Workload, make_arch
from dse.core.hardware import make_hardware
from dse.core.metrics import evaluate
from dse.measure.reference import RefConfig, init_params, time_case
from dse.measure.roofline import (kernel_overhead, matmul_flops, matvec_bandwidth, memory_capacity,
                                 stream_bandwidth, timeit)

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


def measure(cfg: RefConfig, quick: bool = False) -> tuple[dict, dict, list[dict]]:
    """(roofline-only hardware, shape-aware hardware, raw rows), all from microbenchmarks."""
    reps = 3 if quick else 5
    square = matmul_flops(jnp.float32, ((1024, 1024, 1024), (2048, 2048, 2048)), repeats=reps)
    peak = max(r["flops_per_s"] for r in square)
    # weight streaming at decode shapes, in the reference's orientation (x @ W), on a matrix larger
    # than the last-level cache (the model's weights do not fit in it either)
    vecmat = jax.jit(lambda x, w: x @ w)
    w_big = jnp.ones((4096, 8192), jnp.float32)
    t_vm = timeit(vecmat, jnp.ones((1, 4096), jnp.float32), w_big, repeats=reps)
    mv = {"kernel": "vecmat_out_of_cache", "dtype": "float32", "shape": "1x4096x8192", "seconds": t_vm,
          "bytes_per_s": w_big.size * 4 / t_vm}
    del w_big
    mv_big = matvec_bandwidth(4096, 4096 if quick else 8192, repeats=reps)
    stream = stream_bandwidth(128 << 20 if quick else 512 << 20, repeats=reps)
    ovh = kernel_overhead()
    rows_sweep = (8, 16, 32, 64, 128, 256, 512)
    gemm = matmul_flops(jnp.float32, [(m, k, n) for m in rows_sweep for k, n in
                                      ((cfg.d_model, cfg.d_ff), (cfg.d_ff, cfg.d_model), (cfg.d_model, cfg.d_model))],
                        repeats=reps)
    # achieved F(m) = peak·eff·m/(m + half)  ⇔  1/F = 1/(peak·eff) + half/(peak·eff)·(1/m): a line in 1/m
    inv_m = 1.0 / np.asarray([int(r["shape"].split("x")[0]) for r in gemm], float)
    slope, intercept = np.polyfit(inv_m, 1.0 / np.asarray([r["flops_per_s"] for r in gemm]), 1)
    eff = min(1.0, 1.0 / (intercept * peak))
    half = max(0.0, slope / intercept)
    # attention at decode shapes: batched QKᵀ and SV streaming a KV cache
    b, k, hkv, d = 8, 1024, cfg.n_kv_heads, cfg.d_head
    ck = jnp.ones((b, hkv, k, d), jnp.float32)
    q = jnp.ones((b, hkv, cfg.n_heads // hkv, d), jnp.float32)
    qk = jax.jit(lambda q, c: jnp.einsum("bhgd,bhkd->bhgk", q, c))
    sv = jax.jit(lambda a, c: jnp.einsum("bhgk,bhkd->bhgd", a, c))
    t_attn = timeit(qk, q, ck, repeats=reps) + timeit(sv, jnp.ones((b, hkv, cfg.n_heads // hkv, k), jnp.float32), ck, repeats=reps)
    attn_bw = 2 * ck.size * 4 / t_attn
    base = {"name": "measured", "mem_bw": mv["bytes_per_s"], "mem_capacity": memory_capacity(jax.devices()[0]),
            "peak_flops": {"fp32": peak}, "kernel_overhead_s": ovh["seconds"]}
    shaped = {**base, "flops_efficiency": eff, "gemm_half_tokens": half,
              "attn_efficiency": min(1.0, attn_bw / mv["bytes_per_s"])}
    raw = square + gemm + [mv, mv_big, stream, ovh,
                           {"kernel": "attention_qk", "dtype": "float32", "shape": f"{b}x{hkv}x{k}x{d}",
                            "seconds": t_attn, "bytes_per_s": attn_bw}]
    return base, shaped, raw


def predict(cfg: RefConfig, hw_cfg: dict, phase: str, batch: int, length: int, n_kv: int, gated: bool) -> float:
    arch = make_arch(n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, n_kv_heads=n_kv,
                     d_ff=cfg.d_ff if gated else 4 * cfg.d_model, vocab=cfg.vocab, gated_mlp=gated)
    hw = make_hardware(**{k: v for k, v in hw_cfg.items() if k != "name"})
    d = Design(arch, Quant(32, 32, 32), Workload(float(batch), float(length), 1.0, 1.0))
    m = evaluate(d, hw, REFERENCE_CONVENTIONS)
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
        measured = time_case(rc, params[key], phase, batch, length, repeats=3 if quick else 5)
        before = predict(cfg, base, phase, batch, length, n_kv, gated)
        after = predict(cfg, shaped, phase, batch, length, n_kv, gated)
        rows.append({"case": case, "phase": phase, "batch": batch, "length": length, "n_kv_heads": n_kv,
                     "gated_mlp": gated, "predicted_s": after, "measured_s": measured,
                     "error": after / measured - 1, "predicted_before_s": before, "error_before": before / measured - 1})
        progress(f"{case:22s} measured {measured * 1e3:8.2f} ms  predicted {after * 1e3:8.2f} ms "
                 f"({100 * (after / measured - 1):+.0f}%; roofline only {100 * (before / measured - 1):+.0f}%)")
    return pd.DataFrame(rows), shaped, raw
