"""Published numbers: LLM-Viewer's worked example, the BERT-Base survey table, FasterTransformer."""
import csv

import pytest

from dse import LLM_VIEWER, Design, Quant, Workload, evaluate, make_hardware
from dse.app.build import load_hardware, load_model
from dse.core.metrics import phase_tables

from tests.conftest import DATA

A6000 = make_hardware(mem_bw=768e9, mem_capacity=48e9, peak_flops={"fp16": 154.8385e12, "int8": 2 * 154.8385e12})


def test_llm_viewer_worked_example_to_the_digit():
    # Issue 3, item 6: Llama-2-7b decode at s=1024, batch 1, 16/16/16 bits on an A6000.
    d = Design(load_model("llama2_7b"), Quant(16, 16, 16), Workload(batch=1, prompt_len=1024, gen_len=1))
    ops, _ = phase_tables(d, A6000, LLM_VIEWER)["decode"]
    assert (ops["q_proj"].flops, ops["q_proj"].bytes) == (33_554_432, 33_570_816)
    assert (ops["gate_proj"].flops, ops["gate_proj"].bytes) == (90_177_536, 90_207_744)
    assert ops["qk_matmul"].flops == 8_388_608
    assert (ops["softmax"].flops, ops["softmax"].bytes) == (163_840, 131_072)
    assert (ops["lm_head"].flops, ops["lm_head"].bytes) == (131_072_000, 262_216_192)
    m = evaluate(d, A6000, LLM_VIEWER)
    assert float(m["decode.flops"]) == 13_627_555_840
    assert round(float(m["decode.time_s"]) * 1e3, 3) == 17.927
    # KV cache rule: 2·L·b·s·h·(Hkv/H)·kv/8 at the final context s = 1024 + 1.
    assert float(m["kv_cache_bytes"]) == 2 * 32 * 1 * 1025 * 4096 * 2


def test_llm_viewer_prefill_rules():
    # Prefill QKᵀ: FLOPs 2·s²·d·H·b; bytes s·d·b·Hkv·a/8 + s²·b·H·a/8 + s·d·b·Hkv·kv/8 (GQA: Hkv=8).
    s, b = 512, 2
    d = Design(load_model("llama3_8b"), Quant(16, 16, 8), Workload(batch=b, prompt_len=s, gen_len=1))
    ops, _ = phase_tables(d, A6000, LLM_VIEWER)["prefill"]
    assert ops["qk_matmul"].flops == 2 * s * s * 128 * 32 * b
    assert ops["qk_matmul"].bytes == s * 128 * b * 8 * 2 + s * s * b * 32 * 2 + s * 128 * b * 8 * 1
    assert ops["sv_matmul"].bytes == s * s * b * 32 * 2 + s * 128 * b * 32 * 2 + s * 128 * b * 8 * 1
    assert ops["softmax"].flops == 5 * b * 32 * s * s
    assert ops["k_proj"].bytes == 4096 * 1024 * 2 + 4096 * b * s * 2 + 1024 * b * s * 1
    assert ops["activation"].flops == 2 * 4096 * b * s  # over d_model, not d_ff


def _survey(quantity):
    with open(DATA / "transformer_survey_endtoend.csv") as f:
        return {int(r["seq_len"]): float(r["value"]) for r in csv.DictReader(f)
                if r["quantity"] == quantity and r["model"] == "BERT-Base"}


@pytest.mark.parametrize("seq_len", [128, 256, 512, 1024, 2048, 4096])
def test_bert_base_flops_within_3_percent_of_survey(seq_len):
    # Kim et al. 2023 Fig. 4: batch 1, 8-bit, MAC = 2 FLOPs, encoder (non-causal) over seq_len tokens.
    published = _survey("GFLOPs")[seq_len]
    d = Design(load_model("bert_base"), Quant(8, 8, 8), Workload(batch=1, prompt_len=seq_len, gen_len=0))
    m = evaluate(d, load_hardware("a100_80gb"))
    assert abs(float(m["prefill.flops"]) / 1e9 / published - 1) < 0.03


def test_fastertransformer_13b_held_out_within_30_percent():
    # Measured end-to-end latencies (FasterTransformer, kipply 2022 "Transformer Inference Arithmetic") on A100-40GB,
    # held out: the catalog is calibrated on the 496 published rows of dse/data (FasterTransformer
    # guide on A100-80GB, gpt-fast, TensorRT-LLM; task=calibrate) and transferred to the A100-40GB by
    # generation. It predicts ttft +33%, tpot +15% (tp=2: +23%), e2e +19%, tp=2 ttft +6% (README,
    # Accuracy): the fit's GEMM efficiency (0.57) is set by the multi-GPU rows, while this single-GPU
    # prefill reached 0.74 of the peak, and per-kernel overheads are pessimistic for a 13B model. The
    # bounds guard against regressions of this held-out case only: the tp=1 prefill lies outside its
    # compute-bound p10-p90 band (the model is 33% slow on it), the other figures inside theirs.
    from dse import make_arch
    arch = make_arch(n_layers=40, d_model=5120, n_heads=40, d_ff=20480, vocab=50272, gated_mlp=False,
                     norm="layernorm", bias=True, tied_embeddings=True, n_positions=2048)
    hw = load_hardware("a100_40gb")
    m1 = evaluate(Design(arch, Quant(), Workload(batch=1, prompt_len=512, gen_len=10, tp=1)), hw)
    assert abs(float(m1["ttft_s"]) / 63.17e-3 - 1) < 0.40
    assert abs(float(m1["tpot_s"]) / 22.0e-3 - 1) < 0.30
    assert abs(float(m1["e2e_s"]) / 283.6e-3 - 1) < 0.30
    m2 = evaluate(Design(arch, Quant(), Workload(batch=1, prompt_len=512, gen_len=10, tp=2)), hw)
    assert abs(float(m2["tpot_s"]) / 13.5e-3 - 1) < 0.30
    assert abs(float(m2["ttft_s"]) / 45.45e-3 - 1) < 0.30
