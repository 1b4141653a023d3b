"""task=optimize: the fastest legal design under accuracy, memory, size and latency constraints.

Writes ``optimum.json`` (continuous and legal optima with their metrics, each constraint's value,
limit and slack, the baseline and the improvement, the hardware sensitivity), ``trace.csv``
(step, start, objective, max violation) and ``trace.png``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from dse.app.common import Setup, evaluate_jit, hydra_overrides, meta
from dse.app.sweep_task import flatten_space
from dse.core.design import DesignError
from dse.explore.export import pyplot, save_figure, write_csv, write_json
from dse.explore.optimize import OBJECTIVES, Constraints, Settings, optimize, sensitivity
from dse.explore.space import parse_space, set_knob, validate_knobs
from dse.explore.tables import flat_metrics


def run_optimize(s: Setup, out: Path) -> dict:
    o = OmegaConf.to_container(s.cfg.optimize, resolve=True)
    if o.get("objective") not in OBJECTIVES:
        raise DesignError(f"optimize.objective={o.get('objective')!r}: unknown; available: {sorted(OBJECTIVES)}")
    knobs = parse_space(flatten_space(o.get("knobs") or {}))
    if not knobs:
        raise DesignError("optimize.knobs: empty; give at least one knob with its legal values")
    validate_knobs(knobs, s.design, s.hw)
    base = flat_metrics(evaluate_jit(s.design, s.hw, s.conv, s.acc))
    c = o.get("constraints") or {}
    loss_max = c.get("loss_max")
    if loss_max is None and c.get("loss_delta") is not None:
        loss_max = base["loss_proxy"] + float(c["loss_delta"])
    cons = Constraints(loss_max=loss_max, fits_memory=bool(c.get("fits_memory", True)),
                       max_params=c.get("max_params"), max_tpot_s=c.get("max_tpot_s"))
    settings = Settings(optimizer=o.get("optimizer", "adam"), learning_rate=float(o.get("learning_rate", 0.05)),
                        steps=int(o.get("steps", 150)), starts=int(o.get("starts", 8)),
                        penalty=float(o.get("penalty", 1000.0)), seed=int(o.get("seed", 0)))
    import optax
    if not hasattr(optax, settings.optimizer):
        raise DesignError(f"optimize.optimizer={settings.optimizer!r}: not an optax optimizer (e.g. adam, sgd, lion)")
    r = optimize(s.design, s.hw, s.acc, s.conv, knobs, o["objective"], cons, settings)
    d, h = s.design, s.hw
    for k, v in zip(knobs, r.legal):
        d, h = set_knob(d, h, k.key, float(v))
    metric, sign = OBJECTIVES[o["objective"]]
    obj = lambda m: sign * (float(d.workload.tp) / m["tokens_per_s"] if metric == "cost_per_token" else m[metric])  # noqa: E731
    legal_cons = {name: {"value": float(v), "limit": float(lim), "slack": float(lim - v)}
                  for name, (v, lim) in cons.values(r.legal_metrics).items()}
    result = {
        "objective": o["objective"], "feasible": r.feasible, "evaluations": r.evaluations,
        "message": "all constraints satisfied" if r.feasible else
                   "INFEASIBLE: no legal design satisfies every constraint; this is the least-violating one",
        "continuous": {**{k.key: float(v) for k, v in zip(knobs, r.continuous)}, "objective": obj(r.continuous_metrics),
                       "metrics": r.continuous_metrics},
        "legal": {**{k.key: float(v) for k, v in zip(knobs, r.legal)}, "objective": obj(r.legal_metrics),
                  "metrics": r.legal_metrics},
        "constraints": legal_cons,
        "baseline": {"objective": obj(base), "metrics": base},
        "improvement": obj(base) / obj(r.legal_metrics) if sign > 0 else obj(r.legal_metrics) / obj(base),
        "sensitivity_10pct": sensitivity(d, h, s.acc, s.conv, o["objective"]),
        **s.inputs(), **meta(hydra_overrides()),
    }
    write_json(out / "optimum.json", result)
    steps, starts = r.trace["objective"].shape
    trace = pd.DataFrame({"step": np.repeat(np.arange(steps), starts), "start": np.tile(np.arange(starts), steps),
                          "objective": r.trace["objective"].ravel(), "max_violation": r.trace["max_violation"].ravel()})
    write_csv(out / "trace.csv", trace)
    _plot_trace(out / "trace.png", trace, o["objective"])
    print(f"{result['message']} after {r.evaluations} evaluations")
    print(pd.DataFrame([{"": "baseline", **{k.key: float(_get(s, k.key)) for k in knobs}, o["objective"]: obj(base)},
                        {"": "continuous", **{k.key: v for k, v in zip(knobs, r.continuous)},
                         o["objective"]: obj(r.continuous_metrics)},
                        {"": "legal", **{k.key: v for k, v in zip(knobs, r.legal)},
                         o["objective"]: obj(r.legal_metrics)}]).to_markdown(index=False, floatfmt=".4g"))
    print("constraints: " + ", ".join(f"{n} {c['value']:.4g} <= {c['limit']:.4g}" for n, c in legal_cons.items()))
    print("10% more of a resource improves the legal design's objective by: " +
          ", ".join(f"{k} {100 * v:+.1f}%" for k, v in result["sensitivity_10pct"].items()))
    print(f"\nwrote {out}/optimum.json, trace.csv, trace.png")
    return result


def _get(s: Setup, key: str):
    section, name = key.split(".", 1)
    if section == "hardware":
        return getattr(s.hw, "peak_" + name.split(".")[-1] if "peak_flops" in name else name)
    return getattr({"model": s.design.arch, "quant": s.design.quant, "workload": s.design.workload}[section], name)


def _plot_trace(path, trace: pd.DataFrame, objective: str) -> None:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, dpi=110)
    for start, g in trace.groupby("start"):
        a1.plot(g.step, g.objective, lw=1)
        a2.semilogy(g.step, g.max_violation + 1e-12, lw=1)
    a1.set_ylabel(objective + " (smooth)")
    a2.set_ylabel("max relative violation")
    a2.set_xlabel("optax step (one line per start)")
    a1.grid(alpha=0.3)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
