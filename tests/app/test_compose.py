"""Config composition, in-process runs (shards, resume, the studies in sweeps/), one compile per multirun."""
import json

import pandas as pd
import pytest

from dse.app.build import resource_dir
from dse.app.callbacks import aggregate
from dse.app.main import run


def test_schema_rejects_wrong_types(make_cfg):
    with pytest.raises(Exception, match="workload.batch"):
        make_cfg("workload.batch=many")


def test_every_catalog_entry_composes(make_cfg):
    from dse.app.build import available
    from dse.app.common import setup
    for model in available("model"):
        setup(make_cfg(f"model={model}", "space=none"))
    for hw in available("hardware"):
        setup(make_cfg(f"hardware={hw}", "space=none"))


def _sweep(make_cfg, tmp_path, monkeypatch, sub, *overrides):
    out = tmp_path / sub
    out.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(out)
    return run(make_cfg("task=sweep", "sweep.progress=false", *overrides))


SMALL = ("space=none", "+space.model.n_kv_heads=[32,8,4,1]", "+space.quant.w_bits=[16,8,4]",
         "+space.workload.batch={low: 1, high: 512, num: 10, log: true, integer: true}", "sweep.chunk_size=37")


def test_four_shards_merged_equal_unsharded_front(make_cfg, tmp_path, monkeypatch):
    _sweep(make_cfg, tmp_path, monkeypatch, "all", *SMALL)
    for i in range(4):
        _sweep(make_cfg, tmp_path, monkeypatch, f"shards/{i}", *SMALL, f"sweep.shard={i}", "sweep.num_shards=4")
    objectives = [{"key": "decode_tokens_per_s", "dir": "max"}, {"key": "loss_proxy", "dir": "min"},
                  {"key": "memory_bytes", "dir": "min"}]
    aggregate(tmp_path / "shards", objectives)
    whole = pd.read_csv(tmp_path / "all" / "pareto.csv").sort_values("grid_index")
    merged = pd.read_csv(tmp_path / "shards" / "pareto.csv").sort_values("grid_index")
    assert whole["grid_index"].tolist() == merged["grid_index"].tolist()
    assert len(whole) > 3


