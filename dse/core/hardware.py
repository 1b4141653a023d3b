"""Hardware pytree: the resources a roofline needs, all numeric leaves in SI units.

Two optional shape terms (measured by ``task=validate``; neutral by default): a matmul on T > 1
rows reaches ``flops_efficiency · T / (T + gemm_half_tokens)`` of the peak (small-batch GEMMs
under-fill the machine; one row is a matrix-vector product, a streaming kernel without the
penalty; the attention products count the queries sharing one KV head as rows), and attention's
batched GEMMs, with a d_head-sized dimension, reach ``attn_efficiency`` of that FLOP/s.

Peaks are dense (no structured sparsity) FLOP/s per operand precision; 0 means the device has no
such unit, and an operation at that precision then runs on the next wider unit that exists
(a V100 has no int8 tensor cores: W8A8 runs at its fp16 peak). ``bf16`` and ``fp16`` share
one entry (``fp16``): every catalog device has equal dense peaks for both.

Roofline and efficiency: Williams, Waterman and Patterson, "Roofline", CACM 2009; the
efficiency and per-kernel-overhead defaults are calibrated in ``conf/hardware`` (see there).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from dse.core.design import Array, _check, _fail, float_leaves, _fmt

#: precisions with a peak entry, and their operand width in bits (fp8 and int8 are both 8 bits;
#: an 8-bit operation runs at the faster of the two).
PRECISION_BITS = {"int4": 4.0, "fp8": 8.0, "int8": 8.0, "fp16": 16.0, "fp32": 32.0}


@dataclass(frozen=True)
class Hardware:
    """One accelerator (per device; tensor parallelism multiplies devices, not these numbers)."""

    mem_bw: Array  # bytes/s, DRAM/HBM bandwidth
    mem_capacity: Array  # bytes
    peak_fp32: Array  # FLOP/s, dense
    peak_fp16: Array  # FLOP/s, dense, bf16 == fp16
    peak_fp8: Array = 0.0
    peak_int8: Array = 0.0
    peak_int4: Array = 0.0
    link_bw: Array = 0.0  # bytes/s per device, one direction, for collectives
    link_latency: Array = 0.0  # s per collective step
    flops_efficiency: Array = 1.0  # achieved / peak FLOP/s of a matmul-heavy kernel
    mem_efficiency: Array = 1.0  # achieved / peak bandwidth of a streaming kernel
    kernel_overhead_s: Array = 0.0  # fixed cost per kernel launch
    gemm_half_tokens: Array = 0.0  # matmuls on T > 1 rows reach flops_efficiency·T/(T + this); 0: no effect
    attn_efficiency: Array = 1.0  # attention GEMMs' achieved fraction of the matmul FLOP/s (not of bandwidth)
    # --- interconnect (dse.core.interconnect): a node of node_size devices on the fast link above
    # (NVLink/NVSwitch, Infinity Fabric, ICI), nodes joined by a network of net_bw per device
    node_size: Array = 8.0  # devices per node on the fast link
    link_hop_latency: Array = 0.0  # s per sequential step of a collective on the intra-node link
    net_bw: Array = 0.0  # bytes/s per device, one direction, between nodes (its NIC); 0: no network
    net_latency: Array = 0.0  # s per sequential step of a collective across the network
    # --- energy and cost (dse.core.serving): per device
    power_idle_w: Array = 0.0  # W while idle (pipeline bubbles, a waiting pool)
    power_busy_w: Array = 0.0  # W while running (the board power limit, TDP)
    usd_per_hour: Array = 0.0  # price of one device-hour (rental)
    # --- the serving engine's own costs (fitted per engine by dse.measure.calibrate; see conf/hardware)
    step_overhead_s: Array = 0.0  # s per forward step (prefill, each decode step): host scheduling, sampling, sync
    mem_reserve_bytes: Array = 0.0  # bytes held besides weights, KV cache, activations (CUDA context, workspaces)
    act_buffer_factor: Array = 0.0  # activation buffers the engine preallocates, in multiples of the peak activation
    # vector ops per weight element to convert quantized weights to the activations' precision before a
    # matmul (weight-only quantization: unpack, subtract the zero point, scale), run at the fp32 (vector) peak
    # and not hidden behind the weights' memory traffic (dse.core.roofline.op_time)
    dequant_ops_per_weight: Array = 0.0


#: every numeric field of Hardware, in order (all are pytree leaves)
HARDWARE_FIELDS = (
    "mem_bw", "mem_capacity", "peak_fp32", "peak_fp16", "peak_fp8", "peak_int8", "peak_int4",
    "link_bw", "link_latency", "flops_efficiency", "mem_efficiency", "kernel_overhead_s", "gemm_half_tokens",
    "attn_efficiency", "node_size", "link_hop_latency", "net_bw", "net_latency", "power_idle_w", "power_busy_w",
    "usd_per_hour", "step_overhead_s", "mem_reserve_bytes", "act_buffer_factor", "dequant_ops_per_weight")
#: the engine's own costs (optional keys of the hardware config; 0 by default)
ENGINE_FIELDS = ("step_overhead_s", "mem_reserve_bytes", "act_buffer_factor", "dequant_ops_per_weight")
#: the interconnect, energy and price fields (optional keys of the hardware config)
SYSTEM_FIELDS = ("node_size", "link_hop_latency", "net_bw", "net_latency", "power_idle_w", "power_busy_w",
                 "usd_per_hour")

Hardware = jax.tree_util.register_dataclass(float_leaves(Hardware, list(HARDWARE_FIELDS)),  # ints become floats
                                            data_fields=list(HARDWARE_FIELDS), meta_fields=[])


def make_hardware(*, mem_bw, mem_capacity, peak_flops: dict, link_bw=0.0, link_latency=0.0,
                  flops_efficiency=1.0, mem_efficiency=1.0, kernel_overhead_s=0.0, gemm_half_tokens=0.0,
                  attn_efficiency=1.0, **system) -> Hardware:
    """Hardware from the config schema: ``peak_flops`` maps fp32, bf16, fp16, fp8, int8, int4 → FLOP/s.

    ``system``: any of SYSTEM_FIELDS (interconnect levels, power, price); absent ones keep their defaults.
    """
    for key in system:
        if key not in SYSTEM_FIELDS + ENGINE_FIELDS:
            _fail(f"hardware.{key}", system[key], f"unknown hardware field; known: {sorted(SYSTEM_FIELDS + ENGINE_FIELDS)}")
    known = {"fp32", "bf16", "fp16", "fp8", "int8", "int4"}
    for key in peak_flops:
        if key not in known:
            _fail(f"hardware.peak_flops.{key}", peak_flops[key], f"unknown precision; use one of {sorted(known)}")
    p = {k: float(v or 0.0) for k, v in peak_flops.items()}
    fp16 = max(p.get("fp16", 0.0), p.get("bf16", 0.0))
    return Hardware(mem_bw=float(mem_bw), mem_capacity=float(mem_capacity), peak_fp32=p.get("fp32", 0.0),
                    peak_fp16=fp16, peak_fp8=p.get("fp8", 0.0), peak_int8=p.get("int8", 0.0),
                    peak_int4=p.get("int4", 0.0), link_bw=float(link_bw), link_latency=float(link_latency),
                    flops_efficiency=float(flops_efficiency), mem_efficiency=float(mem_efficiency),
                    kernel_overhead_s=float(kernel_overhead_s), gemm_half_tokens=float(gemm_half_tokens),
                    attn_efficiency=float(attn_efficiency), **{k: float(v) for k, v in system.items()})


def ideal(hw: Hardware) -> Hardware:
    """The same device on the ideal roofline: efficiency 1, no per-kernel or per-step overhead."""
    return Hardware(**{**hw.__dict__, "flops_efficiency": 1.0, "mem_efficiency": 1.0, "kernel_overhead_s": 0.0,
                       "gemm_half_tokens": 0.0, "attn_efficiency": 1.0, "step_overhead_s": 0.0})


def validate_hardware(hw: Hardware, prefix: str = "hardware.") -> Hardware:
    """Check a concrete Hardware; raise DesignError naming the field, the value and the rule."""
    pos = lambda x: np.isfinite(x) & (x > 0)  # noqa: E731
    nonneg = lambda x: np.isfinite(x) & (x >= 0)  # noqa: E731
    _check(prefix + "mem_bw", hw.mem_bw, pos, "must be a positive bandwidth in bytes/s")
    _check(prefix + "mem_capacity", hw.mem_capacity, pos, "must be a positive capacity in bytes")
    for name in ("fp32", "fp16", "fp8", "int8", "int4"):
        _check(f"{prefix}peak_flops.{name}", getattr(hw, "peak_" + name), nonneg,
               "must be a non-negative FLOP/s (0: the device has no such unit)")
    if not (np.asarray(hw.peak_fp16) > 0).all() and not (np.asarray(hw.peak_fp32) > 0).all():
        _fail(prefix + "peak_flops", 0, "needs a positive fp16/bf16 or fp32 peak")
    _check(prefix + "link_bw", hw.link_bw, nonneg, "must be a non-negative bandwidth in bytes/s")
    _check(prefix + "link_latency", hw.link_latency, nonneg, "must be a non-negative time in s")
    _check(prefix + "gemm_half_tokens", hw.gemm_half_tokens, nonneg, "must be a non-negative number of tokens")
    for name in ("flops_efficiency", "mem_efficiency", "attn_efficiency"):
        _check(prefix + name, getattr(hw, name), lambda x: np.isfinite(x) & (x > 0) & (x <= 1),
               "must be in (0, 1]")
    _check(prefix + "kernel_overhead_s", hw.kernel_overhead_s, nonneg, "must be a non-negative time in s")
    _check(prefix + "node_size", hw.node_size, lambda x: (x >= 1) & (x == np.round(x)),
           "must be a positive integer (devices per node on the fast link)")
    for name in ("link_hop_latency", "net_latency"):
        _check(prefix + name, getattr(hw, name), nonneg, "must be a non-negative time in s")
    _check(prefix + "net_bw", hw.net_bw, nonneg, "must be a non-negative bandwidth in bytes/s (0: no network)")
    for name in ("power_idle_w", "power_busy_w"):
        _check(prefix + name, getattr(hw, name), nonneg, "must be a non-negative power in W")
    if (np.asarray(hw.power_idle_w) > np.asarray(hw.power_busy_w)).any():
        _fail(prefix + "power_idle_w", hw.power_idle_w, f"must not exceed hardware.power_busy_w={_fmt(hw.power_busy_w)}")
    _check(prefix + "usd_per_hour", hw.usd_per_hour, nonneg, "must be a non-negative price in USD per device-hour")
    _check(prefix + "step_overhead_s", hw.step_overhead_s, nonneg, "must be a non-negative time in s")
    _check(prefix + "mem_reserve_bytes", hw.mem_reserve_bytes, nonneg, "must be a non-negative size in bytes")
    _check(prefix + "act_buffer_factor", hw.act_buffer_factor, nonneg,
           "must be a non-negative multiple of the peak activation")
    _check(prefix + "dequant_ops_per_weight", hw.dequant_ops_per_weight, nonneg,
           "must be a non-negative number of vector ops per weight element")
    return hw
