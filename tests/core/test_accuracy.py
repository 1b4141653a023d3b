"""Accuracy proxies reproduce the published numbers they are fitted to; gradients finite over the box."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dse
from dse.core.accuracy import accuracy_terms, scaling_loss
from dse.core.design import Quant


@pytest.fixture(scope="module")
def acc():
    return dse.load_accuracy("hoffmann2022")


def test_weight_quant_penalty_reproduces_llama2_7b_perplexities(acc):
    # AWQ paper (Lin et al. 2023), Llama-2-7B WikiText-2: FP16 5.47, INT4-g128 RTN 5.73, INT3 RTN 6.66.
    arch = dse.load_model("llama2_7b")
    for bits, ppl in ((4, 5.73), (3, 6.66)):
        t = accuracy_terms(arch, Quant(bits, 16, 16), 6.7e9, acc)
        assert math.isclose(5.47 * math.exp(float(t["loss.w_quant"])), ppl, rel_tol=1e-9)
    assert float(accuracy_terms(arch, Quant(16, 16, 16), 6.7e9, acc)["loss.w_quant"]) < 1e-8  # fp16 is the reference
    for method, points in (("gptq", {4: 5.69, 3: 6.43}), ("awq", {4: 5.60, 3: 6.24})):
        from dse.app.build import build_accuracy, load_group
        cfg = load_group("accuracy", "hoffmann2022")
        cfg.w_method = method
        a = build_accuracy(cfg)
        for bits, ppl in points.items():
            t = accuracy_terms(arch, Quant(bits, 16, 16), 6.7e9, a)
            assert math.isclose(5.47 * math.exp(float(t["loss.w_quant"])), ppl, rel_tol=1e-9)


def test_kv_and_gqa_penalties_reproduce_their_sources(acc):
    # KVQuant: +0.1 perplexity at 3 bits (as a bound). GQA paper Table 1 (T5-XXL, 64 heads):
    # GQA-8 47.1 and MQA 46.6 against MHA 47.2 -> the same relative rise of the loss.
    arch = dse.load_model("llama2_7b")
    t = accuracy_terms(arch, Quant(16, 16, 3), 6.7e9, acc)
    assert math.isclose(5.47 * math.exp(float(t["loss.kv_quant"])) - 5.47, 0.1, rel_tol=1e-9)
    for kv, score in ((8, 47.1), (1, 46.6)):
        a = dse.make_arch(n_layers=24, d_model=4096, n_heads=64, n_kv_heads=kv, d_ff=10240, vocab=32000)
        # relative to the MHA model the points were uptrained from (its K/V projections for all 64 heads)
        base = float(scaling_loss(6.7e9 + 24 * 2 * 4096 * 64 * (64 - kv), acc))
        rel = float(accuracy_terms(a, Quant(), 6.7e9, acc)["loss.gqa"]) / base
        assert math.isclose(rel, (47.2 - score) / 47.2, rel_tol=1e-9)


def test_chinchilla_fit_value(acc):
    # L(N, D) = E + A/N^0.34 + B/D^0.28 at Chinchilla's own N = 70e9, D = 1.4e12 (hand computed).
    expected = 1.69 + 406.4 / 70e9 ** 0.34 + 410.7 / 1.4e12 ** 0.28
    a = dse.AccuracyParams(**{**acc.__dict__, "train_tokens": 1.4e12})
    assert math.isclose(float(scaling_loss(70e9, a)), expected, rel_tol=1e-12)
    epoch = dse.load_accuracy("besiroglu2024")
    assert epoch.E == 1.8172 and epoch.alpha == 0.3478


def test_gradients_finite_over_the_whole_box(acc):
    arch = dse.load_model("llama2_7b")

    def total(x):
        a = dse.Arch(**{**arch.__dict__, "n_kv_heads": x[0]})
        return accuracy_terms(a, Quant(x[1], x[2], x[3]), x[4], acc)["loss_proxy"]

    g = jax.jit(jax.grad(total))
    for kv in np.linspace(1, 32, 7):
        for bits in np.linspace(1, 32, 7):
            x = jnp.asarray([kv, bits, bits, bits, 1e9])
            assert np.isfinite(np.asarray(g(x))).all()
