"""Mixture of experts, latent attention and local attention: per-op counts derived by hand.

Every expected number below is written out as arithmetic from the model's shapes (not taken from
dse's output); see dse/core/mlp.py and dse/core/attention.py for the rules being checked.
"""
import jax
import numpy as np
import pytest

from dse import DEFAULT, Design, Quant, Workload, evaluate, make_arch, make_hardware
from dse.core.metrics import phase_tables
from dse.core.mlp import expected_experts

HW = make_hardware(mem_bw=2e12, mem_capacity=80e9, peak_flops={"fp16": 400e12})

# 2 layers (the first dense), 8 experts top-2 of width 32, one shared expert of width 32
SMALL_MOE = make_arch(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_head=16, d_ff=128, vocab=100,
                      n_experts=8, top_k=2, d_ff_expert=32, n_shared_experts=1, n_dense_layers=1)
# one layer of latent attention: q latent 32, kv latent 16, rope 8, nope 16, v 16
SMALL_MLA = make_arch(n_layers=1, d_model=64, n_heads=4, d_ff=128, vocab=100, kv_lora_rank=16, q_lora_rank=32,
                      qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16)


def _tables(arch, batch=2, prompt=8, **workload):
    return phase_tables(Design(arch, Quant(16, 16, 16), Workload(batch=batch, prompt_len=prompt, gen_len=4,
                                                                   **workload)), HW, DEFAULT)


def test_small_moe_ops_by_hand():
    t = _tables(SMALL_MOE)
    pre, dec = t["prefill"][0], t["decode"][0]
    T = 2 * 8  # prefill tokens
    assert pre["router"].count == 1 and pre["gate_proj"].count == 1  # one MoE, one dense layer
    assert pre["router"].flops == 2 * T * 64 * 8
    assert pre["router"].weight_bytes == 64 * 8 * 2
    # 16 tokens x top-2 = 32 expert passes of a SwiGLU of width 32: 3 matmuls (6·h MACs... 2 FLOPs each) + 5/elem
    assert pre["experts"].flops == 32 * 32 * (2 * 3 * 64 + 5)
    touched = 8 * (1 - (1 - 2 / 8) ** 16)
    assert pre["experts"].weight_bytes == pytest.approx(touched * 3 * 64 * 32 * 2, rel=1e-12)
    assert pre["experts"].act_read == 32 * 64 * 2
    assert pre["shared_experts"].flops == T * 32 * (2 * 3 * 64 + 5)
    assert pre["shared_experts"].weight_bytes == 3 * 64 * 32 * 2
    assert pre["gate_proj"].flops == 2 * T * 64 * 128
    # decode: 2 tokens touch 8·(1 − 0.75²) = 3.5 experts in expectation
    assert dec["experts"].flops == 2 * 2 * 32 * (2 * 3 * 64 + 5)
    assert dec["experts"].weight_bytes == pytest.approx(3.5 * 3 * 64 * 32 * 2, rel=1e-12)
    assert dec["router"].flops == 2 * 2 * 64 * 8
    # attention of the two layers: GQA, 4 query heads on 2 KV heads of 16
    assert dec["attention"].flops == 4 * 2 * 4 * 9 * 16 + 5 * 2 * 4 * 9  # 9 keys: 8 cached + the new one
    assert dec["attention"].kv_read == 2 * (2 * 9 * 2 * 16 * 2)


def test_small_mla_ops_by_hand():
    t = _tables(SMALL_MLA)
    pre, dec = t["prefill"][0], t["decode"][0]
    T = 16
    assert pre["q_proj"].count == 0 and pre["k_proj"].count == 0 and pre["kv_a_proj"].count == 1
    assert pre["q_a_proj"].flops == 2 * T * 64 * 32
    assert pre["q_b_proj"].flops == 2 * T * 32 * 4 * (16 + 8)
    assert pre["kv_a_proj"].flops == 2 * T * 64 * (16 + 8)
    assert pre["kv_a_proj"].kv_write == T * (16 + 8) * 2  # the latent and the rotary key go to the cache
    # prefill, expanded: the 16 latents are up-projected to 4 heads of K (16) and V (16)
    assert pre["kv_b_proj"].flops == 2 * 16 * 16 * 4 * (16 + 16)
    assert pre["kv_b_proj"].weight_bytes == 16 * 4 * 32 * 2
    pairs = 8 * 9 / 2
    assert pre["attention"].flops == 2 * 2 * 4 * pairs * ((16 + 8) + 16) + 5 * 2 * 4 * pairs
    assert pre["attention"].kv_read == 2 * 8 * (4 * 16 * 2 + 8 * 2) + 2 * 8 * 4 * 16 * 2
    # decode, absorbed: W_UK into the query, W_UV into the output; attention in the 16-wide latent
    assert dec["kv_b_proj"].flops == 2 * 2 * 4 * 16 * (16 + 16)
    assert dec["attention"].flops == 2 * 2 * 4 * 9 * ((16 + 8) + 16) + 5 * 2 * 4 * 9
    assert dec["attention"].kv_read == 2 * 9 * (16 + 8) * 2  # one shared latent per token
    assert dec["attention"].gemm_rows == 4  # all 4 heads share the latent: an MQA-shaped product
    assert dec["o_proj"].flops == 2 * 2 * 4 * 16 * 64


