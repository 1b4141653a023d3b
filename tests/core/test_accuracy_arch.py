"""Accuracy proxies of the issue-11 knobs (MoE, MLA, windows) against the published points they are fitted
to; exactly neutral for dense, full-attention models; finite gradients over every new knob, zeros included."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import dse
from dse.app.build import build_accuracy, load_group
from dse.core.accuracy import accuracy_terms, scaling_loss
from dse.core.design import DesignError, Quant
from dse.core.params import param_counts

OLD_TERMS = ("loss.scaling", "loss.w_quant", "loss.a_quant", "loss.kv_quant", "loss.gqa")
NEW_TERMS = ("loss.moe", "loss.mla", "loss.window")

# DeepSeekMoE (Dai et al. 2024, arXiv 2401.06066) Tables 3 and 6: (total, active, dense equivalent) at equal data.
DEEPSEEKMOE = ((16.4e9, 2.8e9, 6.9e9), (144.6e9, 22.2e9, 67.4e9), (142.3e9, 12.2e9, 67.4e9))
# DeepSeek-V2 (arXiv 2405.04434) Table 9: KV elements per token, BBH / MMLU / C-Eval / CMMLU.
V2_SMALL = (110.6e3, 15.6e3, (37.9, 48.7, 51.6, 52.3), (39.0, 50.0, 50.9, 53.4))
V2_LARGE = (860.2e3, 34.6e3, (46.6, 57.5, 57.9, 60.7), (50.7, 59.0, 59.2, 62.5))


@pytest.fixture(scope="module")
def acc():
    return dse.load_accuracy("hoffmann2022")


def _terms(arch, acc, n=None):
    n = param_counts(arch)["params"] if n is None else n
    return {k: float(v) for k, v in accuracy_terms(arch, Quant(), n, acc).items()}


def _deepseekmoe_16b(**kw):
    # deepseek-ai/deepseek-moe-16b-base config.json: 28 layers, hidden 2048, 16 heads of 128, 64 routed experts
    # of width 1408 (top-6) and 2 shared, the first layer dense (10944), vocabulary 102400, untied head.
    kw = {"n_experts": 64, "top_k": 6, "d_ff_expert": 1408, "n_shared_experts": 2, "n_dense_layers": 1, **kw}
    return dse.make_arch(n_layers=28, d_model=2048, n_heads=16, n_kv_heads=16, d_head=128, d_ff=10944,
                         vocab=102400, **kw)


def test_moe_phi_is_the_least_squares_fit_of_the_deepseekmoe_points(acc):
    x = [math.log(t / a) for t, a, _ in DEEPSEEKMOE]
    y = [math.log(d / a) for _, a, d in DEEPSEEKMOE]
    phi = sum(i * j for i, j in zip(x, y)) / sum(i * i for i in x)  # normal equation through the origin
    assert math.isclose(acc.moe_phi, phi, rel_tol=1e-12)
    assert 0.5 < phi < 0.7  # between the geometric mean of active and total (0.5) and the total (1)
    for (t, a, d) in DEEPSEEKMOE:  # residuals: N_eff within 22% of the dense model it matched
        n_eff = a * (t / a) ** phi
        assert abs(n_eff / d - 1) < 0.22, (t, a, n_eff, d)
    # Table 6 Pile loss at 245B tokens: 145B (22.2B active) 1.876 < 142B half-activated (12.2B) 1.888.
    a = dse.AccuracyParams(**{**acc.__dict__, "train_tokens": 245e9})
    l145 = float(scaling_loss(22.2e9 * (144.6 / 22.2) ** phi, a))
    l142 = float(scaling_loss(12.2e9 * (142.3 / 12.2) ** phi, a))
    assert l145 < l142


def test_moe_term_through_a_deepseekmoe_16b_design(acc):
    arch = _deepseekmoe_16b()
    c = param_counts(arch)
    # the paper's counts at their rounding: ~16.4B total, ~2.8B activated (embedding table included)
    total, active = float(c["params"]), float(c["params_active_with_embedding"])
    assert round(total / 1e9, 1) == 16.4 and round(active / 1e9, 1) == 2.8
    t = _terms(arch, acc)
    n_eff = active * (total / active) ** acc.moe_phi
    assert math.isclose(t["loss.scaling"] + t["loss.moe"], float(scaling_loss(n_eff, acc)), rel_tol=1e-5)
    assert abs(n_eff / 6.9e9 - 1) < 0.25  # Table 3: comparable with DeepSeek 7B (6.9B) at the same 2T tokens
    assert n_eff > 6.7e9  # Table 4: better Pile BPB (0.74) than LLaMA2 7B (6.7B, 0.76), also 2T tokens
    assert t["loss.moe"] > 0  # worse than a dense model of its total size
    # more routed experts per token -> more active parameters -> lower loss, smoothly
    assert _terms(_deepseekmoe_16b(top_k=8), acc)["loss.moe"] < t["loss.moe"]
    # top_k = n_experts: every parameter active -> the dense model of that size
    assert abs(_terms(_deepseekmoe_16b(top_k=64), acc)["loss.moe"]) < 1e-6


def _mla_arch(heads, **kw):
    kw = {"kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128, **kw}
    return dse.make_arch(n_layers=27, d_model=2048, n_heads=heads, n_kv_heads=heads, d_head=192, d_ff=10944,
                         vocab=102400, **kw)


def test_mla_gain_reproduces_deepseek_v2_table_9(acc):
    for heads, (kv_mha, kv_mla, mha, mla), tol in ((16, V2_SMALL, 1e-2), (56, V2_LARGE, 1e-9)):
        # the design's MHA/MLA KV ratio equals the table's at its rounding (16*256/576 vs 110.6K/15.6K)
        assert math.isclose(heads * 256 / 576, kv_mha / kv_mla, rel_tol=5e-3)
        t = _terms(_mla_arch(heads), acc)
        gain = -t["loss.mla"] / (t["loss.scaling"] + t["loss.moe"])
        published = (sum(mla) / 4 - sum(mha) / 4) / (sum(mha) / 4)  # 1.47% and 3.91%
        assert math.isclose(gain, published, rel_tol=tol), (heads, gain, published)
    # held at the largest published ratio: DeepSeek-V3's 128 heads get the large-MoE gain, not more
    v3 = _terms(dse.load_model("deepseek_v3"), acc)
    large = (sum(V2_LARGE[3]) - sum(V2_LARGE[2])) / sum(V2_LARGE[2])
    assert math.isclose(-v3["loss.mla"] / (v3["loss.scaling"] + v3["loss.moe"]), large, rel_tol=1e-5)
    assert _terms(_mla_arch(16, kv_lora_rank=0), acc)["loss.mla"] == 0.0


def _gemma2_9b(**kw):
    # Gemma 2 9B (arXiv 2408.00118 Table 1; HF google/gemma-2-9b): 42 layers, local and global alternating
    kw = {"window": 4096, "global_every": 2, **kw}
    kw = {"n_layers": 42, **kw}
    return dse.make_arch(d_model=3584, n_heads=16, n_kv_heads=8, d_head=256, d_ff=14336,
                         vocab=256000, tied_embeddings=True, sandwich_norm=True, **kw)


def test_window_penalty_reproduces_gemma2_table_10(acc):
    ref = _terms(_gemma2_9b(), acc)["loss.window"]
    ppl = {w: 1.63 * math.exp(_terms(_gemma2_9b(window=w), acc)["loss.window"] - ref) for w in (4096, 2048, 1024)}
    assert math.isclose(ppl[1024], 1.64, rel_tol=1e-6)  # fitted through this point
    assert round(ppl[2048], 2) == 1.63 and round(ppl[4096], 2) == 1.63  # the table's rounding holds
    assert _terms(_gemma2_9b(window=0, global_every=0), acc)["loss.window"] == 0.0
    assert _terms(_gemma2_9b(window=8192), acc)["loss.window"] == 0.0  # the window covers the context


def test_window_penalty_within_gemma3_minimal_changes(acc):
    # Gemma 3 (arXiv 2503.19786) Fig. 3: local:global 1:1 -> 7:1 at window 1024, Fig. 4: window 4096 -> 512 at
    # 3:1, both "minimal" perplexity changes (axes of +-0.1 and +-0.02 perplexity).
    g = lambda **kw: _terms(_gemma2_9b(n_layers=48, **kw), acc)["loss.window"]  # noqa: E731
    assert 0 < g(window=1024, global_every=8) - g(window=1024, global_every=2) < 0.01
    assert 0 < g(window=512, global_every=4) - g(window=4096, global_every=4) < 0.02
    # a chunk of C tokens counts as a window of C/2 (Llama 4: chunks of 8192, every 4th layer global)
    assert g(attn_chunk=8192, window=0, global_every=4) == pytest.approx(g(window=4096, global_every=4), rel=1e-6)


CATALOG_DENSE = ("llama2_7b", "llama3_70b", "gpt2", "opt_6_7b", "bert_base", "falcon_7b", "qwen3_32b", "palm_540b")


@pytest.mark.parametrize("name", CATALOG_DENSE)
def test_dense_full_attention_models_are_unchanged(name, acc):
    arch = dse.load_model(name)
    for n in (1.3e9, float(param_counts(arch)["params"])):
        def f(n):  # the new loss_proxy and the pre-issue-11 one (the sum of the five old terms), one compile
            t = accuracy_terms(arch, Quant(4.0, 8.0, 3.0), n, acc)
            return t, sum(t[k] for k in OLD_TERMS)

        t, old = jax.jit(f)(n)
        assert all(float(t[k]) == 0.0 for k in NEW_TERMS)
        assert float(t["loss_proxy"]) == float(old)  # bit for bit


KNOBS = ("n_experts", "top_k", "d_ff_expert", "n_shared_experts", "n_dense_layers", "kv_lora_rank",
         "qk_rope_head_dim", "window", "attn_chunk", "global_every")


@pytest.mark.parametrize("base_name", ("deepseek_v3", "llama2_7b"))
def test_gradients_finite_over_every_new_knob(base_name, acc):
    base = dse.load_model(base_name)

    def total(x):
        arch = dse.Arch(**{**base.__dict__, **{k: x[i] for i, k in enumerate(KNOBS)}})
        return accuracy_terms(arch, Quant(), param_counts(arch)["params"], acc)["loss_proxy"]

    g = jax.jit(jax.grad(total))
    rng = np.random.default_rng(0)
    corners = [np.zeros(len(KNOBS)), np.asarray([getattr(base, k) for k in KNOBS], float)]
    for _ in range(6):
        x = np.asarray([rng.choice([0.0, rng.uniform(1, 300)]) for _ in KNOBS])
        x[1] = min(x[1], x[0])  # top_k <= n_experts
        corners.append(x)
    for x in corners:
        grad = np.asarray(g(jnp.asarray(x, jnp.float32)))
        assert np.isfinite(grad).all(), (x, grad)


_V3, _ACC = dse.load_model("deepseek_v3"), dse.load_accuracy("hoffmann2022")


def _proxy_of_knobs(x):
    arch = dse.Arch(**{**_V3.__dict__, **{k: x[i] for i, k in enumerate(KNOBS)}})
    q = Quant(x[len(KNOBS)], x[len(KNOBS) + 1], x[len(KNOBS) + 2])
    return accuracy_terms(arch, q, param_counts(arch)["params"], _ACC)["loss_proxy"]


_VALUE, _GRAD = jax.jit(_proxy_of_knobs), jax.jit(jax.grad(_proxy_of_knobs))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 256), st.floats(0.0, 1.0), st.integers(1, 8192), st.integers(0, 4), st.integers(0, 8),
       st.sampled_from([0, 64, 256, 512, 1024]), st.sampled_from([0, 32, 64]), st.integers(0, 1 << 17),
       st.sampled_from([0, 2048, 8192]), st.integers(0, 8), st.floats(1.0, 32.0))
def test_gradients_finite_hypothesis(e, k_frac, f, shared, dense, rank, rope, window, chunk, every, bits):
    x = jnp.asarray([e, round(k_frac * e), f, shared, dense, rank, rope, window, chunk, every, bits, bits, bits],
                    jnp.float32)
    assert np.isfinite(float(_VALUE(x)))
    assert np.isfinite(np.asarray(_GRAD(x))).all()


def test_bad_points_get_one_clear_error():
    cfg = load_group("accuracy", "hoffmann2022")
    cfg.moe_points = [{"total": 1e9, "active": 2e9, "dense": 1e9}]
    with pytest.raises(DesignError, match=r"accuracy.moe_points\[0\].active=2000000000.0: must be below total"):
        build_accuracy(cfg)
    cfg = load_group("accuracy", "hoffmann2022")
    cfg.window_ppl.ref_window = 333
    with pytest.raises(DesignError, match=r"accuracy.window_ppl.ref_window=333.0"):
        build_accuracy(cfg)
