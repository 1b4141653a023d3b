"""The steady state of a serving deployment: continuous batching under the KV capacity, chunked
prefill, pipeline stages, replicas, disaggregated prefill/decode pools, speculative decoding,
energy and price per token. Built on the step tables of :mod:`dse.core.ops` timed by
:mod:`dse.core.roofline`; one design point in, a flat dict out (``jax.vmap`` it for many).

Requests have ``prompt_len`` (ISL) input and ``gen_len`` (OSL) output tokens; ``prefix_hit`` of
the prompt comes from a prefix cache, so ``P = (1 − prefix_hit) · ISL`` tokens are prefilled.

**KV capacity** (vLLM's rule: ``gpu_memory_utilization`` of device memory for weights, KV cache
and activations): per device ``free = mem_fraction · mem_capacity − weights − draft weights −
mem_reserve_bytes − peak activation of one step``; a request reserves ``ceil((ISL + OSL) /
kv_block)`` blocks of ``kv_block`` tokens (no eviction: TensorRT-LLM's guaranteed-no-evict
policy); ``kv_capacity_requests = attn_dp · floor(free / (kv bytes per token per device · blocks ·
kv_block))``. The running requests per replica are ``concurrency`` (0: the capacity), capped by it.

**Aggregated** (continuous batching with chunked prefill, Sarathi-Serve, Agrawal et al. 2024):
each engine step runs the decode tokens of the ``B_d`` decoding requests plus ``c`` prefill
tokens, in one fused step (weights read once). With a chunk budget ``C`` (``chunk_tokens``; 0 =
a whole prompt) the steady state balances admissions and completions: ``B_d = min(B, C · OSL /
(P · E))``, ``c = B_d · E · P / OSL`` (E: tokens per decode step, 1 without speculation). With
``pp`` stages the running batch is split into ``max(microbatches, pp)`` micro-batches that keep
every stage busy; a request advances once per round of the pipeline (``cycle``). Then

- ``tpot_s`` = cycle / E (time between two output tokens of a request, **first token excluded**
  — vLLM/genai-perf's inter-token latency), ``tpot_incl_first_s`` = e2e / OSL (TensorRT-LLM's
  and some benchmarks' per-token latency, first token included);
- ``ttft_s`` = ceil(P / C) cycles (the prompt's chunks; queueing is not modelled — the steady
  state at the stated concurrency);
- ``e2e_s`` = ttft + (OSL − 1) · tpot; ``tokens_per_s_per_user`` = 1 / tpot;
- output ``tokens_per_s_per_gpu`` = B_d · E / cycle / devices of a replica; ``requests_per_s``
  = dp · B_d · E / cycle / OSL.

**Disaggregated** (DistServe, Zhong et al. 2024; Splitwise, Patel et al. 2024): ``prefill_dp``
replicas of ``prefill_tp`` devices prefill ``prefill_batch`` prompts per step; the decode pool is
``dp`` replicas of ``tp · attn_dp · pp`` devices running ``B`` requests (each pool at its own
precision: ``prefill_w_bits``/``prefill_a_bits``, 0 = the model's); each request's KV cache
(``P`` tokens of every layer) moves from a prefill to a decode replica over the network (or the
node's link when the whole deployment fits in one node). The system's request rate is the
slower pool's, ``min(R_prefill, R_decode)``; ``disagg_balance = R_prefill / R_decode`` (1:
balanced). ttft = prefill step + KV transfer; tpot as aggregated without prefill chunks.

**Speculative decoding** (Leviathan et al. 2023; Chen et al. 2023): a draft proposes ``spec_k``
tokens, each accepted with probability ``spec_alpha`` independently; the target verifies them in
one step of ``k + 1`` tokens per sequence and emits ``E = (1 − α^(k+1)) / (1 − α)`` tokens on
average (the accepted prefix plus one). The draft costs ``k`` decode steps of the draft model
(a catalog model, or with ``spec_mtp = 1`` one extra layer of the model itself with its LM head:
DeepSeek-V3's multi-token prediction, arXiv 2412.19437 §2.2).

**Energy and price**: each device draws ``power_idle_w + (power_busy_w − power_idle_w) · u``
(``u``: the fraction of time it works — 1 in an aggregated steady state, the rate ratio for the
faster of two disaggregated pools) and costs ``usd_per_hour``: ``j_per_token`` and
``usd_per_mtok`` per output token.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dse.core.conventions import DEFAULT, Conventions
from dse.core.design import Arch, Design
from dse.core.hardware import Hardware
from dse.core.interconnect import p2p_time
from dse.core.ops import Op, step_ops
from dse.core.params import param_counts
from dse.core.pipeline import ONCE_OPS, activation_send_time
from dse.core.roofline import op_times, uniform_peak_bits

_TINY = 1e-30

#: workload knobs that only the steady-state serving model reads (a sweep over one adds serve.* columns)
SERVE_KNOBS = frozenset(f"workload.{k}" for k in (
    "concurrency", "chunk_tokens", "mem_fraction", "kv_block", "prefix_hit", "spec_k", "spec_alpha", "spec_mtp",
    "disagg", "prefill_tp", "prefill_dp", "prefill_batch"))


def spec_tokens_per_step(k, alpha):
    """Expected tokens per verify step with ``k`` drafts accepted i.i.d. with probability α: Σ_{i=0}^{k} α^i."""
    return jnp.where(k > 0, (1.0 - alpha ** (k + 1.0)) / jnp.maximum(1.0 - alpha, _TINY), 1.0)


def kv_bytes_per_token(arch: Arch, quant, tp, pp):
    """KV-cache bytes one token adds on one device (K and V of its layers and KV heads)."""
    hkv = jnp.maximum(arch.n_kv_heads / tp, 1.0)  # replicated when tp > n_kv_heads
    return 2.0 * arch.n_layers / pp * hkv * arch.d_head * quant.kv_bits / 8.0


def weight_bytes_per_device(arch: Arch, quant, tp, pp, conv: Conventions):
    """Weights one device holds: matrices and embeddings split over tp, vectors replicated; 1/pp of them."""
    c = param_counts(arch)
    vec = 1.0 if conv.vector_weights else 0.0
    return ((c["matrix_params"] + c["embedding_params"]) * quant.w_bits / 8.0 / tp
            + c["vector_params"] * quant.a_bits / 8.0 * vec) / pp


def merge_steps(a: dict[str, Op], b: dict[str, Op]) -> dict[str, Op]:
    """One fused step running the tokens of two step tables: work and traffic add, weights are read once."""
    out = {}
    for k, x in a.items():
        y = b[k]
        out[k] = x._replace(flops=x.flops + y.flops, weight_bytes=jnp.maximum(x.weight_bytes, y.weight_bytes),
                            act_read=x.act_read + y.act_read, act_write=x.act_write + y.act_write,
                            kv_read=x.kv_read + y.kv_read, kv_write=x.kv_write + y.kv_write,
                            comm_bytes=x.comm_bytes + y.comm_bytes, gemm_rows=x.gemm_rows + y.gemm_rows)
    return out


def _time(ops, hw, tp, quant, conv, pp=1.0):
    """(stage seconds of one step on the slowest pipeline stage, peak activation bytes of the step)."""
    times = op_times(ops, hw, tp, conv, peak_bits=uniform_peak_bits(quant, conv))
    total = sum(o.count * times[k].time_s for k, o in ops.items())
    once = sum((o.count * times[k].time_s for k, o in ops.items() if k in ONCE_OPS), 0.0)
    act = 0.0
    for o in ops.values():
        act = jnp.maximum(act, o.act_read + o.act_write)
    return (total - once) / pp + once, act


def prefill_quant(design: Design):
    """The prefill pool's precision: ``prefill_w_bits``/``prefill_a_bits`` where set, else the model's
    (the KV cache keeps ``quant.kv_bits``: it moves to the decode pool as it is)."""
    q, w = design.quant, design.workload
    return dataclasses.replace(q, w_bits=jnp.where(w.prefill_w_bits > 0, w.prefill_w_bits, q.w_bits),
                               a_bits=jnp.where(w.prefill_a_bits > 0, w.prefill_a_bits, q.a_bits))


def _step(design, tp, batch, q, kv_len, conv, attn_dp=1.0):
    a, qz, w = design.arch, design.quant, design.workload
    return step_ops(a, qz, batch, tp, q, kv_len, conv, ep=w.ep, attn_dp=attn_dp)


def serve(design: Design, hw: Hardware, conv: Conventions = DEFAULT, draft: Arch | None = None) -> dict:
    """Steady-state serving metrics of one deployment (``design.workload`` holds every knob).

    ``draft``: the draft model's Arch for speculative decoding with ``spec_mtp = 0`` (same
    vocabulary; checked by :func:`check_draft`); without one, ``spec_k > 0`` uses the MTP head.
    """
    a, qz, w = design.arch, design.quant, design.workload
    isl, osl = w.prompt_len, jnp.maximum(w.gen_len, 1.0)
    P = jnp.maximum((1.0 - w.prefix_hit) * isl, 1.0)
    tp, pp = w.tp, w.pp
    dev_replica = tp * w.attn_dp * pp
    E = spec_tokens_per_step(w.spec_k, w.spec_alpha)
    qd = w.spec_k + 1.0  # tokens per sequence in a verify (or plain decode) step
    overhead = hw.step_overhead_s if conv.efficiency else 0.0
    disagg = w.disagg > 0

    # --- the draft: its weights and the time of k of its decode steps at batch b
    mtp = dataclasses.replace(a, n_layers=1.0 + 0.0 * a.n_layers)
    d_arch = mtp if draft is None else draft

    def draft_time(b, ctx):
        t, _ = _time(step_ops(mtp, qz, b, tp, 1.0, ctx, conv), hw, tp, qz, conv)
        if draft is not None:  # a draft model, unless spec_mtp picks the MTP head
            t_dr, _ = _time(step_ops(draft, qz, b, tp, 1.0, ctx, conv), hw, tp, qz, conv)
            t = jnp.where(w.spec_mtp > 0, t, t_dr)
        return jnp.where(w.spec_k > 0, w.spec_k * t, 0.0)

    draft_w = jnp.where(w.spec_k > 0, weight_bytes_per_device(d_arch, qz, tp, 1.0, conv), 0.0)
    if draft is not None:
        draft_w = jnp.where((w.spec_k > 0) & (w.spec_mtp > 0), weight_bytes_per_device(mtp, qz, tp, 1.0, conv), draft_w)

    # --- KV capacity of a replica (the decode pool's replica when disaggregated)
    C = jnp.where((w.chunk_tokens > 0) & ~disagg, w.chunk_tokens, P)
    chunk_ops = _step(design, tp, 1.0, jnp.where(disagg, 0.0, C), 0.0 * P, conv)
    _, act = _time(chunk_ops, hw, tp, qz, conv, pp)
    weights = weight_bytes_per_device(a, qz, tp, pp, conv)
    free = w.mem_fraction * hw.mem_capacity - weights - draft_w - hw.mem_reserve_bytes - act
    per_token = kv_bytes_per_token(a, qz, tp, pp)
    blocks = jnp.ceil((isl + osl + w.spec_k) / w.kv_block - 1e-9)
    cap = w.attn_dp * jnp.floor(jnp.maximum(free, 0.0) / (per_token * blocks * w.kv_block))
    B = jnp.where(w.concurrency > 0, jnp.minimum(w.concurrency, cap), cap)
    Bs = jnp.maximum(B, 1.0)

    # --- the decode (or mixed) step, per micro-batch on the slowest stage
    B_d = jnp.where(disagg, Bs, jnp.minimum(Bs, C * osl / (P * E)))
    c = jnp.where(disagg, 0.0, B_d * E * P / osl)  # prefill tokens per step
    rounds = jnp.maximum(w.microbatches, pp)
    ctx_d = isl + osl / 2.0
    dec_ops = _step(design, tp, B_d / rounds, qd, ctx_d, conv, w.attn_dp)
    pre_ops = _step(design, tp, 1.0, c / rounds, w.prefix_hit * isl + jnp.maximum(P - C, 0.0) / 2.0, conv)
    t_stage, _ = _time(merge_steps(dec_ops, pre_ops), hw, tp, qz, conv, pp)
    send = activation_send_time(design, hw, (B_d * qd + c) / rounds)
    cycle = rounds * (t_stage + send) + overhead + draft_time(B_d, ctx_d)

    tpot = cycle / E
    replica_rate = B_d * E / cycle / osl  # requests/s of one replica (the decode pool's when disaggregated)

    # --- disaggregated: the prefill pool and the KV transfer
    ptp = w.prefill_tp
    pq = prefill_quant(design)
    p_ops = step_ops(a, pq, w.prefill_batch, ptp, P, w.prefix_hit * isl, conv, ep=w.ep)
    t_pre, _ = _time(p_ops, hw, ptp, pq, conv)
    t_pre = t_pre + overhead
    prefill_rate = w.prefill_dp * w.prefill_batch / t_pre
    decode_rate = w.dp * replica_rate
    kv_req = P * 2.0 * a.n_layers * a.n_kv_heads * a.d_head * qz.kv_bits / 8.0
    n_dev = w.dp * dev_replica + jnp.where(disagg, w.prefill_dp * ptp, 0.0)
    cross = (n_dev > hw.node_size) * 1.0
    lanes = jnp.minimum(ptp, dev_replica)  # device pairs sending in parallel
    t_kv = jnp.where(disagg, p2p_time(kv_req / lanes, cross, hw), 0.0)

    rps = jnp.where(disagg, jnp.minimum(prefill_rate, decode_rate), decode_rate)
    ttft = jnp.where(disagg, t_pre + t_kv, jnp.ceil(P / C - 1e-9) * cycle)
    e2e = ttft + (osl - 1.0) * tpot

    # --- energy and price: each pool works the fraction of time its rate is used
    u_dec = jnp.where(disagg, rps / jnp.maximum(decode_rate, _TINY), 1.0)
    u_pre = rps / jnp.maximum(prefill_rate, _TINY)
    idle, busy = hw.power_idle_w, hw.power_busy_w
    watts = w.dp * dev_replica * (idle + (busy - idle) * u_dec) + jnp.where(
        disagg, w.prefill_dp * ptp * (idle + (busy - idle) * u_pre), 0.0)
    out_tps = rps * osl
    fits = (free > 0) & (cap >= 1)
    p_free = w.mem_fraction * hw.mem_capacity - weight_bytes_per_device(a, pq, ptp, 1.0, conv) - hw.mem_reserve_bytes
    fits = fits & (~disagg | (p_free > w.prefill_batch * isl * kv_bytes_per_token(a, qz, ptp, 1.0)))
    return {
        "tokens_per_s_per_gpu": out_tps / n_dev, "tokens_per_s_per_user": 1.0 / tpot, "ttft_s": ttft,
        "tpot_s": tpot, "tpot_incl_first_s": e2e / osl, "e2e_s": e2e, "requests_per_s": rps,
        "tokens_per_s": out_tps, "n_devices": n_dev, "concurrency": B_d, "kv_capacity_requests": cap,
        "step_s": cycle, "prefill_tokens_per_step": c, "spec_tokens_per_step": E,
        "prefill_rps": jnp.where(disagg, prefill_rate, 0.0), "decode_rps": decode_rate,
        "disagg_balance": jnp.where(disagg, prefill_rate / decode_rate, 1.0), "kv_transfer_s": t_kv,
        "j_per_token": watts / jnp.maximum(out_tps, _TINY),
        "usd_per_mtok": n_dev * hw.usd_per_hour / 3600.0 / jnp.maximum(out_tps, _TINY) * 1e6,
        "kv_free_bytes": free, "kv_request_bytes": per_token * blocks * w.kv_block, "fits_memory": fits,
    }


serve_jit = jax.jit(serve, static_argnames=("conv",))


def check_draft(arch: Arch, draft: Arch | None) -> None:
    """A draft model must share the target's vocabulary (its tokens are the target's tokens)."""
    from dse.core.design import _fail, _fmt
    if draft is not None and float(draft.vocab) != float(arch.vocab):
        _fail("serve.draft_model", f"vocab {_fmt(draft.vocab)}",
              f"the draft model's vocabulary must equal the model's (model.vocab={_fmt(arch.vocab)})")


def layout_devices(design: Design):
    """Devices of a deployment: dp replicas of tp·attn_dp·pp, plus the prefill pool when disaggregated."""
    w = design.workload
    return w.dp * w.tp * w.attn_dp * w.pp + (w.disagg > 0) * w.prefill_dp * w.prefill_tp


def check_budget(design: Design, gpus) -> None:
    """A deployment must use exactly the device budget ``serve.gpus``."""
    import numpy as np

    from dse.core.design import _fail, _fmt
    n = np.asarray(layout_devices(design))
    if gpus and (n != gpus).any():
        w = design.workload
        rule = (f"the layout uses workload.dp·tp·attn_dp·pp = {_fmt(w.dp)}·{_fmt(w.tp)}·{_fmt(w.attn_dp)}·{_fmt(w.pp)}"
                + (f" + prefill_dp·prefill_tp = {_fmt(w.prefill_dp)}·{_fmt(w.prefill_tp)}" if float(np.max(w.disagg)) else "")
                + f" = {_fmt(n)} devices; must equal serve.gpus={_fmt(gpus)}")
        _fail("workload.dp", w.dp, rule)