def test_expected_distinct_experts_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for E, k, T in [(8, 2, 1), (8, 2, 3), (64, 6, 10), (256, 8, 16), (128, 4, 64)]:
        trials = 4000
        counts = [len(np.unique(np.concatenate([rng.choice(E, k, replace=False) for _ in range(T)])))
                  for _ in range(trials)]
        # each token picks k distinct experts, independently of the other tokens
        assert float(expected_experts(E, k, T)) == pytest.approx(np.mean(counts), rel=0.01)


def _kv_bytes(model, context, batch=1):
    return float(evaluate(Design(model, Quant(16, 16, 16), Workload(batch=batch, prompt_len=context, gen_len=0)),
                          HW)["kv_cache_bytes"])


def test_kv_cache_of_latent_and_windowed_models():
    from dse.app.build import build_arch
    ds = build_arch({"n_layers": 61, "d_model": 7168, "n_heads": 128, "d_ff": 18432, "vocab": 129280,
                     "n_experts": 256, "top_k": 8, "d_ff_expert": 2048, "n_shared_experts": 1, "n_dense_layers": 3,
                     "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
                     "v_head_dim": 128})
    assert _kv_bytes(ds, 1000) == 1000 * 61 * (512 + 64) * 2
    oss = make_arch(n_layers=36, d_model=2880, n_heads=64, n_kv_heads=8, d_head=64, d_ff=2880, vocab=201088,
                    n_experts=128, top_k=4, d_ff_expert=2880, window=128, global_every=2)
    ctx = 65536
    hand = (18 * ctx + 18 * 128) * 2 * 8 * 64 * 2  # 18 global layers hold 64k entries, 18 windowed hold 128
    assert _kv_bytes(oss, ctx) == hand


def _loop_generation(design, hw):
    """The generation as an explicit loop of decode steps (the definition the closed form must meet)."""
    from dse.core.ops import step_ops
    from dse.core.roofline import op_times
    a, q, w = design.arch, design.quant, design.workload
    total_t = total_f = total_b = 0.0
    for i in range(int(w.gen_len)):
        ops = step_ops(a, q, w.batch, w.tp, 1.0, w.prompt_len + i, DEFAULT)
        times = op_times(ops, hw, w.tp, DEFAULT)
        total_t += sum(float(o.count * times[k].time_s) for k, o in ops.items())
        total_f += sum(float(o.count * o.flops) for o in ops.values())
        total_b += sum(float(o.count * o.bytes) for o in ops.values())
    return total_t, total_f, total_b


@pytest.mark.parametrize("local", [{"window": 48, "global_every": 2}, {"attn_chunk": 32, "global_every": 4},
                                   {"window": 16}])
@pytest.mark.parametrize("prompt", [10, 40, 100])
def test_local_attention_generation_sum_equals_loop(local, prompt):
    # a small model whose attention turns from memory- to compute-bound inside the generation
    arch = make_arch(n_layers=4, d_model=256, n_heads=8, n_kv_heads=2, d_ff=512, vocab=1000, **local)
    hw = make_hardware(mem_bw=1e9, mem_capacity=1e12, peak_flops={"fp16": 2e11}, kernel_overhead_s=1e-6)
    d = Design(arch, Quant(16, 16, 16), Workload(batch=8, prompt_len=prompt, gen_len=70))
    m = evaluate(d, hw)
    t, f, b = _loop_generation(d, hw)
    assert float(m["generate.time_s"]) == pytest.approx(t, rel=1e-9)
    assert float(m["generate.flops"]) == pytest.approx(f, rel=1e-9)
    assert float(m["generate.bytes"]) == pytest.approx(b, rel=1e-9)


