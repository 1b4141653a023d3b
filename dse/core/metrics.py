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

import importlib.util
import os

import jax
import jax.numpy as jnp

from dse.core.accuracy import AccuracyParams, accuracy_terms
from dse.core.conventions import DEFAULT, Conventions
from dse.core.design import Design, uses
from dse.core.hardware import Hardware
from dse.core.ops import KV_DEPENDENT, Op, step_ops
from dse.core.attention import kv_cache_elements, local_pick
from dse.core.mlp import expected_experts
from dse.core.params import has_local, param_counts
from dse.core.pipeline import deployment_metrics, pipelined, prefill_microbatches
from dse.core.roofline import OpTime, op_times, smooth_max, uniform_peak_bits

#: quadrature nodes of the smooth generation sum
SMOOTH_NODES = 8
#: points per vmapped batch when a CPU evaluates many points (``map_points``): the ~200 fused kernels
#: of one evaluation then pass cache-resident intermediates; one vmap over 2^18 points streams
#: every intermediate through DRAM and ran ~7x slower on a 2-core CPU (measured with dse.bench)
CPU_BATCH = 4096


def _cpu_only() -> bool:
    """Whether JAX can only run on the CPU here (``JAX_PLATFORMS=cpu``, or no accelerator plugin
    installed), found without starting a backend (this runs at import)."""
    platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
    if platforms:
        return platforms.strip().lower() == "cpu"
    return not any(importlib.util.find_spec(m) for m in ("jax_plugins", "jax_cuda12_plugin", "libtpu"))


#: XLA options for compiling the cost model over many points (``jax.jit(..., compiler_options=...)``):
#: LLVM may reassociate and contract (FMA) float arithmetic — NaN, inf, division and math functions
#: stay IEEE — and use 512-bit vectors where the CPU has them (ignored where it has not). CPU-only
#: installs only: the options are XLA CPU's, not an accelerator's. Results move only in the last bits.
#: Measured with ``python -m dse.bench --only moe`` on the project's 2-core Xeon (AVX-512): 3.0 -> 7.5 M
#: points/s (README, Benchmarks).
COMPILER_OPTIONS = {"xla_cpu_enable_fast_math": True, "xla_cpu_fast_math_honor_nans": True,
                    "xla_cpu_fast_math_honor_infs": True, "xla_cpu_fast_math_honor_division": True,
                    "xla_cpu_fast_math_honor_functions": True,
                    "xla_cpu_prefer_vector_width": 512} if _cpu_only() else {}


def map_points(fn, xs, batch_size: int | None = None):
    """``fn`` over the leading axis of the pytree ``xs``: one vmap on accelerators; on a CPU a
    sequential loop (``lax.map``) over vmapped batches of ``CPU_BATCH`` points."""
    if batch_size is None:
        batch_size = CPU_BATCH if jax.default_backend() == "cpu" else 0
    if not batch_size:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=batch_size)


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


#: the parts a phase's time splits into (issue 16): they add up to ``time_s``
TIME_PARTS = ("time_compute_s", "time_memory_s", "time_collective_s", "time_overhead_s")


def _phase(ops: dict[str, Op], times: dict[str, OpTime], tp) -> dict:
    """FLOPs and bytes (all devices), time, and the time's attribution: each op's busy time to compute
    or memory (whichever bounds it; both shares under ``overlap: sum``), its collective, and its
    launch overhead (roofline.OpTime) — they add up to ``time_s``. ``memory_bound_frac`` is the
    memory part's share of the time (launch overheads and collective latencies are not memory)."""
    flops = sum(o.count * o.flops for o in ops.values())
    nbytes = sum(o.count * o.bytes for o in ops.values())
    time = sum(o.count * times[k].time_s for k, o in ops.items())
    comm = sum(o.count * times[k].comm_s for k, o in ops.items())
    overhead = sum(o.count * times[k].overhead_s for k, o in ops.items())
    compute = sum(o.count * times[k].busy_compute_s for k, o in ops.items())
    memory = time - comm - overhead - compute
    return {"flops": flops * tp, "bytes": nbytes * tp, "time_s": time,
            "memory_bound_frac": memory / jnp.maximum(time, 1e-30),
            "time_compute_s": compute, "time_memory_s": memory, "time_collective_s": comm, "time_overhead_s": overhead}


