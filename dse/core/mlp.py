"""MLP operators of one step: dense MLPs and mixture-of-experts layers.

Dense layers (``layout['dense']`` of them) run the gated (SwiGLU, Shazeer 2020) or plain MLP of
width ``d_ff``, split over ``tp`` devices (Megatron-LM). MoE layers (``layout['moe']``; Shazeer
et al. 2017, Fedus et al. 2022, DeepSeek-V3 2024) run a router (``d_model × n_experts``,
replicated), the shared experts on every token (dense, split over tp) and the routed experts:

- compute: each of the step's T tokens goes to ``top_k`` experts: T·k expert-MLP passes, spread
  over the ``tp·attn_dp`` devices of the MoE group (ep shards × tp·attn_dp/ep expert tensor
  parallel); under expert parallelism (ep > 1) the busiest shard carries ``moe_imbalance`` × the
  mean load and sets the step time (``Op.load``);
- weight bytes: a step reads the experts it touches. With T tokens each choosing k of E experts
  uniformly and independently, an expert is untouched with probability (1 − k/E)^T, so
  E·(1 − (1 − k/E)^T) distinct experts are read in expectation — smooth in T, hence
  differentiable. (Routing is neither uniform nor independent in trained models; moe_imbalance
  covers the skew of load, and this expectation is the uniform-routing assumption, stated.)
- all-to-all: with attention data parallelism (attn_dp > 1) tokens live on their attention
  replica, so an MoE layer dispatches each token's k copies to the expert shards and combines them
  back (two all-to-alls over ep devices; DeepSeek-V3 §3.4, DeepEP); with attn_dp = 1 every device
  already holds every token and the shards' partial outputs are summed by the layer's all-reduce.
"""
from __future__ import annotations

import jax.numpy as jnp

from dse.core.ops import COLLECTIVE, Op, Step, _op
from dse.core.params import is_zero, shared_width


def expected_experts(n_experts, top_k, tokens):
    """E·(1 − (1 − k/E)^T): distinct experts touched by T tokens routing uniformly to k of E."""
    E = jnp.maximum(n_experts, 1.0)
    p = jnp.clip(top_k / E, 0.0, 1.0)
    untouched = jnp.where(p >= 1.0, 0.0, jnp.exp(tokens * jnp.log1p(-jnp.minimum(p, 0.999999))))
    return jnp.where(n_experts > 0, E * (1.0 - untouched), 0.0)


def _activation(s: Step, count, width, tokens):
    conv, gated = s.conv, s.arch.gated_mlp
    elems = tokens * (s.arch.d_model if conv.activation_over_d_model else width)
    flops = conv.activation_flops or (5.0 if gated else 8.0)
    moves = conv.activation_bytes_elems or (3.0 if gated else 2.0)
    return _op(count, flops=flops * elems, act_read=(moves - 1) * elems * s.aB, act_write=elems * s.aB,
               bits=s.a_bits)


def _fused_mlp(s: Step, count, width, tokens, weight_share, rows) -> Op:
    """One fused MLP kernel (input projections, activation, output projection) of ``width``
    columns on ``tokens`` rows; ``weight_share``: matrices' bytes read (number of such MLPs)."""
    a, h = s.arch, s.arch.d_model
    n_in = 2.0 if a.gated_mlp else 1.0
    bias = 1.0 if a.bias else 0.0
    act = s.conv.activation_flops or (5.0 if a.gated_mlp else 8.0)
    return _op(count, flops=tokens * width * (2 * (n_in + 1) * h + act) + bias * tokens * (n_in * width + h),
               weight_bytes=weight_share * ((n_in + 1) * h * width * s.wB + s.vec * bias * (n_in * width + h) * s.aB),
               act_read=tokens * h * s.aB, act_write=tokens * h * s.aB, bits=s.mm_bits, gemm_rows=rows,
               dequant=weight_share * (n_in + 1) * h * width * s.weight_only)


def mlp_ops(s: Step) -> tuple[dict[str, Op], object]:
    """(ops, layers whose MLP output is all-reduced over tp)."""
    a, h, T, lay = s.arch, s.arch.d_model, s.T, s.layout
    ff = a.d_ff / s.tp
    nd, nm = lay["dense"], lay["moe"]
    ops: dict[str, Op] = {}
    if a.gated_mlp:
        ops["gate_proj"] = s.linear(h, ff, nd)
        ops["up_proj"] = s.linear(h, ff, nd)
    else:
        ops["fc1"] = s.linear(h, ff, nd)
    ops["activation"] = _activation(s, nd, ff, T)
    ops["down_proj" if a.gated_mlp else "fc2"] = s.linear(ff, h, nd)

    if is_zero(nm):  # no MoE layers (the model's features leave them out)
        return ops, nd
    # --- mixture of experts
    E, k = a.n_experts, a.top_k
    group = s.tp * s.attn_dp  # devices of the MoE group
    ops["router"] = s.linear(h, E, nm, bias=1.0 if (a.router_bias or a.bias) else 0.0)
    shared = a.n_shared_experts * shared_width(a) / s.tp
    ops["shared_experts"] = _fused_mlp(s, nm * jnp.where(a.n_shared_experts > 0, 1.0, 0.0), shared, T, 1.0, T)
    a2a = jnp.where((s.ep > 1) & (s.attn_dp > 1), T * k * h * s.aB / s.tp, 0.0)
    ops["moe_dispatch"] = _op(nm, comm_bytes=a2a, bits=s.a_bits, comm_group=s.ep,
                              comm_kind=COLLECTIVE["all_to_all"])
    tokens_all = s.batch_all * s.q
    assignments = tokens_all * k  # token-to-expert passes of the whole MoE group
    touched = expected_experts(E, k, tokens_all)
    routed = _fused_mlp(s, nm, a.d_ff_expert / group, assignments, touched, assignments / jnp.maximum(E, 1.0))
    # activations: each shard reads its tokens' hidden states once (not once per tensor-parallel slice)
    # (at most one shard per device of the group: equal to ep for every legal design, where ep divides the
    # group; the optimizer's relaxation visits ep > tp·attn_dp, which must not read less than one device does)
    shard_tokens = assignments / jnp.minimum(s.ep, group)
    ops["experts"] = routed._replace(act_read=shard_tokens * h * s.aB, act_write=shard_tokens * h * s.aB,
                                     load=jnp.where(s.ep > 1, a.moe_imbalance, 1.0))
    ops["moe_combine"] = ops["moe_dispatch"]
    allreduce_layers = nd + nm * jnp.where(s.attn_dp > 1, 0.0, 1.0)
    return ops, allreduce_layers
