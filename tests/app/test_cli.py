"""The real CLI in new processes: default study, evaluate, errors, multirun aggregation, launchers."""
import math

import numpy as np
import pandas as pd
import pytest

from tests.app.conftest import read_json, run_cli


def test_default_study_writes_its_files(tmp_path):
    p = run_cli(f"hydra.run.dir={tmp_path}/study", cwd=tmp_path)
    for name in ("results.csv", "results.parquet", "pareto.csv", "pareto.md", "pareto.png", "sweep.json"):
        assert (tmp_path / "study" / name).stat().st_size > 0, name
    assert "Pareto front" in p.stdout
    res = pd.read_csv(tmp_path / "study" / "results.csv")
    assert len(res) == 3 * 3 * 3 * 9 * 4  # MHA/GQA/MQA x w bits x kv bits x batch x context (up to 4k)
    for col in ("model.n_kv_heads", "quant.w_bits", "workload.batch", "hardware.name", "decode_tokens_per_s",
                "loss_proxy", "fits_memory", "meta.jax_version", "meta.git_revision", "meta.device"):
        assert col in res.columns, col
    front = pd.read_csv(tmp_path / "study" / "pareto.csv")
    assert front["fits_memory"].all() and (~res["fits_memory"]).any()  # non-fitting kept in results, not on the front
    assert sorted(front["workload.prompt_len"].unique()) == [512, 1024, 2048, 3968]  # one front per context


def test_evaluate_llm_viewer_worked_example_through_cli(tmp_path):
    # Issue 3 item 6 via the CLI: the same digits land in result.json and ops.csv.
    run_cli("task=evaluate", "model=llama2_7b", "hardware=a6000", "conventions=llm_viewer",
            "workload.batch=1", "workload.prompt_len=1024", "workload.gen_len=1", f"hydra.run.dir={tmp_path}/ev",
            cwd=tmp_path)
    r = read_json(tmp_path / "ev" / "result.json")
    assert r["decode.flops"] == 13_627_555_840
    assert round(r["decode.time_s"] * 1e3, 3) == 17.927
    assert r["model.name"] == "llama2_7b" and r["hardware.name"] == "a6000"
    ops = pd.read_csv(tmp_path / "ev" / "ops.csv")
    assert list(ops.columns[:9]) == ["phase", "op", "count", "flops", "bytes", "weight_bytes", "act_read", "act_write", "kv_read"]
    q = ops[(ops.phase == "decode") & (ops.op == "q_proj")].iloc[0]
    assert (q.flops, q.bytes, q["count"]) == (33_554_432, 33_570_816, 32)
    lm = ops[(ops.phase == "decode") & (ops.op == "lm_head")].iloc[0]
    assert (lm.flops, lm.bytes, lm["count"]) == (131_072_000, 262_216_192, 1)


@pytest.mark.parametrize("override,needle", [
    ("model.n_kv_heads=5", "model.n_kv_heads=5: must divide model.n_heads=32"),
    ("quant.w_bits=0", "quant.w_bits=0: must be a number of bits in [1, 32]"),
    ("hardware.mem_bw=-1", "hardware.mem_bw=-1: must be a positive bandwidth"),
    ("workload.batch=0", "workload.batch=0: must be a positive integer"),
    ("hardware=nope", "hardware"),
])
def test_invalid_overrides_exit_nonzero_naming_the_field(tmp_path, override, needle):
    p = run_cli("task=evaluate", override, f"hydra.run.dir={tmp_path}/bad", cwd=tmp_path, check=False)
    assert p.returncode != 0
    assert needle in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "bad" / "result.json").exists()


def test_multirun_aggregates_and_equals_vectorized_sweep(tmp_path):
    # 2 x 2 x 2 evaluate jobs (basic launcher) vs one vectorized sweep over the same points.
    run_cli("-m", "task=evaluate", "quant.w_bits=16,4", "workload.batch=1,64", "model.n_kv_heads=32,8",
            f"hydra.sweep.dir={tmp_path}/mr", cwd=tmp_path)
    agg = pd.read_csv(tmp_path / "mr" / "results.csv")
    assert len(agg) == 8 and (tmp_path / "mr" / "pareto.md").exists()
    run_cli("task=sweep", "space=none", "+space.quant.w_bits=[16,4]", "+space.workload.batch=[1,64]",
            "+space.model.n_kv_heads=[32,8]", "sweep.dtype=float64", f"hydra.run.dir={tmp_path}/sw", cwd=tmp_path)
    sw = pd.read_csv(tmp_path / "sw" / "results.csv")
    keys = ["quant.w_bits", "workload.batch", "model.n_kv_heads"]
    merged = agg.merge(sw, on=keys, suffixes=("_mr", "_sw"))
    assert len(merged) == 8
    for m in ("ttft_s", "tpot_s", "e2e_s", "decode.flops", "memory_bytes", "loss_proxy"):
        for a, b in zip(merged[m + "_mr"], merged[m + "_sw"]):
            assert math.isclose(a, b, rel_tol=1e-12), m
    front_mr = pd.read_csv(tmp_path / "mr" / "pareto.csv").sort_values(keys)[keys].to_numpy()
    front_sw = pd.read_csv(tmp_path / "sw" / "pareto.csv").sort_values(keys)[keys].to_numpy()
    assert (front_mr == front_sw).all()


