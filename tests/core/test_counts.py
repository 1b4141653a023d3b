"""Counts against independent sources: published parameter counts, hand derivations, 2·N per token."""
import math

import jax
import pytest

from dse import DEFAULT, Design, Quant, Workload, evaluate, make_arch, make_hardware, param_counts
from dse.app.build import load_model
from dse.core.design import as_arrays
from dse.core.metrics import phase_tables

# Published exact counts (Hugging Face model cards/configs; issue 3 "Must show").
PUBLISHED = {
    "gpt2": 124_439_808, "gpt2_medium": 354_823_168, "gpt2_large": 774_030_080, "gpt2_xl": 1_557_611_200,
    "llama2_7b": 6_738_415_616, "llama2_13b": 13_015_864_320, "llama2_70b": 68_976_648_192,
    "llama3_8b": 8_030_261_248, "llama3_70b": 70_553_706_496, "mistral_7b": 7_241_732_096,
    "falcon_7b": 6_921_720_704,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_equals_published(name):
    assert int(param_counts(load_model(name))["params"]) == PUBLISHED[name]


def test_palm_params_match_paper():
    # PaLM paper Table 1: 540.35B parameters.
    assert abs(float(param_counts(load_model("palm_540b"))["params"]) / 1e9 - 540.35) < 0.01


# A small model small enough to count by hand: L=2, h=64, H=4, Hkv=2, d=16, ff=96, V=100.
SMALL = make_arch(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab=100)
HW = make_hardware(mem_bw=1e12, mem_capacity=1e10, peak_flops={"fp16": 1e14})


def test_small_model_per_op_counts_by_hand():
    b, P = 3, 10
    d = Design(SMALL, Quant(16, 16, 16), Workload(batch=b, prompt_len=P, gen_len=4))
    ops, _ = phase_tables(d, HW, DEFAULT)["prefill"]
    T = b * P
    # q_proj: 2·T·h·(H·d) FLOPs; weights h·H·d·2 bytes; reads T·h·2, writes T·H·d·2.
    assert float(ops["q_proj"].flops) == 2 * T * 64 * 64
    assert float(ops["q_proj"].bytes) == 64 * 64 * 2 + T * 64 * 2 + T * 64 * 2
    # k_proj writes the cache: T·Hkv·d elements at kv bits.
    assert float(ops["k_proj"].flops) == 2 * T * 64 * 32
    assert float(ops["k_proj"].kv_write) == T * 32 * 2
    # fused causal attention: pairs P(P+1)/2 per sequence and head; QK and SV 2·d each, softmax 5.
    pairs = P * (P + 1) / 2
    assert float(ops["attention"].flops) == b * 4 * pairs * (4 * 16 + 5)
    # reads Q (T·H·d), K and V (b·P·Hkv·d each), writes O (T·H·d), all 2 bytes.
    assert float(ops["attention"].bytes) == 2 * (T * 64 + 2 * b * P * 32 + T * 64)
    # gated MLP: gate/up h→ff, down ff→h; activation over ff reads 2 and writes 1 element.
    assert float(ops["gate_proj"].flops) == 2 * T * 64 * 96
    assert float(ops["down_proj"].flops) == 2 * T * 96 * 64
    assert float(ops["activation"].bytes) == 3 * T * 96 * 2
    # RMSNorm: 4 FLOPs per element; one scale vector of h.
    assert float(ops["attn_norm"].flops) == 4 * T * 64
    assert float(ops["attn_norm"].bytes) == 2 * T * 64 * 2 + 64 * 2
    # LM head on the last token of each sequence.
    assert float(ops["lm_head"].flops) == 2 * b * 64 * 100
    # decode step right after the prompt attends over P+1 keys.
    dops, _ = phase_tables(d, HW, DEFAULT)["decode"]
    assert float(dops["attention"].flops) == b * 4 * (P + 1) * (4 * 16 + 5)
    assert float(dops["attention"].kv_read) == 2 * b * (P + 1) * 32 * 2


def test_forward_flops_match_two_n_per_token():
    # Kaplan et al. 2020: forward FLOPs ≈ 2·N_non-embedding per token + 2·n_layer·n_ctx·d_attn per token.
    arch = load_model("llama2_7b")
    b, P = 2, 2048
    m = evaluate(Design(arch, Quant(), Workload(batch=b, prompt_len=P, gen_len=1)), HW)
    n = float(param_counts(arch)["params_non_embedding"])
    L, h = 32, 4096
    expected = 2 * n * b * P + 2 * L * h * b * P * (P + 1) + 2 * b * h * 32000  # causal-halved attention, LM head
    assert abs(float(m["prefill.flops"]) / expected - 1) < 0.01


_evaluate_jit = jax.jit(evaluate, static_argnames=("conv", "smooth"))


def test_generation_sum_equals_loop_of_decode_steps(h100):
    # The closed form against a second method: evaluate every decode step and add them up.
    arch = load_model("llama2_7b")
    for batch, P, G in [(1, 100, 37), (64, 3000, 50), (256, 16, 200)]:
        d = Design(arch, Quant(4, 16, 8), Workload(batch=batch, prompt_len=P, gen_len=G))
        m = evaluate(d, h100)
        loop_t, loop_f, loop_b = 0.0, 0.0, 0.0
        for i in range(G):
            di = Design(arch, d.quant, Workload(batch=batch, prompt_len=P + i, gen_len=1))
            mi = _evaluate_jit(as_arrays(di), h100)  # one compile for every step
            loop_t += float(mi["decode.time_s"]); loop_f += float(mi["decode.flops"]); loop_b += float(mi["decode.bytes"])
        assert math.isclose(float(m["generate.time_s"]), loop_t, rel_tol=1e-12)
        assert math.isclose(float(m["generate.flops"]), loop_f, rel_tol=1e-12)
        assert math.isclose(float(m["generate.bytes"]), loop_b, rel_tol=1e-12)


def test_crossover_inside_generation_is_exact(h100):
    # A batch where decode attention turns from compute- to memory-bound mid-generation.
    arch = make_arch(n_layers=2, d_model=256, n_heads=8, n_kv_heads=1, d_ff=512, vocab=1000)
    hw = make_hardware(mem_bw=1e12, mem_capacity=1e11, peak_flops={"fp16": 2e13})
    d = Design(arch, Quant(16, 16, 4), Workload(batch=512, prompt_len=1, gen_len=300))
    m = evaluate(d, hw)
    loop = sum(float(_evaluate_jit(as_arrays(Design(arch, d.quant, Workload(batch=512, prompt_len=1 + i, gen_len=1))),
                                   hw)["decode.time_s"]) for i in range(300))
    assert math.isclose(float(m["generate.time_s"]), loop, rel_tol=1e-12)


def test_tensor_parallel_allreduce_ring_formula():
    arch = load_model("llama2_7b")
    hw = make_hardware(mem_bw=2e12, mem_capacity=8e10, peak_flops={"fp16": 3e14}, link_bw=3e11, link_latency=5e-6)
    d = Design(arch, Quant(), Workload(batch=4, prompt_len=128, gen_len=1, tp=4))
    ops, times = phase_tables(d, hw, DEFAULT)["decode"]
    n = 4 * 4096 * 2  # T·h activations at 2 bytes
    ring = 5e-6 + 2 * 3 / 4 * n / 3e11  # one latency per all-reduce + the ring's bandwidth term
    assert math.isclose(float(times["allreduce_attn"].time_s), ring, rel_tol=1e-12)
    assert float(ops["q_proj"].flops) == 2 * 4 * 4096 * 4096 / 4  # heads split over 4 devices


def test_encoder_has_no_decode_and_no_cache():
    arch = load_model("bert_base")
    m = evaluate(Design(arch, Quant(8, 8, 8), Workload(batch=1, prompt_len=128, gen_len=0)), HW)
    assert float(m["kv_cache_bytes"]) == 0 and float(m["decode.flops"]) == 0
    assert float(m["prefill.flops"]) > 0


def test_shape_terms_by_hand():
    # Hardware.gemm_half_tokens and attn_efficiency (fitted on the device by task=validate):
    # a matmul on m > 1 rows runs at peak·eff·m/(m + half); one row is a matrix-vector product
    # (streaming, no penalty); attention GEMMs have (n_heads/n_kv_heads)·q rows per KV head, and
    # attn_efficiency scales their FLOP/s only (streaming the cache is ordinary traffic).
    hw = make_hardware(mem_bw=1e12, mem_capacity=1e10, peak_flops={"fp16": 1e14}, flops_efficiency=0.8,
                       gemm_half_tokens=6.0, attn_efficiency=0.5)
    b, P = 3, 10
    d = Design(SMALL, Quant(16, 16, 16), Workload(batch=b, prompt_len=P, gen_len=4))
    for phase, rows, att_rows in (("prefill", b * P, 2 * P), ("decode", b, 2)):
        ops, times = phase_tables(d, hw, DEFAULT)[phase]
        q = ops["q_proj"]
        assert float(times["q_proj"].compute_s) == pytest.approx(float(q.flops) / (1e14 * 0.8 * rows / (rows + 6)))
        a = ops["attention"]
        assert float(times["attention"].compute_s) == pytest.approx(
            float(a.flops) / (1e14 * 0.8 * 0.5 * att_rows / (att_rows + 6)))
        assert float(times["attention"].memory_s) == pytest.approx(float(a.bytes) / 1e12)
    one = Design(SMALL, Quant(16, 16, 16), Workload(batch=1, prompt_len=P, gen_len=4))
    ops, times = phase_tables(one, hw, DEFAULT)["decode"]
    assert float(times["q_proj"].compute_s) == pytest.approx(float(ops["q_proj"].flops) / (1e14 * 0.8))
