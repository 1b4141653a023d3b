"""Attention operators of one step: grouped (GQA/MQA/MHA) or latent (MLA), global or local.

Geometry per sequence and head (causal): the new tokens at positions ``kv … kv+q−1`` each attend
to the keys they may see; ``pairs`` counts query–key pairs, ``keys`` the keys read.
- global: position p sees p+1 keys: pairs = q·kv + q(q+1)/2 (``causal_halving``; else q·(kv+q));
- sliding window W (Beltagy et al. 2020; Mistral 2023; Gemma 2/3; gpt-oss): min(p+1, W) keys,
  so pairs = G(kv+q) − G(kv) with G(x) = Σ_{p<x} min(p+1, W) = m(m+1)/2 + (x−m)·W, m = min(x, W);
  keys read min(kv+q, W+q−1); the cache holds at most W entries;
- chunked (Llama 4, attention_chunk_size C): position p sees (p mod C)+1 keys of its own chunk:
  pairs = S(kv+q) − S(kv) with S(x) = ⌊x/C⌋·C(C+1)/2 + r(r+1)/2, r = x mod C; keys read
  (kv mod C)+q; the cache holds at most C entries.
The first ``layout['global']`` layers' worth are global, the rest local (the count is all that
matters for cost, not which layers).

Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434 §2.1 and App. C): the cache holds a
latent of ``kv_lora_rank`` plus a rotary key of ``qk_rope_head_dim`` per token and layer, shared
by all heads; the down-projections (q_a, kv_a) are replicated over tensor-parallel devices, the
up-projections and o split by head (vLLM's layout). Absorbed form (DeepSeek-V2 App. C; the decode
default): W_UK is folded into the query and W_UV into the output, so scores and values work in the
latent (d_qk = r_kv + d_rope, d_v = r_kv) against one shared latent "KV head" — an MQA-shaped
product with n_heads rows per key; expanded form (the prefill default): kv_b up-projects every key
to per-head K (d_nope) and V (d_v), then ordinary multi-head attention with d_qk = d_nope + d_rope.
``conventions.mla_absorb_prefill`` / ``mla_absorb_decode`` pick the form per phase.
"""
from __future__ import annotations

import jax.numpy as jnp

from dse.core.ops import Op, Step, _op
from dse.core.design import uses
from dse.core.params import blend, has_local, is_zero, mla


def _global_geometry(s: Step):
    q, kv, conv = s.q, s.kv_len, s.conv
    if not s.arch.causal:  # encoder: every query sees every key of the sequence
        keys = kv + q
        return q * keys, keys
    keys = kv + q if conv.attend_new_token else jnp.where(kv > 0, kv, q)
    pairs = q * kv + q * (q + 1) / 2 if conv.causal_halving else q * keys
    return pairs, keys


def _local_geometry(s: Step):
    q, kv, a = s.q, s.kv_len, s.arch
    W = jnp.maximum(a.window, 1.0)
    C = jnp.maximum(a.attn_chunk, 1.0)

    def G(x):
        m = jnp.minimum(x, W)
        return m * (m + 1) / 2 + (x - m) * W

    def S(x):
        n = jnp.floor(x / C)
        r = x - n * C
        return n * C * (C + 1) / 2 + r * (r + 1) / 2

    pairs_g, keys_g = _global_geometry(s)
    keys = local_pick(a, lambda: jnp.minimum(kv + q, W + q - 1), lambda: kv - C * jnp.floor(kv / C) + q, keys_g)
    if s.conv.causal_halving:
        pairs = local_pick(a, lambda: G(kv + q) - G(kv), lambda: S(kv + q) - S(kv), pairs_g)
    else:
        pairs = q * keys
    return pairs, keys


def local_pick(a, windowed, chunked, other):
    """The value of a local layer: ``windowed()`` where window > 0, else ``chunked()`` where
    attn_chunk > 0, else ``other`` — tracing only the kinds ``a.features`` keeps."""
    out = other
    if uses(a, "chunk"):
        out = jnp.where(a.attn_chunk > 0, chunked(), out)
    if uses(a, "window"):
        out = jnp.where(a.window > 0, windowed(), out)
    return out


