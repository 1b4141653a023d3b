"""One test per defect of issue 16 ("no silent wrong answers"), each failing before its fix.

Runs go through ``dse.app.main.run`` in-process (Hydra's ``compose()``, no subprocess), exactly as
``python -m dse`` dispatches them; numbers are checked against hand counts from the op table.
"""

import numpy as np
import pandas as pd
import pytest

from dse.app.main import run
from dse.core.design import DesignError

SMALL = ("space=none", "+space.model.n_kv_heads=[32,8]", "+space.quant.w_bits=[16,4]",
         "+space.workload.batch=[1,16]", "sweep.progress=false")


def _run(make_cfg, tmp_path, monkeypatch, *overrides):
    monkeypatch.chdir(tmp_path)
    return run(make_cfg(*overrides))


def _error(make_cfg, tmp_path, monkeypatch, capsys, *overrides) -> str:
    with pytest.raises(SystemExit) as e:
        _run(make_cfg, tmp_path, monkeypatch, *overrides)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dse: error: ") and "\n" not in err, err
    return err


# --- unknown keys, ignored inputs -----------------------------------------------------------

def test_plus_unknown_workload_key_is_one_line_not_a_type_error(make_cfg, tmp_path, monkeypatch, capsys):
    err = _error(make_cfg, tmp_path, monkeypatch, capsys, "task=evaluate", "+workload.foo=3")
    assert "workload.foo: unknown key" in err


def test_optimize_ttft_constraint_is_a_constraint(make_cfg):
    # before: +optimize.constraints.max_ttft_s=0.1 was dropped and "all constraints satisfied" printed
    from dse.app.optimize_task import _settings_and_constraints
    cfg = make_cfg("task=optimize", "optimize.constraints.max_ttft_s=0.1")
    from omegaconf import OmegaConf
    o = OmegaConf.to_container(cfg.optimize, resolve=True)
    _, cons = _settings_and_constraints(o, o["constraints"], {"loss_proxy": 2.0})
    values = cons.values({"loss_proxy": 2.0, "memory_bytes": 1.0, "mem_capacity_bytes": 2.0, "tpot_s": 0.01,
                          "ttft_s": 2.23, "params": 1.0})
    assert values["ttft_s"] == (2.23, 0.1)


# --- physical validity ----------------------------------------------------------------------

def test_tensor_parallel_without_a_link_is_an_error(make_cfg, tmp_path, monkeypatch, capsys):
    # before: "TTFT 2.35e+24 Ps · 4.36e-38 tokens/s"
    err = _error(make_cfg, tmp_path, monkeypatch, capsys, "task=evaluate", "model=llama2_70b", "workload.tp=8",
                 "hardware.link_bw=0", "hardware.net_bw=0")
    assert "workload.tp=8" in err and "hardware.link_bw=0" in err


def test_context_past_the_models_maximum_warns_with_the_numbers(make_cfg, tmp_path, monkeypatch, capsys):
    row = _run(make_cfg, tmp_path, monkeypatch, "task=evaluate", "workload.prompt_len=10000000")
    err = capsys.readouterr().err
    assert "dse: warning: context 10,000,128 tokens" in err and "4,096" in err
    assert "10,000,128" in row["meta.warnings"]


def test_prompt_of_zero_tokens_reports_no_prefill(make_cfg, tmp_path, monkeypatch, capsys):
    row = _run(make_cfg, tmp_path, monkeypatch, "task=evaluate", "workload.prompt_len=0")
    assert row["ttft_s"] == 0 and row["prefill.time_s"] == 0 and row["prefill.bytes"] == 0  # no 0-token step
    assert all(np.isfinite(v) for v in row.values() if isinstance(v, float))
    out = capsys.readouterr().out
    assert "heaviest prefill ops" not in out and "TTFT" not in out.replace("no TTFT", "")
    assert "| prefill" not in out and "no prompt" in out


def test_non_finite_metric_is_an_error():
    from dse.app.validity import check_finite_metrics
    with pytest.raises(DesignError, match=r"ttft_s=nan"):
        check_finite_metrics({"tpot_s": 0.01, "ttft_s": float("nan")})


# --- time attribution -----------------------------------------------------------------------

