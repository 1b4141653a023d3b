"""The paper's analyses: trend growth rates, the BERT-Base table, encoder vs decoder intensity."""
import pandas as pd
import pytest

from dse.app.main import run
from dse.explore.trends import fit_all, fit_growth


def test_fit_growth_recovers_a_known_rate():
    years = [2000, 2002, 2004, 2010]
    assert fit_growth(years, [3.0 ** ((y - 2000) / 2) for y in years])["growth_per_2y"] == pytest.approx(3.0, rel=1e-12)


def test_trend_growth_rates_match_the_paper():
    # Gholami et al. 2024: 3.0x, 1.6x, 1.4x per two years (within 0.05), ~410x and ~750x.
    g = fit_all().set_index("series").growth_per_2y
    assert abs(g["peak_flops"] - 3.0) <= 0.05
    assert abs(g["dram_bandwidth"] - 1.6) <= 0.05
    assert abs(g["interconnect_bandwidth"] - 1.4) <= 0.05
    assert g["transformer_params"] == pytest.approx(410, rel=0.02)
    assert g["training_compute"] == pytest.approx(750, rel=0.02)
    assert g["accelerator_memory"] == pytest.approx(2.0, abs=0.2)


def test_trends_task_writes_files(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(make_cfg("task=trends"))
    t = pd.read_csv(tmp_path / "trends.csv")
    assert {"series", "growth_per_2y"} <= set(t.columns)
    ridge = pd.read_csv(tmp_path / "ridge.csv")
    # the decode batch that turns Llama-2-7B's gate projection (h 4096 → f 11008, fp16) compute-bound, by hand:
    # compute 2·h·f·(b + half)/(peak·eff_f) = memory 2·(h·f + b·(h + f))/(bw·eff_m), with R = ridge·eff_f/eff_m:
    # b = h·f·(R − half) / (h·f − R·(h + f))
    from dse.app.build import load_hardware
    h, f = 4096.0, 11008.0
    for row in ridge.itertuples():
        hw = load_hardware(row.hardware)
        R = row.ridge_flops_per_byte * float(hw.flops_efficiency) / float(hw.mem_efficiency)
        hand = h * f * (R - float(hw.gemm_half_tokens)) / (h * f - R * (h + f))
        # the batch grid is geometric (200 points from 1 to 8192: 4.6% apart)
        assert row.decode_compute_bound_batch == pytest.approx(hand, rel=0.06), row.hardware
    assert (tmp_path / "trends.png").stat().st_size > 0
    assert "Ridge point of the catalog" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_casestudy_reproduces_the_survey_and_the_decoder_gap(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(make_cfg("task=casestudy", "hardware=a100_80gb"))
    cmp = pd.read_csv(tmp_path / "survey_comparison.csv")
    assert set(cmp.model) == {"bert_base", "bert_large", "gpt2"} and len(cmp) == 18
    exact = cmp[cmp.model != "bert_large"]  # BERT-Large: see tests/explore/test_casestudy.py
    assert (exact.GFLOPs_error.abs() < 0.025).all()  # Fig. 4, every length
    assert (exact.AI_error.abs() < 0.02).all()  # Fig. 6
    assert (cmp.AI_error.abs() < 0.25).all()
    assert ((exact.dse_GB - exact.survey_GMOPs).abs() <= 0.05 + 0.01 * exact.survey_GMOPs).all()  # Fig. 5, 1 decimal
    cs = pd.read_csv(tmp_path / "casestudy.csv")
    for col in ("model", "seq_len", "flops", "bytes", "arithmetic_intensity", "latency_s"):
        assert col in cs.columns
    total = cs[cs.group == "all"]
    assert set(total.model) == {"bert_base", "bert_large", "gpt2", "llama2_7b"}  # model= joins the survey's three
    gpt2 = total[total.model == "gpt2"].arithmetic_intensity
    enc = total[total.model.str.startswith("bert")].arithmetic_intensity
    assert gpt2.between(1.9, 2.1).all()
    assert enc.between(100, 300).all()
    rem = pd.read_csv(tmp_path / "remedies.csv")
    llama = rem[rem.model == "llama2_7b"].set_index("change")
    assert llama.loc["4-bit weights (W4A16)", "tpot_speedup"] > 1.5  # weights dominate decode traffic
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Case study: arithmetic_intensity" in page and "survey_comparison.csv" in page


def test_casestudy_follows_model(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(make_cfg("task=casestudy", "model=mistral_7b", "hardware=h100_sxm", "task.params.seq_lens=[128,256]"))
    total = pd.read_csv(tmp_path / "casestudy.csv").query("group == 'all'")
    assert "mistral_7b" in set(total.model)
    rem = pd.read_csv(tmp_path / "remedies.csv")
    assert set(rem.model) == {"gpt2", "mistral_7b"}  # the remedies follow model=, not a fixed llama2_7b
    base = rem[rem.model == "mistral_7b"].iloc[0]
    assert base.change.startswith("baseline (8 KV heads")
