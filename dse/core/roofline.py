"""Roofline time of each operator, and the smooth surrogates used for gradients.

Per op: ``compute_s = FLOPs / (peak(bits) · flops_efficiency)``, ``memory_s = bytes /
(mem_bw · mem_efficiency)``; ``time_s = max(compute_s, memory_s)`` (perfect overlap, the lower
bound) or their sum (no overlap, the upper bound), plus a fixed per-kernel overhead — Williams
et al. 2009; "How to scale your model" (Austin et al. 2025, roofline chapter) for max vs sum.
Collectives use the two-level interconnect of :mod:`dse.core.interconnect` (a fixed latency α =
``link_latency`` per collective, a latency per sequential step on the node's link and on the
network, and the ring/tree bandwidth terms of NCCL's cost model).

``smooth=True`` replaces every max and every precision step by a smooth function with a
temperature, for gradients; reported figures use ``smooth=False`` (exact).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dse.core import interconnect
from dse.core.conventions import Conventions
from dse.core.hardware import Hardware
from dse.core.ops import Op

#: relative temperature of the smooth max: 0 <= smax(a, b) - max(a, b) <= SMOOTH_TEMP · (a + b) / 2
SMOOTH_TEMP = 0.02
#: width, in bits, of the smooth step between two precisions' peaks
BITS_TEMP = 0.15


class OpTime(NamedTuple):
    """Per occurrence on one device. ``time_s`` = busy + ``comm_s`` + ``overhead_s``, where busy is
    max(compute_s, memory_s) (or their sum with ``overlap: sum``); ``busy_compute_s`` is the part of
    busy attributed to compute (all of it when compute bounds the op; ``compute_s`` under ``sum``),
    the rest of busy is memory time — so compute, memory, collective and overhead add up to ``time_s``."""
    compute_s: object
    memory_s: object
    comm_s: object
    time_s: object  # per occurrence, overhead included
    overhead_s: object = 0.0  # kernel launch overhead (0 for an op that moves and computes nothing)
    busy_compute_s: object = 0.0  # the part of busy time attributed to compute


def smooth_max(a, b, temp=SMOOTH_TEMP):
    """(a + b + sqrt((a−b)² + ε²)) / 2 with ε = temp·(a+b), for a, b >= 0: smooth, >= max, error <= ε/2.

    The square-root form (a "soft absolute value") costs one sqrt, cheaper than log-sum-exp.
    """
    eps = temp * (a + b) + 1e-30
    return 0.5 * (a + b + jnp.sqrt((a - b) ** 2 + eps ** 2))


def peak_flops(hw: Hardware, bits, *, smooth: bool = False):
    """FLOP/s of an op whose operands are ``bits`` wide: the narrowest unit at least that wide.

    Units that do not exist (peak 0) are skipped; in smooth mode the steps at 4, 8 and 16 bits
    become sigmoids of width BITS_TEMP in bits, so d(time)/d(bits) is defined everywhere.
    """
    peak = jnp.where(hw.peak_fp32 > 0, hw.peak_fp32, hw.peak_fp16)
    p8 = jnp.maximum(hw.peak_fp8, hw.peak_int8)
    for width, p in ((16.0, hw.peak_fp16), (8.0, p8), (4.0, hw.peak_int4)):
        if smooth:
            s = jax.nn.sigmoid((width + 0.5 - bits) / BITS_TEMP) * (p > 0)
            peak = jnp.exp(s * jnp.log(jnp.maximum(p, 1.0)) + (1 - s) * jnp.log(peak))
        else:
            peak = jnp.where((bits <= width) & (p > 0), p, peak)
    return peak


def op_times(ops: dict[str, Op], hw: Hardware, tp, conv: Conventions, *, peak_bits=None,
             smooth: bool = False) -> dict[str, OpTime]:
    """Roofline times of a whole op table; each distinct operand precision's peak is computed once."""
    peaks: dict[int, object] = {}
    out = {}
    for name, op in ops.items():
        bits = op.bits if peak_bits is None else peak_bits
        if id(bits) not in peaks:
            peaks[id(bits)] = peak_flops(hw, bits, smooth=smooth)
        out[name] = op_time(op, hw, tp, conv, peak=peaks[id(bits)], smooth=smooth)
    return out


def op_time(op: Op, hw: Hardware, tp, conv: Conventions, *, peak=None, smooth: bool = False) -> OpTime:
    """Roofline time of one occurrence of ``op`` on one device (``peak``: FLOP/s, else from op.bits)."""
    eff_f = hw.flops_efficiency if conv.efficiency else 1.0
    eff_m = hw.mem_efficiency if conv.efficiency else 1.0
    overhead = hw.kernel_overhead_s if conv.efficiency else 0.0
    if conv.efficiency:
        rows = op.gemm_rows
        # one row is a matrix-vector product (BLAS level 2: a streaming kernel), not an under-filled GEMM
        eff_f = eff_f * jnp.where(rows > 1, rows / jnp.maximum(rows + hw.gemm_half_tokens, 1e-30), 1.0)
        # attention's batched GEMMs have a d_head-sized dimension: a lower FLOP/s than weight GEMMs;
        # streaming the KV cache is ordinary memory traffic
        eff_f = eff_f * jnp.where(op.attention > 0, hw.attn_efficiency, 1.0)
    peak = peak_flops(hw, op.bits, smooth=smooth) if peak is None else peak
    compute = op.flops / (peak * eff_f) * op.load  # load: the busiest device's share (expert imbalance)
    # weight-only quantization: each weight is unpacked on the vector units before the multiply, in the
    # kernel's load path (not overlapped with the weights' streaming; engine term, 0 unless calibrated)
    vector_peak = jnp.where(hw.peak_fp32 > 0, hw.peak_fp32, hw.peak_fp16)
    dequant = op.dequant * hw.dequant_ops_per_weight / vector_peak if conv.efficiency else 0.0
    memory = op.bytes / (hw.mem_bw * eff_m)
    comm = collective_time(op, hw)
    if conv.overlap == "sum":
        busy = compute + memory
        busy_compute = compute
    else:
        busy = smooth_max(compute, memory) if smooth else jnp.maximum(compute, memory)
        busy_compute = jnp.where(compute > memory, busy, 0.0)
    busy, busy_compute = busy + dequant, busy_compute + dequant
    launched = jnp.where(op.flops + op.bytes > 0, 1.0, 0.0)
    return OpTime(compute, memory, comm, busy + comm + launched * overhead, launched * overhead, busy_compute)


def collective_time(op: Op, hw: Hardware):
    """Time of one occurrence of ``op``'s collective over ``op.comm_group`` devices (0 if none).

    The two-level interconnect model of :mod:`dse.core.interconnect` (node of ``node_size`` devices
    on the fast link, a network between nodes; NCCL's ring/tree step counts).
    """
    if isinstance(op.comm_bytes, (int, float)) and op.comm_bytes == 0:  # not a collective: skip it at trace time
        return 0.0
    return jnp.where(op.comm_bytes > 0, interconnect.collective_time(op.comm_bytes, op.comm_group, op.comm_kind, hw), 0.0)


def uniform_peak_bits(quant, conv: Conventions):
    """LLM-Viewer's rule: every op at the int8 peak iff w, a and kv bits are all <= 8, else fp16."""
    if conv.peak_rule == "operands":
        return None
    widest = jnp.maximum(jnp.maximum(quant.w_bits, quant.a_bits), quant.kv_bits)
    return jnp.where(widest <= 8, 8.0, 16.0)