def absorbed(s: Step):
    """1.0 where this step runs MLA in the absorbed form (decode: q = 1; prefill: q > 1)."""
    c = s.conv
    return jnp.where(s.q > 1, 1.0 if c.mla_absorb_prefill else 0.0, 1.0 if c.mla_absorb_decode else 0.0)


def _attention_block(s: Step, count, pairs, keys, suffix: str) -> dict[str, Op]:
    """The attention products of one layer kind, fused or as qk / softmax / sv."""
    a, conv, b, q = s.arch, s.conv, s.batch, s.q
    H = a.n_heads / s.tp
    Hkv = jnp.maximum(a.n_kv_heads / s.tp, 1.0)
    d = a.d_head
    rkv, dr, dn, dv = a.kv_lora_rank, a.qk_rope_head_dim, a.qk_nope_head_dim, a.v_head_dim
    m = mla(a)
    ab = 0.0 if is_zero(m) else absorbed(s) * m  # weights of the three forms: grouped, latent absorbed, latent expanded
    ex = 0.0 if is_zero(m) else m - ab
    gq = 1.0 - m

    def mix(x_g, x_ab, x_ex):  # terms whose weight is the Python 0.0 (a left-out form) are not traced
        return sum(wt * x for wt, x in ((gq, x_g), (ab, x_ab), (ex, x_ex)) if not is_zero(wt))

    d_qk = mix(d, rkv + dr, dn + dr)
    d_v = mix(d, rkv, dv)
    k_read = b * keys * mix(Hkv * d * s.kvB, (rkv + dr) * s.kvB, H * dn * s.aB + dr * s.kvB)
    v_read = b * keys * mix(Hkv * d * s.kvB, 0.0, H * dv * s.aB)  # absorbed: V is the latent K already read
    if not a.causal:
        k_read, v_read = k_read / s.kvB * s.aB, v_read / s.kvB * s.aB
    rows = mix(H / Hkv * q, H * q, q)  # rows of each batched GEMM: the queries sharing one K/V head
    q_read_heads = jnp.where(s.kv_len > 0, H, Hkv) if conv.query_read_kv_heads else H
    q_bytes = b * q * q_read_heads * d_qk * s.aB
    o_bytes = b * q * H * d_v * s.aB
    scores = b * H * q * keys  # elements of a materialized score matrix
    sinks = b * H * q if a.attn_sinks else 0.0  # one extra logit per query and head (gpt-oss)
    soft = 5 * (b * H * pairs + sinks)
    if conv.fused_attention:
        return {"attention" + suffix: _op(count, flops=2 * b * H * pairs * (d_qk + d_v) + soft, act_read=q_bytes,
                                          act_write=o_bytes, kv_read=k_read + v_read, bits=s.att_bits,
                                          gemm_rows=rows, attention=1.0)}
    return {
        "qk_matmul" + suffix: _op(count, flops=2 * b * H * pairs * d_qk, act_read=q_bytes, act_write=scores * s.aB,
                                  kv_read=k_read, bits=s.att_bits, gemm_rows=rows, attention=1.0),
        "softmax" + suffix: _op(count, flops=soft, act_read=scores * s.aB, act_write=scores * s.aB,
                                bits=s.a_bits, attention=1.0),
        "sv_matmul" + suffix: _op(count, flops=2 * b * H * pairs * d_v, act_read=scores * s.aB, act_write=o_bytes,
                                  kv_read=v_read, bits=s.att_bits, gemm_rows=rows, attention=1.0),
    }