def _attribute(phase: dict, mb_time, step) -> dict:
    """The time parts of a phase after pipelining (``mb_time``: the one-micro-batch table's time) and
    the engine's step overhead ``step``: the pipelined time (bubbles and stage sends included) is
    split in the table's proportions; the step overhead is overhead. Identity at pp = 1."""
    scale = (phase["time_s"] - step) / jnp.maximum(mb_time, 1e-30)
    out = dict(phase)
    for k in TIME_PARTS:
        out[k] = phase[k] * scale
    out["time_overhead_s"] = out["time_overhead_s"] + step
    out["memory_bound_frac"] = out["time_memory_s"] / jnp.maximum(phase["time_s"], 1e-30)
    return out


def phase_tables(design: Design, hw: Hardware, conv: Conventions = DEFAULT, *, smooth=False):
    """{phase: (ops, times)} for ``prefill`` and ``decode`` (one step after the prompt)."""
    a, q, w = design.arch, design.quant, design.workload
    bits = uniform_peak_bits(q, conv)
    out = {}
    steps = {"prefill": (w.prompt_len, 0.0 * w.prompt_len)}
    if a.causal:
        steps["decode"] = (1.0 + 0.0 * w.prompt_len, w.prompt_len)
    for phase, (n_new, kv_len) in steps.items():
        # one micro-batch (dse.core.pipeline); the prefill pass may split the batch differently
        mb = w.batch / (prefill_microbatches(w) if phase == "prefill" else w.microbatches)
        ops = step_ops(a, q, mb, w.tp, n_new, kv_len, conv, ep=w.ep, attn_dp=w.attn_dp)
        out[phase] = (ops, op_times(ops, hw, w.tp, conv, peak_bits=bits, smooth=smooth))
    return out


def _segments(arch, P, n, kind: str):
    """Σ over the decode steps i < n of F(e_i), e_i the entries attended at step i, as segments.

    Returns one or three (start, length, multiplicity) triples: Σ_i F(e_i) = Σ mult · Σ_{j<length} F(start + j).
    Global layers: e_i = P + i. Sliding window W: e_i = min(P + i, W − 1) (an affine run, then a
    constant). Chunked attention C: e_i = (P + i) mod C (a partial chunk, whole chunks, a partial one).
    """
    zero = 0.0 * P
    if kind == "global":
        return [(P, n, 1.0 + zero)]

    def win():
        W = jnp.maximum(arch.window, 1.0)
        b = jnp.clip(W - 1.0 - P, 0.0, n)
        return [(P, b, 1.0 + zero), (W - 1.0 + zero, 1.0 + zero, n - b), (zero, zero, zero)]

    def chunk():
        C = jnp.maximum(arch.attn_chunk, 1.0)
        e0 = P - C * jnp.floor(P / C)
        first = jnp.minimum(C - e0, n)
        full = jnp.floor((n - first) / C)
        return [(e0, first, 1.0 + zero), (zero, C, full), (zero, n - first - full * C, 1.0 + zero)]

    glob = [(P, n, 1.0 + zero), (zero, zero, zero), (zero, zero, zero)]
    ws = win() if uses(arch, "window") else glob  # a left-out kind is never picked (local_pick)
    cs = chunk() if uses(arch, "chunk") else glob
    return [tuple(local_pick(arch, lambda x=x_w: x, lambda x=x_c: x, x_g) for x_w, x_c, x_g in zip(sw, sc, sg))
            for sw, sc, sg in zip(ws, cs, glob)]