def test_launch_overhead_and_collectives_are_not_memory_bound(make_cfg, tmp_path, monkeypatch):
    # before: Llama-2-7B batch-1 decode "memory-bound 100%" with 418 launches x 4.5 us inside it
    row = _run(make_cfg, tmp_path, monkeypatch, "task=evaluate")
    ops = pd.read_csv(tmp_path / "ops.csv")
    for phase in ("prefill", "decode"):
        parts = [row[f"{phase}.time_{p}_s"] for p in ("compute", "memory", "collective", "overhead")]
        assert sum(parts) == pytest.approx(row[f"{phase}.time_s"], rel=1e-9)
        # hand count: every launched kernel (it moves or computes something) costs kernel_overhead_s,
        # plus the engine's step overhead
        sub = ops[ops.phase == phase]
        launches = sub.loc[(sub.flops + sub.bytes) > 0, "count"].sum()
        expect = launches * row["hardware.kernel_overhead_s"] + row.get("hardware.step_overhead_s", 0.0)
        assert row[f"{phase}.time_overhead_s"] == pytest.approx(expect, rel=1e-9)
        assert row[f"{phase}.memory_bound_frac"] == pytest.approx(row[f"{phase}.time_memory_s"] / row[f"{phase}.time_s"])
    assert row["decode.memory_bound_frac"] < 0.9 and row["decode.time_overhead_s"] > 0
    # ops.csv: the parts of each op add up to its time
    total = ops[["time_compute_s", "time_memory_s", "time_collective_s", "time_overhead_s"]].sum(axis=1)
    np.testing.assert_allclose(total, ops.time_s, rtol=1e-9)


def test_collective_time_is_its_own_part_at_tp8(make_cfg, tmp_path, monkeypatch):
    row = _run(make_cfg, tmp_path, monkeypatch, "task=evaluate", "model=llama2_70b", "workload.tp=8")
    ops = pd.read_csv(tmp_path / "ops.csv")
    dec = ops[ops.phase == "decode"]
    assert row["decode.time_collective_s"] == pytest.approx((dec["count"] * dec.comm_s).sum(), rel=1e-9)
    assert row["decode.time_collective_s"] > 0 and row["decode.collective_frac"] > 0


def test_sensitivity_covers_overheads_and_latencies(h100):
    from dse.app.build import load_accuracy
    from dse.core.conventions import DEFAULT
    from dse.core.design import Design
    from dse.explore.optimize import sensitivity
    from dse.app.build import load_model
    s = sensitivity(Design(load_model("llama2_7b")), h100, load_accuracy(), DEFAULT, "tpot_s")
    assert {"kernel_overhead_s", "link_latency", "mem_bw", "peak_flops"} <= set(s)
    assert s["kernel_overhead_s"] > 0.01  # launch overhead is a large share of a batch-1 decode step


# --- fronts that answer their study's question -----------------------------------------------

def test_default_study_has_a_front_per_context(make_cfg, tmp_path, monkeypatch):
    # before: every front row had prompt_len=512 (a shorter context always dominates)
    _run(make_cfg, tmp_path, monkeypatch, "sweep.progress=false", "space.model.n_kv_heads=[32,1]",
         "space.quant.kv_bits=[16,4]")
    front = pd.read_csv(tmp_path / "pareto.csv")
    assert sorted(front["workload.prompt_len"].unique()) == [512, 1024, 2048, 3968]


def test_batch_scaling_front_is_feasible_and_shows_fits_memory(make_cfg, tmp_path, monkeypatch):
    # before: 7 designs needing 90-703 GB of an 80 GB device on the front, no fits_memory column
    _run(make_cfg, tmp_path, monkeypatch, "sweeps=batch_scaling", "sweep.progress=false",
         "space.workload.batch.num=7", "space.model.n_kv_heads=[32,8]")
    front = pd.read_csv(tmp_path / "pareto.csv")
    assert front.fits_memory.all() and (front.memory_bytes <= 80e9).all()
    assert "fits_memory" in (tmp_path / "pareto.md").read_text().splitlines()[0]
    assert "decode.memory_bound_frac" in (tmp_path / "pareto.md").read_text().splitlines()[0]


def test_depth_vs_width_front_has_more_than_one_row(make_cfg, tmp_path, monkeypatch):
    # before: tpot and ttft both favour the same shape at batch 1, so the front was one row
    _run(make_cfg, tmp_path, monkeypatch, "sweeps=depth_vs_width", "sweep.progress=false", "sweep.filter=null",
         "space.model.n_layers=[16,32,64]", "space.model.d_model.low=2048", "space.model.d_model.high=4096",
         "space.model.d_model.multiple_of=1024", "space.model.d_ff.low=8192", "space.model.d_ff.high=16384",
         "space.model.d_ff.multiple_of=4096")
    front = pd.read_csv(tmp_path / "pareto.csv")
    assert front.groupby("workload.batch").size().min() > 1


# --- messages that are true -------------------------------------------------------------------