def attention_ops(s: Step, local_as_global: bool = False) -> dict[str, Op]:
    """Projections and attention products of every layer (ordered as executed)."""
    a, L, h, T = s.arch, s.arch.n_layers, s.arch.d_model, s.T
    H = a.n_heads / s.tp
    Hkv = jnp.maximum(a.n_kv_heads / s.tp, 1.0)
    d = a.d_head
    rq, rkv, dr, dn, dv = a.q_lora_rank, a.kv_lora_rank, a.qk_rope_head_dim, a.qk_nope_head_dim, a.v_head_dim
    m = mla(a)
    q_lora = 0.0 if is_zero(m) else m * jnp.where(rq > 0, 1.0, 0.0)
    qkv_bias = 1.0 if (a.bias or a.qkv_bias) else 0.0
    cache = a.causal
    ops: dict[str, Op] = {}
    if uses(a, "mla"):
        ops["q_a_proj"] = s.linear(h, rq, L * q_lora, bias=0.0)  # replicated over tp (a small latent)
        ops["q_a_norm"] = s.norm(L * q_lora, width=rq)
        ops["q_b_proj"] = s.linear(rq, H * (dn + dr), L * q_lora, bias=0.0)
    ops["q_proj"] = s.linear(h, H * d, L * (1.0 - q_lora), bias=qkv_bias)
    if uses(a, "gqa"):
        ops["k_proj"] = s.linear(h, Hkv * d, L * (1.0 - m), bias=qkv_bias, out_to_cache=cache)
        ops["v_proj"] = s.linear(h, Hkv * d, L * (1.0 - m), bias=qkv_bias, out_to_cache=cache)
    if uses(a, "mla"):
        ops["kv_a_proj"] = s.linear(h, rkv + dr, L * m, bias=0.0, out_to_cache=cache)  # latent + rotary key → cache
        ops["kv_a_norm"] = s.norm(L * m, width=rkv)
        # kv_b: the up-projection, W_UK and W_UV (r_kv × H·(d_nope + d_v) per device)
        ab = absorbed(s)
        up_rows = s.batch * (s.kv_len + s.q)  # expanded: every key this step attends is up-projected
        w_up = rkv * H * (dn + dv)
        ops["kv_b_proj"] = _op(
            L * m, flops=ab * 2 * T * H * rkv * (dn + dv) + (1 - ab) * 2 * up_rows * w_up,
            weight_bytes=w_up * s.wB,
            act_read=ab * T * H * (dn + rkv) * s.aB,
            act_write=ab * T * H * (rkv + dv) * s.aB + (1 - ab) * up_rows * H * (dn + dv) * s.aB,
            kv_read=(1 - ab) * up_rows * rkv * s.kvB, bits=s.mm_bits, gemm_rows=ab * T + (1 - ab) * up_rows)
    if a.qk_norm:  # RMSNorm over every head's query and key (Qwen3, Gemma 3): 2·d scales per layer
        width = (H + Hkv) * d
        ops["qk_norm"] = _op(L, flops=4.0 * T * width, weight_bytes=2 * d * s.aB * s.vec,
                             act_read=T * width * s.aB, act_write=T * width * s.aB, bits=s.a_bits)
    lay = s.layout
    ops.update(_attention_block(s, lay["global"], *_global_geometry(s), ""))
    if has_local(a):
        local = _global_geometry(s) if local_as_global else _local_geometry(s)
        ops.update(_attention_block(s, lay["local"], *local, "_local"))
    d_o = blend(m, dv, d)
    ops["o_proj"] = s.linear(H * d_o, h, L)
    return ops


def kv_cache_elements(arch, context, tp=1.0):
    """KV-cache elements one sequence holds at ``context`` tokens, summed over layers (per device
    when ``tp`` > 1: grouped K/V heads split over tp, replicated below one per device; the MLA latent
    is replicated). Local layers hold at most ``window`` (or ``attn_chunk``) entries.
    """
    from dse.core.params import layer_layout

    lay = layer_layout(arch)
    per_token = blend(mla(arch), arch.kv_lora_rank + arch.qk_rope_head_dim,
                      2 * jnp.maximum(arch.n_kv_heads / tp, 1.0) * arch.d_head)
    if not has_local(arch):
        return per_token * lay["global"] * context
    cap = local_pick(arch, lambda: arch.window, lambda: arch.attn_chunk, context)
    return per_token * (lay["global"] * context + lay["local"] * jnp.minimum(context, cap))