def _generation(design: Design, hw: Hardware, conv: Conventions, first, smooth: bool) -> dict:
    """Exact (or smooth) totals of gen_len decode steps.

    Ops outside KV_DEPENDENT cost the same at every step (n times the first). The KV-dependent ops
    are affine in the entries e a step attends (the step at P+1 gives the slope of the global op,
    shared by its local twin), and e runs through at most three affine segments (``_segments``),
    so the sums of their max close exactly, piecewise.
    """
    a, q, w = design.arch, design.quant, design.workload
    ops0, t0 = first
    n, P = w.gen_len, w.prompt_len
    fixed_ops = [k for k in ops0 if k not in KV_DEPENDENT]
    flops = n * sum(ops0[k].count * ops0[k].flops for k in fixed_ops)
    nbytes = n * sum(ops0[k].count * ops0[k].bytes for k in fixed_ops)
    time = n * sum(ops0[k].count * t0[k].time_s for k in fixed_ops)
    batch = w.batch / w.microbatches
    kv_ops = [k for k in ops0 if k in KV_DEPENDENT]
    bits = uniform_peak_bits(q, conv)
    if has_local(a):  # local ops as if global at P: the slopes of the generation sum
        ops_p = step_ops(a, q, batch, w.tp, 1.0, P, conv, ep=w.ep, attn_dp=w.attn_dp, local_as_global=True)
        tp_ = op_times({k: ops_p[k] for k in kv_ops}, hw, w.tp, conv, peak_bits=bits, smooth=smooth)
    else:  # the first decode step's table is that table already (one trace less)
        ops_p, tp_ = ops0, t0
    ops_p1 = step_ops(a, q, batch, w.tp, 1.0, P + 1.0, conv, ep=w.ep, attn_dp=w.attn_dp, local_as_global=True)
    tp1 = op_times({k: ops_p1[k] for k in kv_ops}, hw, w.tp, conv, peak_bits=bits, smooth=smooth)
    for k in kv_ops:
        o, o1, t, t1 = ops_p[k], ops_p1[k], tp_[k], tp1[k]
        c0, m0 = t.compute_s, t.memory_s
        cs, ms = t1.compute_s - c0, t1.memory_s - m0  # slopes per attended entry

        def busy(start, length):
            c, m = c0 + cs * (start - P), m0 + ms * (start - P)
            if conv.overlap == "sum":
                return length * (c + m) + (cs + ms) * length * (length - 1) / 2
            if smooth:
                j = (jnp.arange(SMOOTH_NODES) + 0.5) / SMOOTH_NODES * length - 0.5  # midpoint rule
                return length / SMOOTH_NODES * jnp.sum(smooth_max(c + cs * j, m + ms * j))
            return _sum_max_affine(c, cs, m, ms, length)

        def entries(start, length):  # Σ_j (start + j − P): for the affine flops and bytes
            return length * (start - P) + length * (length - 1) / 2

        segs = _segments(a, P, n, KV_DEPENDENT[k])
        busy_sum = sum(mult * busy(st, ln) for st, ln, mult in segs)
        e_sum = sum(mult * entries(st, ln) for st, ln, mult in segs)
        cnt = ops0[k].count
        flops = flops + cnt * (n * o.flops + (o1.flops - o.flops) * e_sum)
        nbytes = nbytes + cnt * (n * o.bytes + (o1.bytes - o.bytes) * e_sum)
        busy_now = c0 + m0 if conv.overlap == "sum" else (smooth_max(c0, m0) if smooth else jnp.maximum(c0, m0))
        fixed = t.time_s - busy_now  # launch overhead and any collective: the same every step
        time = time + cnt * (busy_sum + n * fixed)
    devices = w.tp * w.attn_dp
    return {"flops": flops * devices, "bytes": nbytes * devices, "time_s": time}


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
    pre = _phase(*tables["prefill"], w.tp * w.attn_dp)
    # no prompt, no prefill: a 0-token step would still read every weight (issue 16: a TTFT was reported)
    pre = {k: jnp.where(w.prompt_len > 0, v, 0.0 * v) for k, v in pre.items()}
    zero = 0.0 * w.prompt_len
    if a.causal:
        dec = _phase(*tables["decode"], w.tp * w.attn_dp)
        gen = _generation(design, hw, conv, tables["decode"], smooth)
    else:  # an encoder has no decode phase
        dec = {"flops": zero, "bytes": zero, "time_s": zero, "memory_bound_frac": zero, **{k: zero for k in TIME_PARTS}}
        gen = {"flops": zero, "bytes": zero, "time_s": zero}
    pre_mb_time, dec_mb_time = pre["time_s"], dec["time_s"]
    # pipeline stages and micro-batches (dse.core.pipeline; identity at pp = microbatches = 1)
    pre, dec, gen = pipelined(design, hw, tables, pre, dec, gen, a.causal)
    # the engine's fixed cost per forward step (host-side scheduling, sampling, synchronization)
    step = hw.step_overhead_s if conv.efficiency else 0.0
    step_pre = jnp.where(w.prompt_len > 0, step, 0.0)  # no prompt, no prefill step (issue 16)
    pre["time_s"] = pre["time_s"] + step_pre
    if a.causal:
        dec["time_s"] = dec["time_s"] + step
        gen["time_s"] = gen["time_s"] + w.gen_len * step
    pre = _attribute(pre, pre_mb_time, step_pre)
    if a.causal:
        dec = _attribute(dec, dec_mb_time, step)
    m.update({f"prefill.{k}": v for k, v in pre.items()})
    m.update({f"decode.{k}": v for k, v in dec.items()})
    m.update({f"generate.{k}": v for k, v in gen.items()})
    n_gen = w.gen_len if a.causal else zero
    m["ttft_s"] = pre["time_s"]
    m["tpot_s"] = jnp.where(n_gen > 0, gen["time_s"] / jnp.maximum(n_gen, 1.0), dec["time_s"])
    m["e2e_s"] = pre["time_s"] + gen["time_s"]
    m["tokens_per_s"] = w.batch * n_gen / m["e2e_s"]
    m["decode_tokens_per_s"] = jnp.where(a.causal, w.batch / jnp.maximum(m["tpot_s"], 1e-30), zero)
    total_flops, total_bytes = pre["flops"] + gen["flops"], pre["bytes"] + gen["bytes"]
    m["prefill.arithmetic_intensity"] = pre["flops"] / jnp.maximum(pre["bytes"], 1e-30)
    m["decode.arithmetic_intensity"] = dec["flops"] / jnp.maximum(dec["bytes"], 1e-30)
    m["arithmetic_intensity"] = total_flops / total_bytes

    counts = param_counts(a)
    for key in ("params", "params_non_embedding", "params_active", "params_active_with_embedding"):
        m[key] = counts[key]
    vec = 1.0 if conv.vector_weights else 0.0
    weight_bytes = (counts["matrix_params"] + counts["embedding_params"]) * q.w_bits / 8
    vector_bytes = counts["vector_params"] * q.a_bits / 8 * vec
    m["weight_bytes"] = weight_bytes + vector_bytes
    # routed experts are split over the whole MoE group (tp·attn_dp devices), the rest over tp
    expert_bytes = counts["expert_params"] * q.w_bits / 8
    weight_dev = (weight_bytes - expert_bytes) / w.tp + expert_bytes / (w.tp * w.attn_dp)
    context = w.prompt_len + n_gen
    kv_dev = (w.batch / w.attn_dp * kv_cache_elements(a, context, w.tp) * q.kv_bits / 8) if a.causal else zero
    kv_all = w.batch * kv_cache_elements(a, context) * q.kv_bits / 8
    m["kv_cache_bytes"] = kv_all if a.causal else zero  # the cache's size, replicas not counted
    m["kv_bytes_per_token"] = m["kv_cache_bytes"] / jnp.maximum(w.batch * context, 1.0)  # mean over the context
    # expert weights one decode step reads (all devices): the distinct experts a batch of tokens touches
    touched = expected_experts(a.n_experts, a.top_k, w.batch) if uses(a, "moe") else 0.0
    m["expert_bytes_per_decode_step"] = expert_bytes * touched / jnp.maximum(a.n_experts, 1.0)
    pre_ops = tables["prefill"][0]
    peak_act = 0.0
    for o in pre_ops.values():
        peak_act = jnp.maximum(peak_act, o.act_read + o.act_write)
    m["peak_activation_bytes"] = peak_act
    # the engine's workspace: a fixed reserve and preallocated activation buffers (dse.measure.calibrate)
    m["workspace_bytes"] = hw.mem_reserve_bytes + hw.act_buffer_factor * peak_act
    # a pipeline stage holds 1/pp of the layers: of the weights and of the KV cache (all micro-batches')
    m["memory_bytes"] = (weight_dev + vector_bytes + kv_dev) / w.pp + peak_act + m["workspace_bytes"]
    m["mem_capacity_bytes"] = hw.mem_capacity + zero
    m["fits_memory"] = m["memory_bytes"] <= hw.mem_capacity
    m.update(deployment_metrics(design, hw, pre["time_s"], gen["time_s"],
                                jnp.where(n_gen > 0, w.batch * n_gen, w.batch * w.prompt_len)))
    m.update(accuracy_terms(a, q, counts["params"], acc if acc is not None else AccuracyParams()))
    return m
