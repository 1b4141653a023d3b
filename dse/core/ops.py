"""Per-operator accounting of one forward step on one device.

A step processes ``q`` new tokens per sequence for ``batch`` sequences against ``kv_len``
entries already in the KV cache: prefill is ``q = prompt, kv_len = 0``; a decode step is
``q = 1, kv_len = context``; an encoder pass is a non-causal prefill with no cache.

Each operator reports, per occurrence (``count`` occurrences per step: the number of layers of
its kind for the per-layer ones): FLOPs (a multiply-add is 2 FLOPs), weight bytes, activation
bytes read and written, KV-cache bytes read and written, bytes sent by a collective, and the
operand width in bits that selects the compute peak. Matmul shapes follow Vaswani et al. 2017
with grouped KV heads (Ainslie et al. 2023); tensor parallelism splits heads, d_ff and the
vocabulary over ``tp`` devices with two all-reduces per layer (Shoeybi et al. 2019,
Megatron-LM); KV heads fewer than ``tp`` are replicated. The attention variants live in
:mod:`dse.core.attention`, the MLP and experts in :mod:`dse.core.mlp`; the switches in
:mod:`dse.core.conventions` pick the counting rules.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from dse.core.conventions import Conventions
from dse.core.design import Arch, Quant

#: operators whose cost depends on the KV length, each with the layer kind whose cache it reads
#: (all others cost the same at every decode step)
KV_DEPENDENT = {"attention": "global", "qk_matmul": "global", "softmax": "global", "sv_matmul": "global",
                "attention_local": "local", "qk_matmul_local": "local", "softmax_local": "local",
                "sv_matmul_local": "local", "kv_b_proj": "global"}

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
    load: object = 1.0  # the busiest device's compute over the mean (expert imbalance); scales compute time
    dequant: object = 0.0  # weight elements converted to the activations' precision first (weight-only quantization)

    @property
    def bytes(self):
        """Memory traffic of one occurrence (weights + activations + KV cache)."""
        return self.weight_bytes + self.act_read + self.act_write + self.kv_read + self.kv_write


def _op(count=1.0, flops=0.0, weight_bytes=0.0, act_read=0.0, act_write=0.0, kv_read=0.0,
        kv_write=0.0, comm_bytes=0.0, bits=16.0, gemm_rows=0.0, attention=0.0, comm_group=1.0,
        comm_kind=0.0, load=1.0, dequant=0.0) -> Op:
    return Op(count, flops, weight_bytes, act_read, act_write, kv_read, kv_write, comm_bytes, bits, gemm_rows,
              attention, comm_group, comm_kind, load, dequant)


class Step(NamedTuple):
    """The shared quantities of one step on one device (built once by :func:`step_ops`)."""

    arch: Arch
    conv: Conventions
    layout: dict  # layers by kind (dse.core.params.layer_layout)
    batch: object  # sequences of this device's attention replica
    batch_all: object  # sequences of the whole model replica (tp · attn_dp devices)
    q: object  # new tokens per sequence
    kv_len: object  # cached entries per sequence before the step
    T: object  # new tokens of this attention replica (batch · q)
    tp: object
    attn_dp: object
    ep: object
    wB: object  # bytes per weight, activation, KV element
    aB: object
    kvB: object
    mm_bits: object  # operand width of weight matmuls
    att_bits: object  # operand width of attention products
    a_bits: object
    vec: float  # 1.0: norm/bias vectors count as weight traffic
    weight_only: object  # 1 when weights are narrower than the activations (converted before each matmul)

    def linear(self, n_in, n_out, count, *, bias=None, out_to_cache=False, rows=None) -> Op:
        """A matmul of ``rows`` tokens (default T) by this device's n_in × n_out weight (+ a bias:
        ``bias`` 1/0, default the model's ``bias`` flag)."""
        rows = self.T if rows is None else rows
        b = (1.0 if self.arch.bias else 0.0) if bias is None else bias
        out_bytes = rows * n_out * (self.kvB if out_to_cache else self.aB)
        return _op(count, flops=2 * n_in * n_out * rows + b * rows * n_out,
                   weight_bytes=n_in * n_out * self.wB + self.vec * b * n_out * self.aB,
                   act_read=rows * n_in * self.aB,
                   act_write=0.0 if out_to_cache else out_bytes,
                   kv_write=out_bytes if out_to_cache else 0.0, bits=self.mm_bits, gemm_rows=rows,
                   dequant=n_in * n_out * self.weight_only)

    def norm(self, count, width=None, tokens=None):
        """A LayerNorm or RMSNorm over ``width`` (default d_model) of ``tokens`` (default T)."""
        h = self.arch.d_model if width is None else width
        T = self.T if tokens is None else tokens
        layernorm = self.arch.norm == "layernorm"
        flops = self.conv.norm_flops or (7.0 if layernorm else 4.0)
        vec = (2.0 if layernorm else 1.0) * h * self.aB * self.vec
        return _op(count, flops=flops * T * h, weight_bytes=vec, act_read=T * h * self.aB,
                   act_write=T * h * self.aB, bits=self.a_bits)

    def allreduce(self, count):
        """Megatron's all-reduce of a layer's output over the tensor-parallel group."""
        return _op(count, comm_bytes=jnp.where(self.tp > 1, self.T * self.arch.d_model * self.aB, 0.0),
                   bits=self.a_bits, comm_group=self.tp, comm_kind=COLLECTIVE["all_reduce"])