def test_resume_skips_finished_chunks(make_cfg, tmp_path, monkeypatch):
    first = _sweep(make_cfg, tmp_path, monkeypatch, "r", *SMALL)
    front1 = pd.read_csv(tmp_path / "r" / "pareto.csv")
    # simulate a kill after some chunks: drop the last chunks' files, rerun into the same dir
    chunks = sorted((tmp_path / "r" / "chunks").glob("front-*.parquet"))
    for f in chunks[len(chunks) // 2:]:
        f.unlink()
    second = _sweep(make_cfg, tmp_path, monkeypatch, "r", *SMALL)
    assert second["chunks_resumed"] == len(chunks) // 2 and first["chunks_resumed"] == 0
    front2 = pd.read_csv(tmp_path / "r" / "pareto.csv")
    assert front1["grid_index"].tolist() == front2["grid_index"].tolist()
    assert len(pd.read_parquet(tmp_path / "r" / "results.parquet")) == first["valid"]


def test_results_carry_inputs_metrics_and_meta(make_cfg, tmp_path, monkeypatch):
    _sweep(make_cfg, tmp_path, monkeypatch, "cols", *SMALL)
    df = pd.read_parquet(tmp_path / "cols" / "results.parquet")
    for col in ("model.n_kv_heads", "model.n_layers", "model.name", "quant.w_bits", "quant.a_bits", "workload.batch",
                "hardware.name", "hardware.mem_bw", "ttft_s", "tpot_s", "e2e_s", "tokens_per_s", "params",
                "weight_bytes", "kv_cache_bytes", "memory_bytes", "fits_memory", "arithmetic_intensity",
                "loss_proxy", "meta.dse_version", "meta.jax_version", "meta.device", "meta.git_revision", "meta.overrides"):
        assert col in df.columns, col
    assert len(df) == 4 * 3 * 10


@pytest.mark.parametrize("study", sorted(p.stem for p in resource_dir("sweeps").glob("*.yaml")))
def test_each_named_study_runs_small(make_cfg, tmp_path, monkeypatch, study):
    # Each study at a small size: its own knobs with their first and last values only.
    from dse.app.sweep_task import flatten_space
    from omegaconf import OmegaConf
    cfg = make_cfg(f"sweeps={study}")
    space = flatten_space(OmegaConf.to_container(cfg.space, resolve=True))
    small = []
    for k, v in space.items():
        if isinstance(v, list):
            small.append(f"space.{k}=[{v[0]},{v[-1]}]")
        else:
            small.append(f"space.{k}.num=2" if "num" in v else f"space.{k}.high={v['low']}")
    # (a study's row filter, such as a parameter budget, would empty so coarse a grid)
    summary = _sweep(make_cfg, tmp_path, monkeypatch, study, f"sweeps={study}", "sweep.filter=null", *small)
    assert summary["valid"] > 0 and summary["pareto_rows"] > 0


def test_one_compilation_across_sweep_jobs(make_cfg, tmp_path, monkeypatch):
    # Jobs of a basic-launcher multirun share a process: the same structure must not recompile.
    from dse.explore import sweep as sweep_mod
    _sweep(make_cfg, tmp_path, monkeypatch, "c0", *SMALL)
    before = sweep_mod.eval_indices._cache_size()
    for i, hw in enumerate(("a100_80gb", "h100_sxm", "tpu_v5e")):
        _sweep(make_cfg, tmp_path, monkeypatch, f"c{i + 1}", *SMALL, f"hardware={hw}", f"workload.prompt_len={256 * (i + 1)}")
    assert sweep_mod.eval_indices._cache_size() == before


def test_device_prefilter_keeps_the_exact_front(make_cfg, tmp_path, monkeypatch):
    # keep_results=none discards dominated rows on the device before the exact filter: same front.
    _sweep(make_cfg, tmp_path, monkeypatch, "kept", *SMALL, "sweep.keep_results=all")
    _sweep(make_cfg, tmp_path, monkeypatch, "streamed", *SMALL, "sweep.keep_results=none")
    kept = pd.read_csv(tmp_path / "kept" / "pareto.csv")["grid_index"].sort_values().tolist()
    streamed = pd.read_csv(tmp_path / "streamed" / "pareto.csv")["grid_index"].sort_values().tolist()
    assert kept == streamed and len(kept) > 3
    assert json.loads((tmp_path / "streamed" / "sweep.json").read_text())["valid"] == 4 * 3 * 10


@pytest.mark.parametrize("preset,model", [("default", "llama2_7b"), ("hw_balance", "llama3_70b"),
                                          ("serve_moe", "qwen3_30b_a3b")])
def test_optimize_presets_compose_and_their_knobs_are_accepted(make_cfg, preset, model):
    """Each conf/optimize preset composes, its knobs are legal on the model the README runs it with, and every
    knob moves what the objective or a constraint reads (serve_moe's serving knobs through serve_cost_per_token)."""
    from omegaconf import OmegaConf

    from dse.app.common import setup
    from dse.app.optimize_task import _settings_and_constraints
    from dse.app.sweep_task import flatten_space
    from dse.explore.optimize import check_knobs
    from dse.explore.space import parse_space, validate_knobs
    s = setup(make_cfg("task=optimize", f"optimize={preset}", f"model={model}"))
    o = OmegaConf.to_container(s.cfg.optimize, resolve=True)
    knobs = parse_space(flatten_space(o["knobs"]))
    validate_knobs(knobs, s.design, s.hw)
    _, cons = _settings_and_constraints(o, o["constraints"], {"loss_proxy": 2.0})
    check_knobs(knobs, o["objective"], cons)
    assert (preset == "serve_moe") == cons.serving