def test_joblib_launcher_multirun(tmp_path):
    run_cli("-m", "task=evaluate", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hardware=a100_80gb,h100_sxm",
            f"hydra.sweep.dir={tmp_path}/jl", cwd=tmp_path)
    agg = pd.read_csv(tmp_path / "jl" / "results.csv")
    assert sorted(agg["hardware.name"]) == ["a100_80gb", "h100_sxm"]


def test_optimize_then_evaluate_the_legal_design(tmp_path):
    run_cli("task=optimize", "optimize.steps=60", "optimize.starts=4", f"hydra.run.dir={tmp_path}/opt", cwd=tmp_path)
    opt = read_json(tmp_path / "opt" / "optimum.json")
    assert opt["feasible"] and (tmp_path / "opt" / "trace.csv").exists() and (tmp_path / "opt" / "trace.png").exists()
    legal = opt["legal"]
    run_cli("task=evaluate", f"model.n_kv_heads={int(legal['model.n_kv_heads'])}", f"quant.w_bits={legal['quant.w_bits']}",
            f"quant.kv_bits={legal['quant.kv_bits']}", f"workload.batch={int(legal['workload.batch'])}",
            f"hydra.run.dir={tmp_path}/check", cwd=tmp_path)
    r = read_json(tmp_path / "check" / "result.json")
    assert r["loss_proxy"] <= opt["constraints"]["loss_proxy"]["limit"]
    assert r["fits_memory"] and r["tpot_s"] <= opt["constraints"]["tpot_s"]["limit"]
    assert math.isclose(r["decode_tokens_per_s"], -opt["legal"]["objective"], rel_tol=1e-12)
    # every resource, overheads and latencies included (issue 16: they were left out)
    assert opt["improvement"] > 1 and {"mem_bw", "peak_flops", "link_bw", "mem_capacity", "kernel_overhead_s",
                                       "link_latency"} <= set(opt["sensitivity_10pct"])


def test_sweep_sharded_over_two_devices_matches_one(tmp_path):
    # Two virtual CPU devices: each chunk's points are split across them (jax.sharding).
    import os
    import subprocess
    import sys

    from tests.app.conftest import ROOT
    args = ["task=sweep", "space=none", "+space.model.n_kv_heads=[32,8,1]", "+space.workload.batch=[1,2,4,8,16,32,64]",
            "sweep.dtype=float64"]
    run_cli(*args, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PYTHONPATH": str(ROOT)}
    code = "import jax, sys; assert len(jax.devices()) == 2; from dse.app.main import main; sys.argv = ['dse'] + sys.argv[1:]; main()"
    p = subprocess.run([sys.executable, "-c", code, *args, f"hydra.run.dir={tmp_path}/two"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    one = pd.read_csv(tmp_path / "one" / "results.csv").sort_values("grid_index")
    two = pd.read_csv(tmp_path / "two" / "results.csv").sort_values("grid_index")
    assert one["grid_index"].tolist() == two["grid_index"].tolist()
    for col in ("tpot_s", "ttft_s", "memory_bytes"):  # equal up to the compilers' rounding
        np.testing.assert_allclose(one[col].to_numpy(), two[col].to_numpy(), rtol=1e-12, err_msg=col)


def test_basic_multirun_composes_each_job_once(tmp_path):
    # hydra/sweeper=dse (dse/app/hydra_plugin): with the in-process basic launcher every job's
    # config is composed once (Hydra's basic sweeper composes each twice: ~0.1 s a job).
    import os
    import subprocess
    import sys
    from tests.app.conftest import ROOT
    script = (
        "import atexit, sys\n"
        "from hydra._internal.config_loader_impl import ConfigLoaderImpl\n"
        "calls = []\n"
        "orig = ConfigLoaderImpl.load_sweep_config\n"
        "ConfigLoaderImpl.load_sweep_config = lambda self, *a, **k: calls.append(1) or orig(self, *a, **k)\n"
        "atexit.register(lambda: print('COMPOSED', len(calls)))\n"
        "from dse.app.main import main\n"
        f"sys.argv = ['dse', '-m', 'task=evaluate', 'workload.batch=1,2,3', 'hydra.sweep.dir={tmp_path}/mr']\n"
        "main()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    # (an editable install cannot register the plugin; dse then uses Hydra's basic sweeper: 6)
    assert "COMPOSED 3" in p.stdout, p.stdout[-500:]
    assert len(pd.read_csv(tmp_path / "mr" / "results.csv")) == 3