def step_ops(arch: Arch, quant: Quant, batch, tp, q, kv_len, conv: Conventions, *, ep=1.0, attn_dp=1.0,
             local_as_global: bool = False) -> dict[str, Op]:
    """The operator table of one step (ordered as executed); all values per device.

    ``batch`` counts the sequences of the whole model replica (``tp · attn_dp`` devices).
    ``local_as_global``: local-attention ops as if global at ``kv_len`` (the generation sum's slopes).
    """
    from dse.core.attention import attention_ops
    from dse.core.mlp import mlp_ops
    from dse.core.params import layer_layout

    b = batch / attn_dp
    s = Step(arch=arch, conv=conv, layout=layer_layout(arch), batch=b, batch_all=batch, q=q, kv_len=kv_len,
             T=b * q, tp=tp, attn_dp=attn_dp, ep=ep, wB=quant.w_bits / 8, aB=quant.a_bits / 8,
             kvB=quant.kv_bits / 8, mm_bits=jnp.maximum(quant.w_bits, quant.a_bits),
             att_bits=jnp.maximum(quant.a_bits, quant.kv_bits), a_bits=quant.a_bits,
             vec=1.0 if conv.vector_weights else 0.0,
             weight_only=jnp.where(quant.w_bits < quant.a_bits, 1.0, 0.0))
    L, h, V, T = arch.n_layers, arch.d_model, arch.vocab, s.T

    def residual(n_adds=1.0):
        # n_adds residual additions fused into one kernel: read n_adds + 1 tensors, write one.
        elems = conv.add_bytes_elems + (n_adds - 1.0)
        return _op(L, flops=n_adds * T * h, act_read=(elems - 1) * T * h * s.aB, act_write=T * h * s.aB,
                   bits=s.a_bits)

    ops: dict[str, Op] = {}
    if conv.embedding_and_final_norm:
        pos = jnp.where(arch.n_positions > 0, 1.0, 0.0)  # a learned position table adds a read and an add
        ops["embed"] = _op(1.0, flops=pos * T * h, weight_bytes=(1 + pos) * T * h * s.wB,
                           act_write=T * h * s.aB, bits=s.a_bits)
    ops["attn_norm"] = s.norm(L)
    ops.update(attention_ops(s, local_as_global))
    if arch.sandwich_norm:
        ops["post_attn_norm"] = s.norm(L)
    if arch.parallel_block:
        ops["allreduce"] = s.allreduce(L)
    else:
        ops["allreduce_attn"] = s.allreduce(L)
        ops["residual_attn"] = residual()
        ops["mlp_norm"] = s.norm(L)
    mlp, moe_allreduce_layers = mlp_ops(s)
    ops.update(mlp)
    if arch.sandwich_norm:
        ops["post_mlp_norm"] = s.norm(L)
    if arch.parallel_block:
        ops["residual"] = residual(n_adds=2.0)
    else:
        ops["allreduce_mlp"] = s.allreduce(moe_allreduce_layers)
        ops["residual_mlp"] = residual()
    if conv.embedding_and_final_norm:
        ops["final_norm"] = s.norm(1.0)
    if arch.causal and conv.lm_head:  # the LM head runs on the last new token of each sequence
        seqs = b * jnp.minimum(q, 1.0)
        n_act = seqs if conv.lm_head_act_per_sequence else jnp.minimum(q, 1.0)
        ops["lm_head"] = _op(1.0, flops=conv.lm_head_flops_per_mac * seqs * h * V / tp,
                             weight_bytes=h * V / tp * s.wB, act_read=n_act * h * s.aB,
                             act_write=n_act * V / tp * s.aB, bits=s.mm_bits, gemm_rows=seqs,
                             dequant=h * V / tp * s.weight_only)
    return ops