def test_sweep_multirun_aggregation_writes_the_results_it_claims(make_cfg, tmp_path, monkeypatch):
    from dse.app.callbacks import aggregate
    for i, hw in enumerate(("h100_sxm", "a100_80gb")):
        (tmp_path / str(i)).mkdir()
        _run(make_cfg, tmp_path / str(i), monkeypatch, "task=sweep", f"hardware={hw}", *SMALL)
    objectives = [{"key": "decode_tokens_per_s", "dir": "max"}, {"key": "loss_proxy", "dir": "min"}]
    info = aggregate(tmp_path, objectives)
    for f in info["files"]:
        assert (tmp_path / f).exists(), f
    assert "results.csv" in info["files"] and len(pd.read_csv(tmp_path / "results.csv")) == 2 * 8
    table = pd.read_csv(tmp_path / "comparison.csv")  # the per-hardware comparison
    assert sorted(table["hardware.name"]) == ["a100_80gb", "h100_sxm"]


def test_single_objective_sweep_does_not_claim_a_plot(make_cfg, tmp_path, monkeypatch, capsys):
    summary = _run(make_cfg, tmp_path, monkeypatch, "task=sweep", *SMALL, "sweep.objectives=[{key: tpot_s, dir: min}]")
    out = capsys.readouterr().out
    assert "pareto.png" not in out and not (tmp_path / "pareto.png").exists()
    assert "pareto.png" not in summary["files"]


def test_dropped_rows_are_announced(make_cfg, tmp_path, monkeypatch, capsys):
    summary = _run(make_cfg, tmp_path, monkeypatch, "task=sweep", *SMALL, "sweep.max_rows=3")
    assert "sweep.max_rows=3" in summary["results_not_kept"] and "sweep.max_rows=3" in capsys.readouterr().out
    assert not (tmp_path / "results.parquet").exists()


@pytest.mark.parametrize("override, needle", [
    ("sweep.filter='params <'", "sweep.filter="),
    ("sweep.objectives=[{key: tokens_per_sec, dir: max}]", "did you mean ['tokens_per_s'"),
    ("sweep.objectives=[{key: tpot_s, dir: down}]", "must be 'min' or 'max'"),
    ("sweep.scenarios=[workload.gen_len]", "not a swept knob"),
])
def test_bad_sweep_options_are_one_line(make_cfg, tmp_path, monkeypatch, capsys, override, needle):
    err = _error(make_cfg, tmp_path, monkeypatch, capsys, "task=sweep", *SMALL, override)
    assert needle in err


@pytest.mark.parametrize("override, needle", [
    ("optimize.steps=0", "optimize.steps=0: must be a positive"),
    ("optimize.constraints.loss_delta=-1", "optimize.constraints.loss_delta=-1: must be >= 0"),
    ("optimize.starts=0", "optimize.starts=0"),
    ("optimize.budget=10", "optimize.budget=10: must be at least 64 evaluations"),
])
def test_bad_optimize_settings_are_one_line(make_cfg, tmp_path, monkeypatch, capsys, override, needle):
    err = _error(make_cfg, tmp_path, monkeypatch, capsys, "task=optimize", override)
    assert needle in err


def test_unwritable_output_dir_is_one_line():
    from dse.app.strict import explain
    msg = explain(PermissionError(13, "Permission denied", "/root/outputs/x"))
    assert "/root/outputs/x: Permission denied" in msg and "hydra.run.dir" in msg


def test_ctrl_c_says_how_many_chunks_are_saved(make_cfg, tmp_path, monkeypatch):
    from dse.explore import sweep as sweep_mod
    real, calls = sweep_mod.eval_indices, []

    def interrupt_third(*a, **k):  # the device call of the 3rd chunk (chunks are dispatched one ahead)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(sweep_mod, "eval_indices", interrupt_third)
    with pytest.raises(KeyboardInterrupt, match=r"1 of 4 chunks are saved .* rerun the same command"):
        _run(make_cfg, tmp_path, monkeypatch, "task=sweep", *SMALL, "sweep.chunk_size=2")


def test_infeasible_optimize_shows_violations_as_such(make_cfg, tmp_path, monkeypatch, capsys):
    # before: "constraints: tpot_s 0.0066 <= 1e-06" for an infeasible problem
    r = _run(make_cfg, tmp_path, monkeypatch, "task=optimize", "optimize.steps=5", "optimize.starts=1",
             "optimize.constraints.max_tpot_s=1e-6", "optimize.knobs.workload.batch.high=4")
    out = capsys.readouterr().out
    assert not r["feasible"] and "INFEASIBLE" in out
    assert "tpot_s" in out and "VIOLATED" in out and "<= 1e-06" not in out
    # the objective as users read it: tokens/s, positive
    assert "decode_tokens_per_s (tokens/s, max)" in out and "neg_decode" not in out


