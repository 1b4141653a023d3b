"""The case study under the survey's counting rules (conventions ``kim2023``), against the published
numbers of Kim et al. 2023, "Full Stack Optimization of Transformer Inference: a Survey" (arXiv
2302.14017v1): the data labels of Fig. 4-6 (dse/data/kim2023_fig4_6.csv) and the per-operator rows of
Tab. 3 (BERT-Base) and Tab. 11 (GPT-2), typed in here from the paper's text."""
import dataclasses

import pandas as pd
import pytest

from dse.app.build import load_hardware, load_model
from dse.core.conventions import conventions
from dse.explore.casestudy import case_rows, gqa_heads
from tests.conftest import DATA

LENGTHS = [128, 256, 512, 1024, 2048, 4096]
LABELS = {"bert_base": "BERT-Base", "bert_large": "BERT-Large", "gpt2": "GPT-2"}


@pytest.fixture(scope="module")
def rows():
    models = {n: load_model(n) for n in LABELS}
    return case_rows(models, load_hardware("a100_80gb"), conventions("kim2023"), LENGTHS)


def _published():
    t = pd.read_csv(DATA / "kim2023_fig4_6.csv")
    return t.pivot_table(index=["model", "seq_len"], columns="quantity", values="value")


def _total(rows, model, s):
    r = rows[(rows.model == model) & (rows.seq_len == s) & (rows.group == "all")].iloc[0]
    return r.flops / 1e9, r.bytes / 1e9, r.arithmetic_intensity


@pytest.mark.parametrize("model", ["bert_base", "gpt2"])
def test_flops_and_intensity_match_fig_4_and_6(rows, model):
    pub = _published()
    for s in LENGTHS:
        flops, _, ai = _total(rows, model, s)
        p = pub.loc[(LABELS[model], s)]
        assert flops == pytest.approx(p.GFLOPs, rel=0.025), (model, s)  # labels are rounded to 1 GFLOP
        assert ai == pytest.approx(p.arithmetic_intensity_FLOPs_per_byte, rel=0.02), (model, s)


def test_gpt2_memory_operations_match_fig_5(rows):
    pub = _published()
    for s in LENGTHS:
        _, gb, _ = _total(rows, "gpt2", s)
        assert gb == pytest.approx(pub.loc[("GPT-2", s)].GMOPs, rel=0.01), s


def test_bert_large_gap_is_the_surveys_model_not_the_rules(rows):
    # Devlin et al.'s BERT-Large (24 layers, d 1024, d_ff 4096: 12·d² weight MACs per layer) lands
    # 5.6-8.5% above Fig. 4 under the rules that reproduce BERT-Base and GPT-2 within 2%; the published
    # totals are those of 11·d² weight MACs per layer (one d×d projection fewer; here d_ff = 3584),
    # which reproduce every label within 0.5% and the intensities within 1.5%.
    pub = _published()
    errors = [_total(rows, "bert_large", s)[0] / pub.loc[("BERT-Large", s)].GFLOPs - 1 for s in LENGTHS]
    assert all(0.05 < e < 0.09 for e in errors)
    for s in LENGTHS:  # intensity is within 25% regardless
        ai = _total(rows, "bert_large", s)[2]
        assert ai == pytest.approx(pub.loc[("BERT-Large", s)].arithmetic_intensity_FLOPs_per_byte, rel=0.25)
    eleven = dataclasses.replace(load_model("bert_large"), d_ff=3584.0)
    alt = case_rows({"x": eleven}, load_hardware("a100_80gb"), conventions("kim2023"), LENGTHS)
    for s in LENGTHS:
        flops, _, ai = _total(alt, "x", s)
        p = pub.loc[("BERT-Large", s)]
        assert flops == pytest.approx(p.GFLOPs, rel=0.005), s
        assert ai == pytest.approx(p.arithmetic_intensity_FLOPs_per_byte, rel=0.015), s


# Tab. 3 (BERT-Base) and Tab. 11 (GPT-2): (seq_len, group) -> (GFLOPs, arithmetic intensity)
TAB3 = {(128, "projections"): (7.25, 192.00), (128, "ffn"): (14.50, 211.86), (128, "attention"): (0.60, 63.62),
        (512, "projections"): (28.99, 438.86), (512, "ffn"): (57.98, 558.54), (512, "attention"): (9.62, 101.95),
        (4096, "projections"): (231.93, 702.17), (4096, "ffn"): (463.86, 1068.52), (4096, "attention"): (616.02, 123.63)}
TAB11 = {(128, "projections"): (7.25, 2.00), (128, "ffn"): (14.50, 2.00), (512, "attention"): (4.83, 2.00),
         (4096, "projections"): (231.93, 2.00), (4096, "ffn"): (463.86, 2.0), (4096, "attention"): (309.24, 1.98)}


@pytest.mark.parametrize("model,table", [("bert_base", TAB3), ("gpt2", TAB11)])
def test_operator_groups_match_tables_3_and_11(rows, model, table):
    # act-to-act matmuls: the survey counts a length-k dot product as 2k-1 FLOPs, dse as 2k (≤ 2.5%)
    for (s, group), (gflops, ai) in table.items():
        r = rows[(rows.model == model) & (rows.seq_len == s) & (rows.group == group)].iloc[0]
        tol = 0.025 if group == "attention" else 0.005
        assert r.flops / 1e9 == pytest.approx(gflops, rel=tol), (s, group)
        assert r.arithmetic_intensity == pytest.approx(ai, rel=tol + 0.01), (s, group)


def test_other_is_the_nonlinear_rows():
    # Tab. 3 "Other" at 4096 tokens: 11.85 GFLOPs, 5.47 GMOPs (softmax over 12·4096² scores per layer dominates)
    r = case_rows({"b": load_model("bert_base")}, load_hardware("a100_80gb"), conventions("kim2023"), [4096])
    other = r[r.group == "other"].iloc[0]
    assert other.bytes / 1e9 == pytest.approx(5.47, rel=0.05)
    assert other.flops / 1e9 == pytest.approx(11.85, rel=0.30)  # softmax 5 FLOPs/score in dse, 4 in the survey


def test_gqa_remedy_heads():
    assert gqa_heads(12) == 4 and gqa_heads(32) == 8 and gqa_heads(64) == 8 and gqa_heads(1) == 1
