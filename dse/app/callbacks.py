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


#: rows beyond which a multirun's sweep rows are not merged into one results file (each job keeps its own)
MAX_MERGED_ROWS = 2_000_000


def aggregate(root: Path, objectives: list[dict], fits_only: bool = True, scenarios: list | None = None) -> dict:
    """Merge every job under ``root``; returns counts and the files written. Usable without Hydra
    (e.g. after SLURM jobs). ``results.*``: one row per evaluate job, or the sweep jobs' rows;
    ``pareto.*``: the exact front of the union; ``comparison.*``: per value of each categorical
    input that varies between jobs (hardware, model, ...), the best of each objective."""
    root = Path(root)
    rows = [json.loads(p.read_text()) for p in sorted(root.glob("*/result.json"))]
    fronts = [pd.read_parquet(p) for p in sorted(root.glob("*/pareto.parquet"))]
    out = {"jobs_with_result": len(rows), "jobs_with_front": len(fronts), "files": []}
    parts = []
    if rows:
        results = pd.DataFrame(rows)
        write_csv(root / "results.csv", results)
        write_parquet(root / "results.parquet", results)
        out["files"] += ["results.csv", "results.parquet"]
        parts.append(results)
    else:
        out["files"] += _merge_sweep_rows(root)
    parts += fronts
    if parts:
        union = pd.concat(parts, ignore_index=True)
        front = pareto_front(union, objectives, fits_only=fits_only, scenarios=scenarios or ())
        write_csv(root / "pareto.csv", front)
        keys = [o["key"] for o in objectives]
        inputs = ("model.", "quant.", "workload.", "hardware.")
        varying = [c for c in union.columns if c.startswith(inputs) and union[c].nunique(dropna=False) > 1]
        write_text(root / "pareto.md", markdown_table(front, list(dict.fromkeys(varying + keys))) + "\n")
        out["files"] += ["pareto.csv", "pareto.md"]
        out["pareto_rows"] = len(front)
        table = comparison(union, front, objectives, fits_only)
        if table is not None:
            write_csv(root / "comparison.csv", table)
            write_text(root / "comparison.md", markdown_table(table) + "\n")
            out["files"] += ["comparison.csv", "comparison.md"]
            out["comparison"] = table
        from dse.app.report_task import multirun_report
        out["report"] = str(multirun_report(root, objectives))
    return out


def _merge_sweep_rows(root: Path) -> list[str]:
    """The sweep jobs' kept rows (``*/results.parquet``) as one results.parquet (and results.csv when
    small); nothing when no job kept rows or they are too many to merge."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(root.glob("*/results.parquet"))
    if not files or sum(pq.ParquetFile(f).metadata.num_rows for f in files) > MAX_MERGED_ROWS:
        return []
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    from dse.explore.export import atomic_path
    with atomic_path(root / "results.parquet") as tmp:
        pq.write_table(table, tmp)
    written = ["results.parquet"]
    if table.num_rows <= 200_000:
        write_csv(root / "results.csv", table.to_pandas())
        written.append("results.csv")
    return written


def comparison(union: pd.DataFrame, front: pd.DataFrame, objectives: list[dict], fits_only: bool = True):
    """Per value of each categorical input that varies (hardware.name, model.name, ...): its designs'
    best value of each objective and its rows on the union's front. None when nothing categorical varies."""
    cats = [c for c in ("hardware.name", "model.name", "quant.name", "conventions.name", "accuracy.fit")
            if c in union.columns and union[c].nunique(dropna=True) > 1]
    if not cats:
        return None
    pool = union[union["fits_memory"].astype(bool)] if fits_only and "fits_memory" in union.columns else union
    out = []
    for keys, g in pool.groupby(cats, dropna=False):
        row = dict(zip(cats, keys if isinstance(keys, tuple) else (keys,)))
        for o in objectives:
            col = g[o["key"]]
            row[f"best {o['key']} ({o.get('dir', 'min')})"] = col.max() if o.get("dir") == "max" else col.min()
        on_front = front
        for c, v in zip(cats, keys if isinstance(keys, tuple) else (keys,)):
            on_front = on_front[on_front[c] == v]
        row["rows"], row["on the joint front"] = len(g), len(on_front)  # rows: its jobs' results or fronts
        out.append(row)
    first = objectives[0]
    table = pd.DataFrame(out)
    return table.sort_values(f"best {first['key']} ({first.get('dir', 'min')})", ascending=first.get("dir") != "max",
                             ignore_index=True)


class AggregateResults(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        objectives = OmegaConf.to_container(config.sweep.objectives, resolve=True)
        info = aggregate(root, objectives, bool(config.sweep.pareto_fits_only),
                         list(config.sweep.get("scenarios") or []))
        if info.get("pareto_rows") is not None:
            print(f"dse: aggregated {info['jobs_with_result']} job results and {info['jobs_with_front']} job fronts "
                  f"into {root}/{', '.join(info['files'])} ({info['pareto_rows']} Pareto rows)")
            if info.get("comparison") is not None:
                print(markdown_table(info["comparison"]))