def test_optimize_reports_the_baseline_objective_at_its_own_tensor_parallelism(make_cfg, tmp_path, monkeypatch):
    # before: the baseline's USD per million tokens was computed with the optimum's tp (×4 when it chose tp=4)
    import dse
    from dse.explore.optimize import objective_of
    r = _run(make_cfg, tmp_path, monkeypatch, "task=optimize", "optimize.steps=5", "optimize.starts=1",
             "optimize.objective=tco_usd_per_mtok", "+optimize.knobs.workload.tp=[4,8]")
    assert r["legal"]["workload.tp"] in (4, 8)
    d = dse.Design(dse.load_model("llama2_7b"), dse.Quant(), dse.Workload())  # the default study's design, tp=1
    want = float(objective_of(r["baseline"]["metrics"], "tco_usd_per_mtok", d.workload))
    assert r["baseline"]["objective"] == pytest.approx(want, rel=1e-12)


def test_python_api_takes_ints_and_grad_works(llama7b, h100):
    import jax

    import dse
    d = dse.Design(llama7b, dse.Quant(w_bits=4), dse.Workload(batch=16, prompt_len=4096, tp=1))
    g = jax.grad(lambda d: dse.evaluate(d, h100, smooth=True)["tpot_s"])(d)
    assert np.isfinite(g.quant.w_bits) and g.workload.batch != 0


# --- plots that show their message --------------------------------------------------------------

def _capture(monkeypatch, module):
    figs = []
    monkeypatch.setattr(module, "save_figure", lambda fig, path: figs.append(fig))
    return figs


def test_validation_band_lies_under_the_points(monkeypatch):
    from dse.app import validate_task
    figs = _capture(monkeypatch, validate_task)
    df = pd.DataFrame({"phase": ["decode", "prefill"], "measured_s": [1e-3, 1e-2], "predicted_s": [1.1e-3, 0.9e-2],
                       "predicted_before_s": [2e-3, 0.5e-2]})
    validate_task._plot("x.png", df, "t")
    ax = figs[0].axes[0]
    band = [c for c in ax.collections if c.get_label() == "±15%"][0]
    points = [c for c in ax.collections if c is not band]
    assert band.get_alpha() < 1 and all(band.get_zorder() < p.get_zorder() for p in points)


def test_casestudy_x_labels_are_the_lengths_and_do_not_overprint(monkeypatch):
    from dse.app import paper_tasks
    figs = _capture(monkeypatch, paper_tasks)
    lens = [128, 256, 512, 1024, 2048, 4096]
    rows = pd.DataFrame([{"model": m, "group": "all", "seq_len": s, "flops": s * 1e9, "bytes": s * 1e6,
                          "arithmetic_intensity": 100.0} for m in ("bert_base", "gpt2") for s in lens])
    paper_tasks._plot_case("x.png", rows)
    fig = figs[0]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text() and t.get_visible()]
        assert sorted(int(t.get_text()) for t in labels if t.get_text().isdigit()) == lens
        boxes = [t.get_window_extent(r) for t in labels]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_trends_ridge_labels_do_not_overlap(monkeypatch):
    from dse.app import paper_tasks
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    x = np.array([2020, 2020, 2020, 2022, 2022, 2023, 2023, 2024.0])
    y = np.array([100, 110, 120, 300, 310, 560, 570, 580.0])
    ax.scatter(x, y)
    paper_tasks._label_points(ax, x, y, [f"device_{i}" for i in range(len(x))])
    fig.canvas.draw()
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in ax.texts]
    assert len(boxes) == len(x)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_gqa_loss_is_not_counted_twice(llama7b, h100):
    # the GQA points are uptrained MHA models: dropping K/V heads raises loss.gqa only, not loss.scaling
    import dataclasses

    import dse
    acc = dse.load_accuracy()
    m = {kv: dse.evaluate(dse.Design(dataclasses.replace(llama7b, n_kv_heads=float(kv))), h100, acc=acc)
         for kv in (32, 8, 1)}
    for kv in (8, 1):
        assert float(m[kv]["loss.scaling"]) == float(m[32]["loss.scaling"])
        assert float(m[kv]["loss_proxy"] - m[32]["loss_proxy"]) == pytest.approx(float(m[kv]["loss.gqa"]), rel=1e-12)
    assert float(m[1]["loss.gqa"]) == pytest.approx(0.016, abs=0.001)  # the figure for MQA


def test_a_100000_value_knob_validates_in_well_under_a_second(llama7b, h100):
    import time

    from dse.core.design import Design
    from dse.explore.space import parse_knob, validate_knobs
    knob = parse_knob("workload.prompt_len", {"low": 1, "high": 100_000, "integer": True})
    t = time.perf_counter()
    validate_knobs([knob], Design(llama7b), h100)
    assert time.perf_counter() - t < 2.0  # was ~20 s, one value at a time
    with pytest.raises(DesignError, match="space: model.n_kv_heads=3: must divide"):
        validate_knobs([parse_knob("model.n_kv_heads", [32, 16, 3])], Design(llama7b), h100)
