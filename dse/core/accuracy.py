"""Differentiable accuracy proxies: an expected loss (nats/token) of a design.

``loss_proxy = L(N, D) + Δw(w_bits) + Δa(a_bits) + Δkv(kv_bits) + Δgqa(n_heads / n_kv_heads)``

- ``L(N, D) = E + A/N^α + B/D^β`` (Hoffmann et al. 2022, Eq. 10; or the Besiroglu et al. 2024
  refit), N the total parameter count, D the training-token budget.
- A quantization penalty ``Δ(bits) = c · 2^(−k·bits)`` nats, fitted through two published
  perplexities (``Δ = ln(ppl_q / ppl_ref)``; Llama-2-7B WikiText-2, AWQ paper, Lin et al. 2023):
  vanishes at 16 bits, grows fast below 4.
- ``Δgqa = L(N, D) · c · log2(n_heads/n_kv_heads)^p / score_mha``: the relative drop of the GQA
  paper's average score (Ainslie et al. 2023, Table 1: MHA 47.2, GQA-8 47.1, MQA 46.6 on T5-XXL
  with 64 heads) applied as the same relative rise of the loss.

Sources and status of each constant: ../shared/data/accuracy_proxies.md; YAML in conf/accuracy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from dse.core.design import Arch, Quant


@dataclass(frozen=True)
class AccuracyParams:
    E: float = 1.69
    A: float = 406.4
    B: float = 410.7
    alpha: float = 0.34
    beta: float = 0.28
    train_tokens: float = 2.0e12
    w_c: float = 0.0
    w_k: float = 1.0
    a_c: float = 0.0
    a_k: float = 1.0
    kv_c: float = 0.0
    kv_k: float = 1.0
    gqa_c: float = 0.0
    gqa_p: float = 2.0
    gqa_score_ref: float = 47.2


AccuracyParams = jax.tree_util.register_dataclass(
    AccuracyParams, data_fields=[f for f in AccuracyParams.__dataclass_fields__], meta_fields=[])


def fit_bits_penalty(bits_hi: float, ppl_hi: float, bits_lo: float, ppl_lo: float, ppl_ref: float):
    """(c, k) of Δ(bits) = c·2^(−k·bits) through Δ(bits_hi) and Δ(bits_lo), Δ = ln(ppl/ppl_ref)."""
    d_hi, d_lo = math.log(ppl_hi / ppl_ref), math.log(ppl_lo / ppl_ref)
    if not (d_lo > d_hi > 0 and bits_hi > bits_lo):
        raise ValueError("need ppl_lo > ppl_hi > ppl_ref at bits_lo < bits_hi to fit a decaying penalty")
    k = math.log2(d_lo / d_hi) / (bits_hi - bits_lo)
    return d_hi * 2.0 ** (k * bits_hi), k


def fit_gqa_penalty(ratio_1: float, score_1: float, ratio_2: float, score_2: float, score_ref: float):
    """(c, p) of Δscore(r) = c·log2(r)^p through two (group ratio, score) points."""
    x1, x2 = math.log2(ratio_1), math.log2(ratio_2)
    d1, d2 = score_ref - score_1, score_ref - score_2
    p = math.log(d2 / d1) / math.log(x2 / x1)
    return d1 / x1 ** p, p


def bits_penalty(bits, c, k):
    return c * jnp.exp2(-k * bits)


def scaling_loss(n_params, acc: AccuracyParams):
    return acc.E + acc.A / n_params ** acc.alpha + acc.B / acc.train_tokens ** acc.beta


def accuracy_terms(arch: Arch, quant: Quant, n_params, acc: AccuracyParams) -> dict:
    """Each proxy term (nats/token) and their sum ``loss_proxy``."""
    base = scaling_loss(n_params, acc)
    ratio = jnp.maximum(arch.n_heads / arch.n_kv_heads, 1.0)
    gqa = base * acc.gqa_c * jnp.log2(ratio) ** acc.gqa_p / acc.gqa_score_ref
    terms = {
        "loss.scaling": base,
        "loss.w_quant": bits_penalty(quant.w_bits, acc.w_c, acc.w_k),
        "loss.a_quant": bits_penalty(quant.a_bits, acc.a_c, acc.a_k),
        "loss.kv_quant": bits_penalty(quant.kv_bits, acc.kv_c, acc.kv_k),
        "loss.gqa": gqa,
    }
    terms["loss_proxy"] = sum(terms.values())
    return terms
