"""Parameter counts of an Arch: total, active per token (both conventions), and the layer layout.

Rules (they reproduce published exact totals to the parameter; see tests/core/test_moe.py):
- attention, GQA: ``h·(H + 2·Hkv)·d + H·d·h`` [+ ``(H + 2·Hkv)·d`` q/k/v biases, + ``h`` o bias]
  [+ ``2·d`` QK-norm scales] [+ ``H`` sink logits] (Vaswani et al. 2017; Ainslie et al. 2023);
- attention, MLA (DeepSeek-V2, arXiv 2405.04434 §2.1): q = ``h·r_q + r_q + r_q·H·(d_nope + d_rope)``
  (``h·H·(d_nope + d_rope)`` without a query latent); kv = ``h·(r_kv + d_rope) + r_kv +
  r_kv·H·(d_nope + d_v)``; o = ``H·d_v·h`` (the ``+ r`` terms are the latent norms);
- an MLP of width f: ``(3 if gated else 2)·h·f`` [+ ``f`` per input projection + ``h`` biases];
- an MoE layer: ``E`` routed and ``n_shared`` shared experts (each an MLP) + a router ``h·E``
  [+ ``E`` router bias]; the first ``n_dense_layers`` layers and, after them, all but every
  ``moe_every``-th layer have a dense MLP of width ``d_ff``;
- norms: 1 (parallel block), 2, or 4 (sandwich) per layer, ``h`` scales each (``2h`` LayerNorm)
  and a final norm; embedding ``V·h`` (+ a learned position table) and an untied LM head ``V·h``.

Active parameters are those a token's forward pass uses: everything but the routed experts it is
not sent to (top_k of E per MoE layer). Two conventions are in use (modern_models.md §3.2 of the
project's reference data): without the input embedding table (OpenAI gpt-oss, DeepSeek: an
embedding lookup reads one row) and with it (Mistral, Qwen, Meta).
"""
from __future__ import annotations

import jax.numpy as jnp

from dse.core.design import Arch, uses


def layer_layout(arch: Arch) -> dict:
    """Layers by kind: ``moe`` / ``dense`` MLP layers and ``global`` / ``local`` attention layers.

    Counts a left-out feature (``Arch.features``) cannot have are the Python number 0.0, so the
    operators of that kind are left out of the trace.
    """
    L = arch.n_layers
    E = arch.n_experts
    n_moe, dense = 0.0, L
    if uses(arch, "moe"):
        every = jnp.maximum(arch.moe_every, 1.0)
        n_moe = jnp.where(E > 0, jnp.floor(jnp.maximum(L - arch.n_dense_layers, 0.0) / every), 0.0)
        dense = L - n_moe
    if not has_local(arch):
        return {"moe": n_moe, "dense": dense, "global": L, "local": 0.0}
    local = (arch.window > 0) | (arch.attn_chunk > 0)
    n_global = jnp.where(local, jnp.where(arch.global_every > 0,
                                           jnp.floor(L / jnp.maximum(arch.global_every, 1.0)), 0.0), L)
    return {"moe": n_moe, "dense": dense, "global": n_global, "local": L - n_global}


def has_local(arch: Arch) -> bool:
    """Static: whether ``arch`` may have local (windowed or chunked) attention layers."""
    return uses(arch, "window") or uses(arch, "chunk")


def mla(arch: Arch):
    """1.0 for latent attention (kv_lora_rank > 0), else 0.0 — a numeric switch, traceable; the
    Python number 1.0 or 0.0 when ``arch.features`` leaves out the grouped or the latent form."""
    if not uses(arch, "gqa"):
        return 1.0
    if not uses(arch, "mla"):
        return 0.0
    return jnp.where(arch.kv_lora_rank > 0, 1.0, 0.0)


def _bias(flag: bool) -> float:
    return 1.0 if flag else 0.0


