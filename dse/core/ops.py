"""Per-operator accounting of one forward step on one tensor-parallel device.

A step processes ``q`` new tokens per sequence for ``batch`` sequences against ``kv_len``
entries already in the KV cache: prefill is ``q = prompt, kv_len = 0``; a decode step is
``q = 1, kv_len = context``; an encoder pass is a non-causal prefill with no cache.

Each operator reports, per occurrence (``count`` occurrences per step: ``n_layers`` for the
per-layer ones): FLOPs (a multiply-add is 2 FLOPs), weight bytes, activation bytes read and
written, KV-cache bytes read and written, bytes sent by a collective, and the operand width in
bits that selects the compute peak. Matmul shapes follow Vaswani et al. 2017 with grouped KV
heads (Ainslie et al. 2023); tensor parallelism splits heads, d_ff and the vocabulary over
``tp`` devices with two all-reduces per layer (Shoeybi et al. 2019, Megatron-LM); KV heads
fewer than ``tp`` are replicated. The switches in :mod:`dse.core.conventions` pick the rules.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from dse.core.conventions import Conventions
from dse.core.design import Arch, Quant


#: the only operators whose cost depends on the KV length (all others are constant across decode steps)
KV_DEPENDENT = frozenset({"attention", "qk_matmul", "softmax", "sv_matmul"})


#: numeric codes of ``Op.comm_kind`` (numeric, so op tables stay pytrees of arrays)
COLLECTIVE = {"all_reduce": 0.0, "all_to_all": 1.0, "p2p": 2.0, "all_gather": 3.0}


class Op(NamedTuple):
    count: object
    flops: object
    weight_bytes: object
    act_read: object
    act_write: object
    kv_read: object
    kv_write: object
    comm_bytes: object  # payload of the collective per device (collective ops only)
    bits: object  # operand precision that selects the compute peak
    gemm_rows: object = 0.0  # rows of a matmul (tokens; for attention, queries per KV head), for its efficiency; 0: n/a
    attention: object = 0.0  # 1 for the attention operators (their achieved efficiency is the device's own)
    comm_group: object = 1.0  # devices taking part in the collective (tp for all-reduce, ep for all-to-all)
    comm_kind: object = 0.0  # which collective: one of the COLLECTIVE codes

    @property
    def bytes(self):
        """Memory traffic of one occurrence (weights + activations + KV cache)."""
        return self.weight_bytes + self.act_read + self.act_write + self.kv_read + self.kv_write


def _op(count=1.0, flops=0.0, weight_bytes=0.0, act_read=0.0, act_write=0.0, kv_read=0.0,
        kv_write=0.0, comm_bytes=0.0, bits=16.0, gemm_rows=0.0, attention=0.0, comm_group=1.0,
        comm_kind=0.0) -> Op:
    return Op(count, flops, weight_bytes, act_read, act_write, kv_read, kv_write, comm_bytes, bits, gemm_rows,
              attention, comm_group, comm_kind)


def step_ops(arch: Arch, quant: Quant, batch, tp, q, kv_len, conv: Conventions) -> dict[str, Op]:
    """The operator table of one step (ordered as executed); all values per device."""
    L, h, d, V = arch.n_layers, arch.d_model, arch.d_head, arch.vocab
    H = arch.n_heads / tp
    Hkv = jnp.maximum(arch.n_kv_heads / tp, 1.0)  # replicated when tp > n_kv_heads
    ff = arch.d_ff / tp
    wB, aB, kvB = quant.w_bits / 8, quant.a_bits / 8, quant.kv_bits / 8
    T = batch * q  # new tokens in this step
    mm_bits = jnp.maximum(quant.w_bits, quant.a_bits)
    att_bits = jnp.maximum(quant.a_bits, quant.kv_bits)
    a_bits = quant.a_bits
    vec = 1.0 if conv.vector_weights else 0.0
    bias = 1.0 if arch.bias else 0.0
    has_cache = arch.causal

    def linear(n_in, n_out, count=L, out_to_cache=False):
        out_bytes = T * n_out * (kvB if out_to_cache else aB)
        return _op(count, flops=2 * n_in * n_out * T + bias * T * n_out,
                   weight_bytes=n_in * n_out * wB + vec * bias * n_out * aB,
                   act_read=T * n_in * aB,
                   act_write=0.0 if out_to_cache else out_bytes,
                   kv_write=out_bytes if out_to_cache else 0.0, bits=mm_bits, gemm_rows=T)

    layernorm = arch.norm == "layernorm"
    norm_flops = conv.norm_flops or (7.0 if layernorm else 4.0)
    norm_vec = (2.0 if layernorm else 1.0) * h * aB * vec

    def norm(count=L):
        return _op(count, flops=norm_flops * T * h, weight_bytes=norm_vec,
                   act_read=T * h * aB, act_write=T * h * aB, bits=a_bits)

    def residual(n_adds=1.0):
        # n_adds residual additions fused into one kernel: read n_adds + 1 tensors, write one.
        elems = conv.add_bytes_elems + (n_adds - 1.0)
        return _op(L, flops=n_adds * T * h, act_read=(elems - 1) * T * h * aB, act_write=T * h * aB, bits=a_bits)

    def allreduce():
        return _op(L, comm_bytes=jnp.where(tp > 1, T * h * aB, 0.0), bits=a_bits, comm_group=tp,
                   comm_kind=COLLECTIVE["all_reduce"])

    # --- attention geometry: keys attended and query-key pairs computed per sequence and head
    if has_cache:
        keys = kv_len + q if conv.attend_new_token else jnp.where(kv_len > 0, kv_len, q)
        pairs = q * kv_len + q * (q + 1) / 2 if conv.causal_halving else q * keys
    else:  # encoder: every query sees every key of the sequence
        keys = kv_len + q
        pairs = q * keys
    scores = batch * H * q * keys  # elements of a materialized score matrix
    # LLM-Viewer reads the prefill query with the KV head count (its decode uses n_heads).
    q_read_heads = jnp.where(kv_len > 0, H, Hkv) if conv.query_read_kv_heads else H

    ops: dict[str, Op] = {}
    if conv.embedding_and_final_norm:
        pos = jnp.where(arch.n_positions > 0, 1.0, 0.0)  # a learned position table adds a read and an add
        ops["embed"] = _op(1.0, flops=pos * T * h, weight_bytes=(1 + pos) * T * h * wB,
                           act_write=T * h * aB, bits=a_bits)
    ops["attn_norm"] = norm()
    ops["q_proj"] = linear(h, H * d)
    ops["k_proj"] = linear(h, Hkv * d, out_to_cache=has_cache)
    ops["v_proj"] = linear(h, Hkv * d, out_to_cache=has_cache)
    kv_bytes_read = batch * keys * Hkv * d * kvB if has_cache else batch * keys * Hkv * d * aB
    q_bytes = batch * q * q_read_heads * d * aB
    o_bytes = batch * q * H * d * aB
    # the attention products are batched GEMMs, one per (sequence, KV head), whose rows are the
    # queries sharing that head's keys: (n_heads / n_kv_heads) · q — one row for MHA decode
    att_rows = H / Hkv * q
    if conv.fused_attention:
        ops["attention"] = _op(L, flops=4 * batch * H * pairs * d + 5 * batch * H * pairs,
                               act_read=q_bytes, act_write=o_bytes, kv_read=2 * kv_bytes_read, bits=att_bits,
                               gemm_rows=att_rows, attention=1.0)
    else:
        ops["qk_matmul"] = _op(L, flops=2 * batch * H * pairs * d, act_read=q_bytes,
                               act_write=scores * aB, kv_read=kv_bytes_read, bits=att_bits, gemm_rows=att_rows,
                               attention=1.0)
        ops["softmax"] = _op(L, flops=5 * batch * H * pairs, act_read=scores * aB, act_write=scores * aB,
                             bits=a_bits, attention=1.0)
        ops["sv_matmul"] = _op(L, flops=2 * batch * H * pairs * d, act_read=scores * aB,
                               act_write=o_bytes, kv_read=kv_bytes_read, bits=att_bits, gemm_rows=att_rows,
                               attention=1.0)
    ops["o_proj"] = linear(H * d, h)
    if arch.parallel_block:
        ops["allreduce"] = allreduce()
    else:
        ops["allreduce_attn"] = allreduce()
        ops["residual_attn"] = residual()
        ops["mlp_norm"] = norm()
    if arch.gated_mlp:
        ops["gate_proj"] = linear(h, ff)
        ops["up_proj"] = linear(h, ff)
    else:
        ops["fc1"] = linear(h, ff)
    act_elems = T * (h if conv.activation_over_d_model else ff)
    act_flops = conv.activation_flops or (5.0 if arch.gated_mlp else 8.0)
    act_moves = conv.activation_bytes_elems or (3.0 if arch.gated_mlp else 2.0)
    ops["activation"] = _op(L, flops=act_flops * act_elems, act_read=(act_moves - 1) * act_elems * aB,
                            act_write=act_elems * aB, bits=a_bits)
    ops["down_proj" if arch.gated_mlp else "fc2"] = linear(ff, h)
    if arch.parallel_block:
        ops["residual"] = residual(n_adds=2.0)
    else:
        ops["allreduce_mlp"] = allreduce()
        ops["residual_mlp"] = residual()
    if conv.embedding_and_final_norm:
        ops["final_norm"] = norm(count=1.0)
    if has_cache and conv.lm_head:  # the LM head runs on the last new token of each sequence
        seqs = batch * jnp.minimum(q, 1.0)
        n_act = seqs if conv.lm_head_act_per_sequence else jnp.minimum(q, 1.0)
        ops["lm_head"] = _op(1.0, flops=conv.lm_head_flops_per_mac * seqs * h * V / tp,
                             weight_bytes=h * V / tp * wB, act_read=n_act * h * aB,
                             act_write=n_act * V / tp * aB, bits=mm_bits, gemm_rows=seqs)
    return ops
