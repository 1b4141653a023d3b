"""Budgeted co-design search (dse/explore/search.py) and the hardware-cost objective and constraints."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import dse
from dse.core.design import is_valid, order_slack, specialize
from dse.core.hwcost import hardware_cost
from dse.explore.optimize import _DESCENTS, Constraints, Settings, exact_batch, full_metrics, objective_of, optimize
from dse.explore.search import Scorer, evolve, local_search, neighbours, nearest_index
from dse.explore.space import parse_knob, set_knob
from tests.explore.test_optimize import exhaustive


def test_tco_objective_by_hand():
    d = dse.Design(dse.load_model("llama2_7b"), dse.Quant(), dse.Workload(batch=8, prompt_len=512, gen_len=128, tp=2))
    hw = dse.load_hardware("h100_sxm")
    m = full_metrics(d, hw, dse.DEFAULT, dse.load_accuracy())
    c = hardware_cost(hw)
    # USD per device-second = price / (4 years) + TDP × $0.10/kWh; two devices serve tokens_per_s
    usd_s = float(c["hw.price_usd"]) / (4 * 365.25 * 86400) + float(c["hw.power_w"]) * 0.10 / 3.6e6
    want = 1e6 * 2 * usd_s / float(m["tokens_per_s"])
    assert float(objective_of(m, "tco_usd_per_mtok", d.workload)) == pytest.approx(want, rel=1e-9)


def test_order_slack_is_zero_on_legal_designs_and_grows_past_a_divisor():
    # the descent's penalty for the order relations the divisibility rules imply, by hand
    base = dse.Design(specialize(dse.load_model("qwen3_30b_a3b")), dse.Quant(), dse.Workload(batch=8, tp=4, ep=4))
    assert bool(is_valid(base)) and float(jnp.max(order_slack(base))) == 0.0
    bad = dataclasses.replace(base, workload=dataclasses.replace(base.workload, tp=1.0, ep=3.0))
    s = order_slack(bad)  # ep = 3 on a group of tp·attn_dp = 1 device: 3/1 − 1 = 2, nothing else
    assert not bool(is_valid(bad)) and float(s[0]) == pytest.approx(2.0) and float(jnp.sum(s)) == pytest.approx(2.0)
    heads = dataclasses.replace(base, arch=dataclasses.replace(base.arch, n_kv_heads=48.0))  # 48 KV heads > 32 heads
    assert float(jnp.sum(order_slack(heads))) == pytest.approx(48 / 32 - 1)


def test_rounding_and_moves():
    vals = [np.array([1.0, 2, 4, 8, 16]), np.arange(100.0)]
    idx = nearest_index(vals, [True, False], np.array([[5.0, 41.4], [3.0, 0.2]]))
    assert idx.tolist() == [[2, 41], [2, 0]]  # 5 is nearer 4 than 8 in log space; 3 is nearer 4 (log 3 > log √8)
    single = neighbours(np.array([2, 41]), [5, 100])
    assert {tuple(r) for r in single} >= {(0, 41), (4, 41), (2, 42), (2, 40), (2, 73), (2, 9)}
    pairs = neighbours(np.array([2, 41]), [5, 100], pairs=True)
    assert {tuple(r) for r in pairs} == {(3, 42), (3, 40), (1, 42), (1, 40)}
    near = neighbours(np.array([2, 0]), [5, 100], near=True)
    assert {tuple(r) for r in near} == {(1, 0), (3, 0), (2, 1)}  # ±1 step, clipped to the legal range


def test_evolution_moves_many_knobs_within_its_budget():
    # a bowl over 8 knobs of 64 values whose minimum (index 50 everywhere) is far from the start (index 10):
    # the evolution phase reaches it within the budget it is given, scoring no more than that
    values = [np.arange(64.0)] * 8
    scorer = Scorer(lambda x: (((x - 50.0) ** 2).sum(1), np.zeros(len(x))), values, budget=10_000)
    evolve(scorer, np.full(8, 10), [64] * 8, budget=2_000, seed=0)
    assert scorer.used <= 2_000
    assert scorer.best[1] <= 8.0, scorer.best  # from 8 × 40² = 12,800 to within one step per knob on average


def test_local_search_moves_knobs_coupled_by_validity_together():
    # knobs 0 and 1 are legal only when equal (as ep must divide tp·attn_dp): from (3, 3) every single move
    # of either is invalid, so reaching (0, 0) takes joint moves. Ten more knobs of 64 values sit at their
    # optimum (index 32), so all-pairs moves cost 264 evaluations a step; within 600 the search must take
    # the coupled ones with the single moves (three steps of 126 + 4). Without that it stopped at (1, 1).
    values = [np.arange(4.0)] * 2 + [np.arange(64.0)] * 10

    def score(x):
        ok = x[:, 0] == x[:, 1]
        return np.where(ok, x[:, 0] + np.abs(x[:, 2:] - 32).sum(1), np.inf), np.where(ok, 0.0, np.inf)
    scorer = Scorer(score, values, budget=600)
    best = local_search(scorer, np.array([3, 3] + [32] * 10), [4, 4] + [64] * 10)
    assert best[:2].tolist() == [0, 0] and scorer.used <= 600, (best, scorer.used)


def test_local_search_tries_single_steps_before_whole_lines():
    # a bowl over 11 knobs of 16 values, each 2 steps from its minimum: 22 improving ±1 steps of ~21 new designs
    # each reach it within 600 evaluations; a step over every value of every knob (165 designs) fixes one knob
    # a step: three or four of the eleven
    values = [np.arange(16.0)] * 11
    scorer = Scorer(lambda x: (((x - 8.0) ** 2).sum(1), np.zeros(len(x))), values, budget=600)
    best = local_search(scorer, np.full(11, 6), [16] * 11)
    assert best.tolist() == [8] * 11 and scorer.used <= 600, (best, scorer.used)


KNOBS = [("model.n_kv_heads", [1, 2, 4, 8, 16, 32]), ("quant.w_bits", {"low": 3, "high": 16, "integer": True}),
         ("quant.kv_bits", {"low": 2, "high": 16, "integer": True}),
         ("workload.batch", {"low": 1, "high": 256, "integer": True, "log": True})]


def test_budgeted_search_finds_exhaustive_optimum_within_budget():
    # 322,560 legal points; 4,000 evaluations (1.2%) including every gradient step
    d = dse.Design(specialize(dse.load_model("llama2_7b")), dse.Quant(), dse.Workload(batch=1, prompt_len=2048, gen_len=256))
    hw, acc = dse.load_hardware("h100_sxm"), dse.load_accuracy()
    knobs = [parse_knob(k, v) for k, v in KNOBS]
    base = dse.evaluate(d, hw, dse.DEFAULT, acc)
    c = Constraints(loss_max=float(base["loss_proxy"]) + 0.02, fits_memory=True, max_tpot_s=0.05)
    kw = dict(conv=dse.DEFAULT, keys=tuple(k.key for k in knobs), objective="neg_decode_tokens_per_s", constraints=c)
    best, _ = exhaustive(d, hw, acc, knobs, "neg_decode_tokens_per_s", c)
    r = optimize(d, hw, acc, dse.DEFAULT, knobs, "neg_decode_tokens_per_s", c, Settings(budget=4000, seed=1))
    assert r.feasible and r.evaluations <= 4000
    found = float(exact_batch(jnp.asarray(np.repeat(r.legal[None], 65536, 0)), d, hw, acc, **kw)["objective"][0])
    assert abs(found - best) <= 0.01 * abs(best), (found, best)
    assert r.trace["objective"].shape == (10, 8)
    # another seed, budget and loss budget reuse the compiled gradient phase (the fixed design is baked in,
    # the limits are traced): one compile per problem
    c2 = Constraints(loss_max=float(base["loss_proxy"]) + 0.05, fits_memory=True, max_tpot_s=0.04)
    optimize(d, hw, acc, dse.DEFAULT, knobs, "neg_decode_tokens_per_s", c2, Settings(budget=500, seed=2))
    fns = [f for k, f in _DESCENTS.items() if k[2] == kw["keys"]]
    assert len(fns) == 1 and fns[0]._cache_size() == 1


def test_hardware_design_meets_cost_and_power_budgets():
    # hardware resources as knobs, USD per token as the objective: the legal design's price and
    # TDP, recomputed by the cost model on its resources, stay within the budgets
    d = dse.Design(dse.load_model("llama2_7b"), dse.Quant(), dse.Workload(batch=1, prompt_len=1024, gen_len=128))
    hw, acc = dse.load_hardware("h100_sxm"), dse.load_accuracy()
    knobs = [parse_knob("hardware.peak_flops.fp16", {"low": 1e14, "high": 4e15, "num": 64, "log": True}),
             parse_knob("hardware.peak_flops.fp8", {"low": 2e14, "high": 8e15, "num": 64, "log": True}),
             parse_knob("hardware.mem_bw", {"low": 5e11, "high": 1.6e13, "num": 64, "log": True}),
             parse_knob("hardware.mem_capacity", {"low": 1.6e10, "high": 2.56e11, "num": 32, "log": True}),
             parse_knob("quant.w_bits", [4, 8, 16]),
             parse_knob("workload.batch", {"low": 1, "high": 512, "integer": True, "log": True})]
    c = Constraints(loss_max=None, fits_memory=True, max_tpot_s=0.05, max_price_usd=1200.0, max_power_w=600.0)
    r = optimize(d, hw, acc, dse.DEFAULT, knobs, "tco_usd_per_mtok", c, Settings(budget=1500, seed=0))
    assert r.feasible and r.evaluations <= 1500
    h = hw
    for k, v in zip(knobs, r.legal):
        d, h = set_knob(d, h, k.key, float(v))
    cost = hardware_cost(h)
    assert float(cost["hw.price_usd"]) <= 1200.0 and float(cost["hw.power_w"]) <= 600.0
    assert r.legal_metrics["hw.price_usd"] == pytest.approx(float(cost["hw.price_usd"]))
    m = dse.evaluate(d, h, dse.DEFAULT, acc)
    assert float(m["tpot_s"]) <= 0.05 and float(m["memory_bytes"]) <= float(h.mem_capacity)


def test_benchmark_problems_are_large_and_legal():
    """Issue 14's benchmark: each problem >= 10^12 legal points and >= 10 knobs, one with hardware knobs
    under a cost budget, one with deployment knobs under SLOs, one with serving knobs under steady-state
    SLOs; every knob's values are legal on the problem's base design (checked before any compile)."""
    from dse.explore.codesign_bench import PROBLEMS, legal_points, setup
    from dse.explore.space import validate_knobs
    kinds = set()
    for name, p in PROBLEMS.items():
        design, hw, _, knobs, cons, base = setup(name)
        assert len(knobs) >= 10 and legal_points(knobs) >= 1e12, name
        validate_knobs(knobs, design, hw)
        assert np.isfinite(base) and base > 0, name
        keys = {k.key.split(".")[0] for k in knobs}
        if "hardware" in keys and cons.max_price_usd:
            kinds.add("hardware under a cost budget")
        if {"workload.tp", "workload.batch"} <= {k.key for k in knobs} and cons.max_ttft_s:
            kinds.add("deployment under SLOs")
        if cons.serving and any(k.key == "workload.concurrency" for k in knobs):
            kinds.add("serving under steady-state SLOs")
    assert len(kinds) == 3, kinds
