"""task=sweep: the space in config, evaluated chunk by chunk; results, Pareto files and a plot."""
from __future__ import annotations

import dataclasses

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from dse.app.common import Setup, hydra_overrides, meta
from dse.core.design import DesignError
from dse.explore.export import markdown_table, plot_front, write_csv, write_json, write_parquet, write_text
from dse.explore.space import parse_space, validate_knobs
from dse.explore.sweep import Grid, run_sweep


def flatten_space(space: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``space`` config → {dotted knob: spec}; a list or a range/values mapping ends a branch."""
    out = {}
    for k, v in space.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and not ({"low", "high", "values"} & set(v)):
            out.update(flatten_space(v, key + "."))
        else:
            out[key] = v
    return out


def metric_keys(s: Setup) -> set[str]:
    """The metric columns of a result row (``result.json`` keys), from the shapes of ``evaluate``."""
    import jax

    from dse.core.metrics import evaluate
    from dse.core.serving import SERVE_KNOBS, serve
    from dse.core.design import specialize
    design = dataclasses.replace(s.design, arch=specialize(s.design.arch))  # the keys do not depend on the parts traced
    keys = set(jax.eval_shape(lambda: evaluate(design, s.hw, s.conv, s.acc)))
    space = OmegaConf.to_container(s.cfg.space, resolve=True) if s.cfg.get("space") else {}
    if SERVE_KNOBS & set(flatten_space(space)):  # dse.explore.sweep adds the steady-state serve.* columns
        keys |= {f"serve.{k}" for k in jax.eval_shape(lambda: serve(s.design, s.hw, s.conv))}
    return keys


def check_objectives(objectives: list, available: set[str], field: str = "sweep.objectives") -> None:
    """Each objective names a column and a direction; else one error listing the nearest keys."""
    import difflib
    if not objectives:
        raise DesignError(f"{field}: empty; give at least one {{key, dir}}, e.g. {{key: tpot_s, dir: min}}")
    for o in objectives:
        if o.get("key") not in available:
            near = difflib.get_close_matches(str(o.get("key")), sorted(available), n=3, cutoff=0.5)
            raise DesignError(f"{field}: key={o.get('key')!r}: not a result column; "
                              + (f"did you mean {near}? " if near else "") + "the columns are listed in README 'Output files and columns'")
        if o.get("dir") not in ("min", "max"):
            raise DesignError(f"{field}: dir={o.get('dir')!r} for {o['key']!r}: must be 'min' or 'max'")


def grid_of(s: Setup) -> Grid:
    space = OmegaConf.to_container(s.cfg.space, resolve=True) if s.cfg.get("space") else {}
    knobs = parse_space(flatten_space(space))
    validate_knobs(knobs, s.design, s.hw)
    return Grid(tuple(knobs))


def run_sweep_task(s: Setup, out: Path, *, quiet: bool = False) -> dict:
    sw = s.cfg.sweep
    if not 0 <= sw.shard < sw.num_shards:
        raise DesignError(f"sweep.shard={sw.shard}: must be in [0, sweep.num_shards={sw.num_shards})")
    if sw.chunk_size < 1:
        raise DesignError(f"sweep.chunk_size={sw.chunk_size}: must be a positive integer")
    if sw.dtype not in ("float32", "float64"):
        raise DesignError(f"sweep.dtype={sw.dtype!r}: must be 'float32' or 'float64'")
    if sw.csv not in ("always", "never", "auto"):
        raise DesignError(f"sweep.csv={sw.csv!r}: must be one of ['always', 'auto', 'never']")
    for key in ("max_rows", "csv_max_rows", "show"):
        if sw[key] < 0:
            raise DesignError(f"sweep.{key}={sw[key]}: must be a non-negative integer")
    objectives = OmegaConf.to_container(sw.objectives, resolve=True)
    grid = grid_of(s)
    columns = metric_keys(s) | {k.key for k in grid.knobs} | {"grid_index"}
    check_objectives(objectives, columns)
    scenarios, extra = list(sw.get("scenarios") or []), list(sw.get("columns") or [])
    for key in scenarios:
        if key not in {k.key for k in grid.knobs}:
            raise DesignError(f"sweep.scenarios: {key!r} is not a swept knob; name knobs of the space, e.g. "
                              f"{[k.key for k in grid.knobs][:3]}")
    for key in extra:
        if key not in columns:
            from dse.app.strict import nearest
            raise DesignError(f"sweep.columns: {key!r} is not a result column; did you mean {nearest(key, columns)}?")
    from dse.app.validity import check_physical
    warnings = check_physical(s, {k.key: float(k.values.max()) for k in grid.knobs})
    lo, hi = grid.shard_range(sw.shard, sw.num_shards)
    keep = {"all": True, "none": False, "auto": hi - lo <= sw.max_rows}.get(sw.keep_results)
    if keep is None:
        raise DesignError(f"sweep.keep_results={sw.keep_results!r}: must be one of ['all', 'auto', 'none']")
    derive = s.cfg.model.get("d_head") is None and any(k.key in ("model.d_model", "model.n_heads") for k in grid.knobs)
    knob_keys = {k.key for k in grid.knobs}
    constants = {k: v for k, v in {**s.inputs(), **meta(hydra_overrides())}.items() if k not in knob_keys}
    t0 = time.perf_counter()
    res = run_sweep(s.design, s.hw, s.acc, s.conv, grid, out_dir=out, objectives=objectives,
                    chunk_size=sw.chunk_size, shard=sw.shard, num_shards=sw.num_shards, keep_rows=keep,
                    fits_only=sw.pareto_fits_only, derive_d_head=derive, dtype=sw.dtype,
                    progress=sw.progress and not quiet, row_filter=sw.get("filter"),
                    results_path=out / "results.parquet", constants=constants, scenarios=scenarios)
    eval_s = time.perf_counter() - t0
    front = res.front.assign(**constants)
    for k in knob_keys:  # integer knobs as integers (16, not 16.0) in pareto.csv/md
        if k in front and len(front) and np.all(np.mod(front[k].to_numpy(float), 1) == 0):
            front[k] = front[k].astype(np.int64)
    from dse.measure.bands import with_bands_frame
    front = with_bands_frame(front)  # p10-p90 bands of every latency and rate (README, Accuracy)
    write_parquet(out / "pareto.parquet", front)
    write_csv(out / "pareto.csv", front)
    keys = [o["key"] for o in objectives]
    show_cols = scenarios + [k.key for k in grid.knobs if k.key not in scenarios] + \
        [k for k in keys if k not in knob_keys] + [k for k in ("tpot_s", "ttft_s") if k not in keys] + \
        [k for k in extra if k not in keys] + ([] if sw.pareto_fits_only else ["fits_memory"])
    show_cols = list(dict.fromkeys(show_cols))
    write_text(out / "pareto.md", markdown_table(front, show_cols) + "\n")
    rows, wrote = None, ["pareto.csv", "pareto.md"]
    if res.rows_written is not None:
        wrote.append("results.parquet")
        csv_ok = {"always": True, "never": False, "auto": res.rows_written <= sw.csv_max_rows}[sw.csv]
        if csv_ok or res.rows_written <= 200_000:
            rows = pd.read_parquet(out / "results.parquet")
        if csv_ok:
            write_csv(out / "results.csv", rows)
            wrote.append("results.csv")
    if len(keys) >= 2:
        plot_front(out / "pareto.png", rows, front, keys[1], keys[0], color=keys[2] if len(keys) > 2 else None,
                   title=f"{constants.get('model.name', '')} on {constants.get('hardware.name', '')}: "
                         f"{res.valid:,} valid designs", logx=False)
        wrote.insert(2, "pareto.png")
    summary = {"points": res.points, "valid": res.valid, "pareto_rows": len(front), "chunks_resumed": res.chunks_resumed,
               "shard": sw.shard, "num_shards": sw.num_shards, "eval_and_pareto_s": round(eval_s, 3),
               "total_s": round(time.perf_counter() - t0, 3), "objectives": objectives,
               "results_kept": res.rows_written is not None, "results_rows": res.rows_written,
               "files": wrote, "warnings": warnings}
    if sw.keep_results == "auto" and not keep:
        summary["results_not_kept"] = (f"{hi - lo:,} points > sweep.max_rows={sw.max_rows:,}: rows not kept "
                                       "(the front is exact); sweep.keep_results=all keeps them")
    write_json(out / "sweep.json", summary)
    if not quiet:
        print(f"swept {res.points:,} points ({res.valid:,} valid, {res.chunks_resumed} chunks resumed) in "
              f"{eval_s:.2f} s; Pareto front: {len(front):,} designs "
              f"({', '.join(o['dir'] + ' ' + o['key'] for o in objectives)}; fits in memory only: {sw.pareto_fits_only}"
              + (f"; one front per {', '.join(scenarios)}" if scenarios else "") + ")")
        for w in warnings:
            print(f"warning: {w}")
        view = front
        if scenarios and len(front):  # the best rows of every scenario, not only of the first
            n_scen = front.groupby(scenarios).ngroups
            view = front.groupby(scenarios, sort=False).head(max(2, -(-sw.show // n_scen)))
        print(markdown_table(view, show_cols, max_rows=max(sw.show, len(view)) if scenarios else sw.show))
        shown = min(len(view), max(sw.show, len(view)) if scenarios else sw.show)
        if len(front) > shown:
            print(f"... {len(front) - shown:,} more rows in pareto.md"
                  + (f" (the first {len(view) // max(front.groupby(scenarios).ngroups, 1)} of each scenario shown)" if scenarios else ""))
        if "results_not_kept" in summary:
            print(f"note: {summary['results_not_kept']}")
        print(f"\nwrote {out}/" + ", ".join(wrote))
    return summary


def run_sweep_bench(n_points: int, out_dir) -> tuple[float, int]:
    """task=sweep end to end on a grid of about ``n_points`` (for ``python -m dse.bench``): (seconds, points)."""
    from dse.app.schema import register_configs

    register_configs()
    prompts = 511  # 128..32768 in steps of 64
    batches = max(1, min(1024, round(n_points / (6 * 3 * 3 * prompts))))
    overrides = ["space=none", "+space.model.n_kv_heads=[32,16,8,4,2,1]", "+space.quant.w_bits=[16,8,4]",
                 "+space.quant.kv_bits=[16,8,4]", f"+space.workload.batch={{low: 1, high: 1024, num: {batches}, integer: true}}",
                 "+space.workload.prompt_len={low: 128, high: 32768, multiple_of: 64}", "sweep.progress=false"]
    seconds, summary = _timed_sweep(overrides, out_dir)
    return seconds, summary["points"]


def run_sweep_kept_bench(n_points: int, out_dir) -> tuple[float, int, int, int]:
    """task=sweep keeping every row (``sweep.keep_results=all``) on about ``n_points`` of the issue-16
    grid (GQA × w bits × KV bits × every batch 1…512 × prompt lengths in steps of 8, within Llama-2's
    4,096-token context), whose front has thousands of designs: (seconds, points, rows written, front rows)."""
    from dse.app.schema import register_configs

    register_configs()
    prompts = max(1, min(496, round(n_points / (6 * 3 * 3 * 512))))
    overrides = ["space=none", "+space.model.n_kv_heads=[32,16,8,4,2,1]", "+space.quant.w_bits=[16,8,4]",
                 "+space.quant.kv_bits=[16,8,4]", "+space.workload.batch={low: 1, high: 512, integer: true}",
                 f"+space.workload.prompt_len={{low: 8, high: {8 * prompts}, multiple_of: 8}}",
                 "sweep.keep_results=all", "sweep.progress=false"]
    seconds, summary = _timed_sweep(overrides, out_dir)
    return seconds, summary["points"], summary["results_rows"], summary["pareto_rows"]


def _timed_sweep(overrides: list[str], out_dir) -> tuple[float, dict]:
    """Compose ``overrides`` onto the primary config and time task=sweep into ``out_dir`` (benchmarks)."""
    from hydra import compose, initialize_config_dir

    from dse.app.build import resource_dir
    from dse.app.common import setup

    with initialize_config_dir(config_dir=str(resource_dir("conf")), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    summary = run_sweep_task(setup(cfg), out, quiet=True)
    return time.perf_counter() - t, summary
