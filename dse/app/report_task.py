"""report.html for every task: gathers what a task wrote into its output folder (and the run's
design and hardware) and hands it to :mod:`dse.explore.report`, which builds the page.

Called once after each task (``dse.app.main.run``) and after a multirun's aggregation
(``dse.app.callbacks``). It reads files, so it sees exactly what the task wrote. The design on
the roofline: evaluate's own; sweep's best front design on the first objective; optimize's legal
optimum; the configured design otherwise.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dse.explore import report as R
from dse.explore.space import set_knob
from dse.explore.tables import ops_frame

#: tasks that build their own report.html with this module (task=serve: the serve section over its deployments)
WRITES_OWN_REPORT = ("serve",)

PEAKS = (("fp32", "peak_fp32"), ("fp16/bf16", "peak_fp16"), ("fp8", "peak_fp8"), ("int8", "peak_int8"),
         ("int4", "peak_int4"))


def _read(path: Path) -> pd.DataFrame | None:
    if path.with_suffix(".parquet").exists():
        return pd.read_parquet(path.with_suffix(".parquet"))
    return pd.read_csv(path) if path.exists() else None


def design_sections(design, hw, conv, label: str, device: str, ops: pd.DataFrame | None = None) -> list[R.Section]:
    """Roofline and per-operator time of one design (``ops``: its ops table if already written)."""
    ops = ops if ops is not None else ops_frame(design, hw, conv)
    peaks = {name: float(getattr(hw, field)) for name, field in PEAKS if float(getattr(hw, field)) > 0}
    return [R.roofline_section(ops, peaks, float(hw.mem_bw), device=device, title=f"Roofline — {label}"),
            R.ops_section(ops, title=f"Time per operator — {label}")]


def _with_knobs(s, row: dict):
    """The run's design and hardware with the knob values of one result row."""
    d, h = s.design, s.hw
    keys = [k for k in row if k.split(".")[0] in ("model", "quant", "workload", "hardware") and
            isinstance(row[k], (int, float)) and not isinstance(row[k], bool)]
    for k in keys:
        try:
            cur = float(_get(d, h, k))
            if cur != float(row[k]):
                d, h = set_knob(d, h, k, float(row[k]))
        except Exception:  # not a knob (hardware.year, a derived column, ...)
            continue
    return d, h


def _get(d, h, key):
    from dse.explore.space import get_knob
    return get_knob(d, h, key)


def _objectives(cfg) -> list[dict]:
    from omegaconf import OmegaConf
    return OmegaConf.to_container(cfg.sweep.objectives, resolve=True)


def task_report(task: str, out: Path, s=None, cfg=None) -> Path | None:
    """Build ``out/report.html`` for one finished task; returns its path."""
    out = Path(out)
    cfg = cfg if cfg is not None else (s.cfg if s is not None else None)
    sections: list[R.Section] = []
    title, label = f"dse — task={task}", "configured design"
    design = hw = None
    if s is not None:
        design, hw = s.design, s.hw
        title = f"dse — task={task}: {cfg.model.name} on {cfg.hardware.name}"
    if task == "sweep" and (out / "pareto.parquet").exists():
        front = pd.read_parquet(out / "pareto.parquet")
        objectives = _objectives(cfg)
        sections.append(R.pareto_section(_read(out / "results.csv"), front, objectives))
        if len(front) and s is not None:
            o = objectives[0]
            best = front.sort_values(o["key"], ascending=o["dir"] == "min").iloc[0].to_dict()
            design, hw = _with_knobs(s, best)
            label = f"front design best on {o['key']}"
    elif task == "optimize" and (out / "optimum.json").exists():
        opt = json.loads((out / "optimum.json").read_text())
        design, hw = _with_knobs(s, {k: v for k, v in opt["legal"].items() if "." in k})
        label = "legal optimum"
        trace = _read(out / "trace.csv")
        if trace is not None:
            sections.append(R.lines_section(trace, "step", "objective", color="start", title="Optimizer trace"))
    elif task == "evaluate" and (out / "result.json").exists():
        row = json.loads((out / "result.json").read_text())
        keys = [k for k in row if not k.startswith(("meta.", "model.", "quant.", "workload.", "hardware.", "accuracy."))]
        sections.append(R.table_section(pd.DataFrame({"metric": keys, "value": [str(row[k]) for k in keys]}),
                                        title="Metrics (result.json)"))
    elif task == "casestudy" and (out / "casestudy.csv").exists():
        cs = pd.read_csv(out / "casestudy.csv")
        total = cs[cs.group == "all"]
        for y, log_y in (("flops", True), ("bytes", True), ("arithmetic_intensity", False)):
            sections.append(R.lines_section(total, "seq_len", y, color="model", log_x=True, log_y=log_y,
                                            title=f"Case study: {y}"))
        for name in ("survey_comparison.csv", "remedies.csv"):
            if (out / name).exists():
                sections.append(R.table_section(pd.read_csv(out / name), title=name))
    elif task == "trends" and (out / "trends.csv").exists():
        sections.append(R.table_section(pd.read_csv(out / "trends.csv"), title="Growth per two years (trends.csv)"))
        ridge = pd.read_csv(out / "ridge.csv")
        sections.append(R.lines_section(ridge.sort_values("year"), "year", "ridge_flops_per_byte",
                                        title="Ridge point of the catalog", log_y=True))
    elif task == "validate" and (out / "validation.csv").exists():
        v = pd.read_csv(out / "validation.csv")
        sections.append(R.lines_section(v.sort_values("measured_s"), "measured_s", "predicted_s", color="phase",
                                        log_x=True, log_y=True, title="Predicted vs measured (validation.csv)"))
        sections.append(R.table_section(v, title="validation.csv"))
    if design is not None:
        ops = _read(out / "ops.csv") if task == "evaluate" else None
        sections += design_sections(design, hw, s.conv, label, str(cfg.hardware.name), ops)
    return R.write_report(out / "report.html", title, sections,
                          subtitle=f"written by dse next to the task's files in {out}")


def multirun_report(root: Path, objectives: list[dict]) -> Path | None:
    """report.html at a multirun's root: the aggregated results and their front."""
    root = Path(root)
    front = _read(root / "pareto.csv")
    if front is None:
        return None
    results = _read(root / "results.csv")
    return R.write_report(root / "report.html", "dse — multirun", [R.pareto_section(results, front, objectives)],
                          subtitle=f"aggregated from the jobs under {root}")


def write_task_report(cfg) -> Path | None:
    """report.html of the job that just ran (skipped inside a multirun: the callback writes one at the root)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dse.app.common import output_dir, setup
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return None
    task = str(cfg.task.name)
    if task in WRITES_OWN_REPORT:
        return None
    s = None if task == "trends" else setup(cfg)
    path = task_report(task, output_dir(), s, cfg)
    print(f"wrote {path}")
    return path