def test_mixtral_decode_reads_active_then_all_experts():
    from dse.app.build import build_arch
    mix = build_arch({"n_layers": 32, "d_model": 4096, "n_heads": 32, "n_kv_heads": 8, "d_head": 128, "d_ff": 14336,
                      "vocab": 32000, "n_experts": 8, "top_k": 2, "d_ff_expert": 14336})
    expert = 3 * 4096 * 14336  # one SwiGLU expert's parameters
    non_expert = 46_702_792_704 - 32 * 8 * expert - 32000 * 4096  # everything but the experts and the embedding table
    for batch, experts_read in [(1, 2), (256, 8 * (1 - 0.75 ** 256))]:
        d = Design(mix, Quant(16, 16, 16), Workload(batch=batch, prompt_len=512, gen_len=1))
        ops = phase_tables(d, HW, DEFAULT)["decode"][0]
        weights = sum(float(o.count * o.weight_bytes) for o in ops.values())
        hand = 2 * (non_expert + 32 * experts_read * expert + batch * 4096)  # + one embedding row per sequence
        assert weights == pytest.approx(hand, rel=0.01)
        assert float(ops["experts"].count * ops["experts"].weight_bytes) == pytest.approx(
            2 * 32 * experts_read * expert, rel=1e-9)
    # batch 1 reads the active parameters (12.75 B without the input embedding) and one embedding row
    assert 2 * (12_748_853_248 + 4096) == pytest.approx(2 * (non_expert + 32 * 2 * expert + 4096), rel=1e-12)


@pytest.mark.parametrize("override, field", [
    ({"top_k": 9}, "model.top_k"),
    ({"window": -4}, "model.window"),
    ({"v_head_dim": 0}, "model.v_head_dim"),
    ({"d_head": 100}, "model.d_head"),
])
def test_invalid_architectures_name_the_field(override, field):
    from dse import DesignError, validate_design
    base = dict(n_layers=2, d_model=64, n_heads=4, d_ff=128, vocab=100, n_experts=8, top_k=2, d_ff_expert=32,
                kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16)
    base.update(override)
    with pytest.raises(DesignError, match=field.replace(".", r"\.")):
        validate_design(Design(make_arch(**base)))


def test_ep_must_divide_experts():
    from dse import DesignError, validate_design
    with pytest.raises(DesignError, match=r"workload\.ep=3: must divide model\.n_experts=8"):
        validate_design(Design(SMALL_MOE, Quant(), Workload(tp=4, ep=3)))


def test_expert_parallel_all_to_all_and_memory():
    # 8 experts over ep = 4 shards of a group of tp 1 × attn_dp 4: tokens dispatched and combined
    d = Design(SMALL_MOE, Quant(16, 16, 16), Workload(batch=8, prompt_len=8, gen_len=1, tp=1, ep=4, attn_dp=4))
    ops = phase_tables(d, HW, DEFAULT)["decode"][0]
    T = 8 / 4  # decode tokens of one attention replica
    assert float(ops["moe_dispatch"].comm_bytes) == T * 2 * 64 * 2  # each token's 2 copies of 64 fp16 values
    assert float(ops["moe_dispatch"].comm_group) == 4
    assert float(ops["allreduce_mlp"].count) == 1  # the dense layer; the MoE layer combines by all-to-all
    assert float(ops["experts"].flops) == 8 * 2 * 32 / 4 * (2 * 3 * 64 + 5)  # a quarter of the group's work


from hypothesis import given, settings, strategies as st  # noqa: E402


def _latency_and_loss(d):
    m = evaluate(d, HW, smooth=True)
    return m["tpot_s"] + m["ttft_s"] + m["loss_proxy"]


_grad_of_latency_and_loss = jax.jit(jax.grad(_latency_and_loss))  # one compile serves every example


@settings(max_examples=12, deadline=None)
@given(E=st.sampled_from([0, 8, 64]), k=st.integers(1, 8), f=st.sampled_from([256, 1024]),
       rkv=st.sampled_from([0, 128, 512]), window=st.sampled_from([0, 64, 4096]), chunk=st.sampled_from([0, 256]),
       every=st.integers(0, 4), batch=st.integers(1, 256), prompt=st.integers(1, 8192), ep=st.sampled_from([1, 2]),
       bits=st.floats(3.0, 16.0))
def test_gradients_finite_over_every_new_knob(E, k, f, rkv, window, chunk, every, batch, prompt, ep, bits):
    import jax
    import jax.numpy as jnp
    k = min(k, E) if E else 0
    chunk = 0 if window else chunk
    mla_dims = dict(kv_lora_rank=rkv, q_lora_rank=rkv, qk_rope_head_dim=32, qk_nope_head_dim=96, v_head_dim=128) if rkv else {}
    arch = make_arch(n_layers=8, d_model=1024, n_heads=8, n_kv_heads=8 if rkv else 2, d_head=128, d_ff=2048,
                     vocab=32000, n_experts=E, top_k=k, d_ff_expert=f, n_shared_experts=1 if E else 0,
                     n_dense_layers=1 if E else 0, window=window, attn_chunk=chunk, global_every=every, **mla_dims)
    d = Design(arch, Quant(bits, 16.0, bits), Workload(batch=batch, prompt_len=prompt, gen_len=64, tp=2,
                                                      ep=ep if E else 1, attn_dp=2))
    d = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), d)
    g = _grad_of_latency_and_loss(d)
    for leaf in jax.tree.leaves(g):
        assert np.isfinite(np.asarray(leaf)).all()
