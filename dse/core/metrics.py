"""``evaluate``: the flat metrics of one design on one hardware (the ``result.json`` keys).

Phases: ``prefill`` (the prompt in one step; for an encoder, its one forward pass), ``decode``
(one step right after the prompt: KV length = prompt), and the generation of ``gen_len`` tokens
by ``gen_len`` decode steps at KV lengths ``prompt … prompt+gen_len−1``. Every op's FLOPs and
bytes are affine in the KV length, so the generation is summed exactly in closed form (the sum
of a max of two affine sequences splits at their crossing); ``smooth=True`` instead integrates the
smooth per-step time with a midpoint rule (exact for affine terms) for gradients.

FLOPs and bytes are totals over the ``tp`` devices; times are wall-clock (devices run in
parallel); memory is per device.
"""
from __future__ import annotations

import jax.numpy as jnp

from dse.core.accuracy import AccuracyParams, accuracy_terms
from dse.core.conventions import DEFAULT, Conventions
from dse.core.design import Arch, Design
from dse.core.hardware import Hardware
from dse.core.ops import KV_DEPENDENT, Op, step_ops
from dse.core.params import param_counts
from dse.core.roofline import OpTime, op_times, smooth_max, uniform_peak_bits

#: quadrature nodes of the smooth generation sum
SMOOTH_NODES = 8


def _sum_max_affine(a0, a1, b0, b1, n):
    """Σ_{i=0}^{n-1} max(a0 + a1·i, b0 + b1·i), exactly."""
    h0, h1 = a0 - b0, a1 - b1
    base = n * b0 + b1 * n * (n - 1) / 2
    safe = jnp.where(h1 == 0, 1.0, h1)
    root = -h0 / safe
    start = jnp.clip(jnp.floor(root) + 1, 0, n)  # h1 > 0: positive from start on
    m_up = n - start
    up = m_up * h0 + h1 * (start + n - 1) * m_up / 2
    m_dn = jnp.clip(jnp.ceil(root), 0, n)  # h1 < 0: positive before m_dn
    dn = m_dn * h0 + h1 * m_dn * (m_dn - 1) / 2
    extra = jnp.where(h1 > 0, up, jnp.where(h1 < 0, dn, n * jnp.maximum(h0, 0.0)))
    return base + extra


def _phase(ops: dict[str, Op], times: dict[str, OpTime], tp) -> dict:
    flops = sum(o.count * o.flops for o in ops.values())
    nbytes = sum(o.count * o.bytes for o in ops.values())
    time = sum(o.count * times[k].time_s for k, o in ops.items())
    mem_bound = sum(o.count * times[k].time_s * (times[k].memory_s > times[k].compute_s)
                    for k, o in ops.items())
    return {"flops": flops * tp, "bytes": nbytes * tp, "time_s": time,
            "memory_bound_frac": mem_bound / jnp.maximum(time, 1e-30)}


def phase_tables(design: Design, hw: Hardware, conv: Conventions = DEFAULT, *, smooth=False):
    """{phase: (ops, times)} for ``prefill`` and ``decode`` (one step after the prompt)."""
    a, q, w = design.arch, design.quant, design.workload
    bits = uniform_peak_bits(q, conv)
    out = {}
    steps = {"prefill": (w.prompt_len, 0.0 * w.prompt_len)}
    if a.causal:
        steps["decode"] = (1.0 + 0.0 * w.prompt_len, w.prompt_len)
    for phase, (n_new, kv_len) in steps.items():
        ops = step_ops(a, q, w.batch, w.tp, n_new, kv_len, conv)
        out[phase] = (ops, op_times(ops, hw, w.tp, conv, peak_bits=bits, smooth=smooth))
    return out


def _generation(design: Design, hw: Hardware, conv: Conventions, first, smooth: bool) -> dict:
    """Exact (or smooth) totals of gen_len decode steps.

    Ops outside KV_DEPENDENT cost the same at every step (n times the first); the attention ops
    are affine in the KV length, so the step at P+1 gives their slope and the sums close exactly.
    """
    a, q, w = design.arch, design.quant, design.workload
    ops0, t0 = first
    n = w.gen_len
    tri = n * (n - 1) / 2
    flops = n * sum(o.count * o.flops for k, o in ops0.items() if k not in KV_DEPENDENT)
    nbytes = n * sum(o.count * o.bytes for k, o in ops0.items() if k not in KV_DEPENDENT)
    time = n * sum(o.count * t0[k].time_s for k, o in ops0.items() if k not in KV_DEPENDENT)
    ops1 = step_ops(a, q, w.batch, w.tp, 1.0, w.prompt_len + 1.0, conv)
    kv_ops = [k for k in ops0 if k in KV_DEPENDENT]
    t1s = op_times({k: ops1[k] for k in kv_ops}, hw, w.tp, conv, peak_bits=uniform_peak_bits(q, conv), smooth=smooth)
    for k in kv_ops:
        o0, o1, t1 = ops0[k], ops1[k], t1s[k]
        flops = flops + o0.count * (n * o0.flops + (o1.flops - o0.flops) * tri)
        nbytes = nbytes + o0.count * (n * o0.bytes + (o1.bytes - o0.bytes) * tri)
        c0, m0, c1, m1 = t0[k].compute_s, t0[k].memory_s, t1.compute_s, t1.memory_s
        if conv.overlap == "sum":
            busy = n * (c0 + m0) + (c1 + m1 - c0 - m0) * tri
            fixed = t0[k].time_s - (c0 + m0)
        elif smooth:
            i = (jnp.arange(SMOOTH_NODES) + 0.5) / SMOOTH_NODES * n - 0.5  # midpoint rule
            busy = n / SMOOTH_NODES * jnp.sum(smooth_max(c0 + (c1 - c0) * i, m0 + (m1 - m0) * i))
            fixed = t0[k].time_s - smooth_max(c0, m0)
        else:
            busy = _sum_max_affine(c0, c1 - c0, m0, m1 - m0, n)
            fixed = t0[k].time_s - jnp.maximum(c0, m0)
        time = time + o0.count * (busy + n * fixed)
    return {"flops": flops * w.tp, "bytes": nbytes * w.tp, "time_s": time}


