"""Multirun aggregation: a Hydra callback that reads the jobs' files at the end of a multirun.

It reads files, not memory, so it works with any launcher (basic, joblib, submitit, ray): each
job writes ``result.json`` (task=evaluate) or ``pareto.parquet`` (task=sweep, one shard each).
At the multirun root it writes ``results.csv``/``results.parquet`` (one row per job) and
``pareto.csv``/``pareto.md``, the exact front of the union, and ``report.html`` (the explorer).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dse.explore.export import markdown_table, write_csv, write_parquet, write_text
from dse.explore.pareto import pareto_front


def aggregate(root: Path, objectives: list[dict], fits_only: bool = True) -> dict:
    """Merge every job under ``root``; returns counts. Usable without Hydra (e.g. after SLURM jobs)."""
    root = Path(root)
    rows = [json.loads(p.read_text()) for p in sorted(root.glob("*/result.json"))]
    fronts = [pd.read_parquet(p) for p in sorted(root.glob("*/pareto.parquet"))]
    out = {"jobs_with_result": len(rows), "jobs_with_front": len(fronts)}
    parts = []
    if rows:
        results = pd.DataFrame(rows)
        write_csv(root / "results.csv", results)
        write_parquet(root / "results.parquet", results)
        parts.append(results)
    parts += fronts
    if parts:
        union = pd.concat(parts, ignore_index=True)
        front = pareto_front(union, objectives, fits_only=fits_only)
        write_csv(root / "pareto.csv", front)
        keys = [o["key"] for o in objectives]
        inputs = ("model.", "quant.", "workload.", "hardware.")
        varying = [c for c in union.columns if c.startswith(inputs) and union[c].nunique(dropna=False) > 1]
        write_text(root / "pareto.md", markdown_table(front, list(dict.fromkeys(varying + keys))) + "\n")
        out["pareto_rows"] = len(front)
        from dse.app.report_task import multirun_report
        out["report"] = str(multirun_report(root, objectives))
    return out


class AggregateResults(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        objectives = OmegaConf.to_container(config.sweep.objectives, resolve=True)
        info = aggregate(root, objectives, bool(config.sweep.pareto_fits_only))
        if info.get("pareto_rows") is not None:
            print(f"dse: aggregated {info['jobs_with_result']} results and {info['jobs_with_front']} fronts into "
                  f"{root}/results.csv, pareto.csv, pareto.md ({info['pareto_rows']} Pareto rows)")