def attention_params(arch: Arch):
    """(matrix, vector) parameters of one attention block."""
    h, d, H, Hkv = arch.d_model, arch.d_head, arch.n_heads, arch.n_kv_heads
    b = _bias(arch.bias)
    qkv_b = _bias(arch.bias or arch.qkv_bias)
    gqa_mat = h * d * (H + 2 * Hkv) + H * d * h
    gqa_vec = qkv_b * d * (H + 2 * Hkv) + b * h
    rq, rkv, dr, dn, dv = arch.q_lora_rank, arch.kv_lora_rank, arch.qk_rope_head_dim, arch.qk_nope_head_dim, arch.v_head_dim
    q_mat = jnp.where(rq > 0, h * rq + rq * H * (dn + dr), h * H * (dn + dr))
    mla_mat = q_mat + h * (rkv + dr) + rkv * H * (dn + dv) + H * dv * h
    mla_vec = rq + rkv  # the latent norms' scales
    m = mla(arch)
    extra = (2.0 * d if arch.qk_norm else 0.0) + (H if arch.attn_sinks else 0.0)
    return blend(m, mla_mat, gqa_mat), blend(m, mla_vec, gqa_vec) + extra


def is_zero(x) -> bool:
    """Static: ``x`` is the Python number 0 (a count or weight of a left-out feature)."""
    return isinstance(x, (int, float)) and x == 0


def blend(m, x_mla, x_gqa):
    """m·x_mla + (1 − m)·x_gqa, tracing only the side a Python 0/1 ``m`` keeps."""
    if isinstance(m, float):
        return x_mla if m == 1.0 else x_gqa
    return m * x_mla + (1 - m) * x_gqa


def mlp_params(arch: Arch, width):
    """(matrix, vector) parameters of one MLP (a dense MLP or one expert) of ``width``."""
    h = arch.d_model
    n_in = 2.0 if arch.gated_mlp else 1.0
    return (n_in + 1.0) * h * width, _bias(arch.bias) * (n_in * width + h)


def router_params(arch: Arch):
    """(matrix, vector) parameters of one router."""
    return arch.d_model * arch.n_experts, _bias(arch.router_bias or arch.bias) * arch.n_experts


def shared_width(arch: Arch):
    return jnp.where(arch.d_ff_shared > 0, arch.d_ff_shared, arch.d_ff_expert)


def param_counts(arch: Arch) -> dict:
    """Exact parameter counts: total, active per token (two conventions), and by kind."""
    lay = layer_layout(arch)
    h, V, L = arch.d_model, arch.vocab, arch.n_layers
    norm = (2.0 if arch.norm == "layernorm" else 1.0) * h
    norms_per_layer = 1.0 if arch.parallel_block else (4.0 if arch.sandwich_norm else 2.0)
    att_m, att_v = attention_params(arch)
    dense_m, dense_v = mlp_params(arch, arch.d_ff)
    exp_m, exp_v = mlp_params(arch, arch.d_ff_expert)
    sh_m, sh_v = mlp_params(arch, shared_width(arch))
    rt_m, rt_v = router_params(arch)
    E, k, S = arch.n_experts, arch.top_k, arch.n_shared_experts
    embed = V * h + arch.n_positions * h
    head = 0.0 if arch.tied_embeddings or not arch.causal else V * h
    head_used = V * h if arch.causal else 0.0  # the LM head a token uses (tied or not)
    common_m = L * att_m + lay["dense"] * dense_m
    common_v = L * (att_v + norms_per_layer * norm) + lay["dense"] * dense_v + norm
    routed_m = routed_v = active_routed = 0.0
    if uses(arch, "moe"):
        common_m = common_m + lay["moe"] * (S * sh_m + rt_m)
        common_v = common_v + lay["moe"] * (S * sh_v + rt_v)
        routed_m, routed_v = lay["moe"] * E * exp_m, lay["moe"] * E * exp_v
        active_routed = lay["moe"] * k * (exp_m + exp_v)
    matrices = common_m + routed_m
    vectors = common_v + routed_v
    active_body = common_m + common_v + active_routed
    return {"params": matrices + vectors + embed + head, "params_non_embedding": matrices + vectors,
            "params_active": active_body + head_used,
            "params_active_with_embedding": active_body + head_used + embed - (head_used if arch.tied_embeddings else 0.0),
            "matrix_params": matrices + head, "vector_params": vectors, "embedding_params": embed,
            "expert_params": routed_m + routed_v}