def evaluate(design: Design, hw: Hardware, conv: Conventions = DEFAULT,
             acc: AccuracyParams | None = None, *, smooth: bool = False) -> dict:
    """All metrics of one design point as a flat dict of scalars (dotted ``result.json`` keys).

    Takes one design point (scalar leaves); ``jax.vmap`` it for many. Pure and traceable: compose
    with ``jax.jit`` (``conv`` and ``smooth`` static), ``jax.vmap`` over any leaves, and
    ``jax.grad`` (use ``smooth=True`` for useful gradients).
    """
    a, q, w = design.arch, design.quant, design.workload
    tables = phase_tables(design, hw, conv, smooth=smooth)
    m: dict = {}
    pre = _phase(*tables["prefill"], w.tp)
    # the engine's fixed cost per forward step (host-side scheduling, sampling, synchronization)
    step = hw.step_overhead_s if conv.efficiency else 0.0
    pre["time_s"] = pre["time_s"] + step
    m.update({f"prefill.{k}": v for k, v in pre.items()})
    zero = 0.0 * w.prompt_len
    if a.causal:
        dec = _phase(*tables["decode"], w.tp)
        gen = _generation(design, hw, conv, tables["decode"], smooth)
        dec["time_s"] = dec["time_s"] + step
        gen["time_s"] = gen["time_s"] + w.gen_len * step
    else:  # an encoder has no decode phase
        dec = {"flops": zero, "bytes": zero, "time_s": zero, "memory_bound_frac": zero}
        gen = {"flops": zero, "bytes": zero, "time_s": zero}
    m.update({f"decode.{k}": v for k, v in dec.items()})
    m.update({f"generate.{k}": v for k, v in gen.items()})
    n_gen = w.gen_len if a.causal else zero
    m["ttft_s"] = pre["time_s"]
    m["tpot_s"] = jnp.where(n_gen > 0, gen["time_s"] / jnp.maximum(n_gen, 1.0), dec["time_s"])
    m["e2e_s"] = pre["time_s"] + gen["time_s"]
    m["tokens_per_s"] = w.batch * n_gen / m["e2e_s"]
    m["decode_tokens_per_s"] = jnp.where(a.causal, w.batch / jnp.maximum(m["tpot_s"], 1e-30), zero)
    total_flops, total_bytes = pre["flops"] + gen["flops"], pre["bytes"] + gen["bytes"]
    m["prefill.arithmetic_intensity"] = pre["flops"] / pre["bytes"]
    m["decode.arithmetic_intensity"] = dec["flops"] / jnp.maximum(dec["bytes"], 1e-30)
    m["arithmetic_intensity"] = total_flops / total_bytes

    counts = param_counts(a)
    m["params"], m["params_non_embedding"] = counts["params"], counts["params_non_embedding"]
    vec = 1.0 if conv.vector_weights else 0.0
    weight_bytes = (counts["matrix_params"] + counts["embedding_params"]) * q.w_bits / 8
    vector_bytes = counts["vector_params"] * q.a_bits / 8 * vec
    m["weight_bytes"] = weight_bytes + vector_bytes
    hkv_dev = jnp.maximum(a.n_kv_heads / w.tp, 1.0)
    context = w.prompt_len + n_gen
    kv_dev = 2 * a.n_layers * w.batch * context * hkv_dev * a.d_head * q.kv_bits / 8 if a.causal else zero
    kv_all = 2 * a.n_layers * w.batch * context * a.n_kv_heads * a.d_head * q.kv_bits / 8
    m["kv_cache_bytes"] = kv_all if a.causal else zero  # the cache's size, replicas not counted
    pre_ops = tables["prefill"][0]
    peak_act = 0.0
    for o in pre_ops.values():
        peak_act = jnp.maximum(peak_act, o.act_read + o.act_write)
    m["peak_activation_bytes"] = peak_act
    # the engine's workspace: a fixed reserve and preallocated activation buffers (dse.measure.calibrate)
    m["workspace_bytes"] = hw.mem_reserve_bytes + hw.act_buffer_factor * peak_act
    m["memory_bytes"] = weight_bytes / w.tp + vector_bytes + kv_dev + peak_act + m["workspace_bytes"]
    m["mem_capacity_bytes"] = hw.mem_capacity + zero
    m["fits_memory"] = m["memory_bytes"] <= hw.mem_capacity
    m.update(accuracy_terms(a, q, counts["params"], acc if acc is not None else AccuracyParams()))
    return m
