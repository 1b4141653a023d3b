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
from dse.explore.optimize import (OBJECTIVES, Constraints, Settings, balance, check_knobs, designs_at, objective_of,
                                  optimize, reads_serve, sensitivity)
from dse.explore.space import parse_space, validate_knobs
from dse.explore.tables import flat_metrics


def run_optimize(s: Setup, out: Path) -> dict:
    o = OmegaConf.to_container(s.cfg.optimize, resolve=True)
    if o.get("objective") not in OBJECTIVES:
        raise DesignError(f"optimize.objective={o.get('objective')!r}: unknown; available: {sorted(OBJECTIVES)}")
    knobs = parse_space(flatten_space(o.get("knobs") or {}))
    if not knobs:
        raise DesignError("optimize.knobs: empty; give at least one knob with its legal values")
    validate_knobs(knobs, s.design, s.hw)
    from dse.app.validity import check_finite_metrics, check_physical
    check_physical(s, {k.key: float(k.values.max()) for k in knobs})
    from dse.core.hwcost import hardware_cost
    base = flat_metrics({**evaluate_jit(s.design, s.hw, s.conv, s.acc), **hardware_cost(s.hw)})
    check_finite_metrics(base, "the baseline design")
    c = o.get("constraints") or {}
    settings, cons = _settings_and_constraints(o, c, base)
    check_knobs(knobs, o["objective"], cons)
    if reads_serve(o["objective"], cons):  # the steady-state serving model's figures of the baseline deployment
        from dse.core.serving import serve_jit
        base.update(flat_metrics({f"serve.{k}": v for k, v in serve_jit(s.design, s.hw, s.conv).items()}))
    import optax
    if not hasattr(optax, settings.optimizer):
        raise DesignError(f"optimize.optimizer={settings.optimizer!r}: not an optax optimizer (e.g. adam, sgd, lion)")
    r = optimize(s.design, s.hw, s.acc, s.conv, knobs, o["objective"], cons, settings)
    keys = tuple(k.key for k in knobs)
    d, h = designs_at([float(v) for v in r.legal], s.design, s.hw, keys)
    metric, sign = OBJECTIVES[o["objective"]]

    def obj(m, design=d):  # each design's own workload: tco_usd_per_mtok and cost_per_token scale with its tp
        return float(objective_of(m, o["objective"], design.workload))
    cont_design = designs_at([float(v) for v in r.continuous], s.design, s.hw, keys)[0]
    base_obj, cont_obj = obj(base, s.design), obj(r.continuous_metrics, cont_design)
    legal_cons = {name: {"value": float(v), "limit": float(lim), "slack": float(lim - v), "satisfied": bool(v <= lim)}
                  for name, (v, lim) in cons.values(r.legal_metrics).items()}
    result = {
        "objective": o["objective"], "feasible": r.feasible, "evaluations": r.evaluations,
        "message": "all constraints satisfied" if r.feasible else
                   "INFEASIBLE: no legal design satisfies every constraint; this is the least-violating one",
        "continuous": {**{k.key: float(v) for k, v in zip(knobs, r.continuous)}, "objective": cont_obj,
                       "metrics": r.continuous_metrics},
        "legal": {**{k.key: float(v) for k, v in zip(knobs, r.legal)}, "objective": obj(r.legal_metrics),
                  "metrics": r.legal_metrics},
        "constraints": legal_cons,
        "baseline": {"objective": base_obj, "metrics": base},
        "improvement": base_obj / obj(r.legal_metrics) if sign > 0 else obj(r.legal_metrics) / base_obj,
        "sensitivity_10pct": sensitivity(d, h, s.acc, s.conv, o["objective"]),
        **({"balance": balance(d, h, s.acc, s.conv, o["objective"])}
           if any(k.key.startswith("hardware.") for k in knobs) else {}),
        **s.inputs(), **meta(hydra_overrides()),
    }
    write_json(out / "optimum.json", result)
    steps, starts = r.trace["objective"].shape
    trace = pd.DataFrame({"step": np.repeat(np.arange(steps), starts), "start": np.tile(np.arange(starts), steps),
                          "objective": r.trace["objective"].ravel(), "max_violation": r.trace["max_violation"].ravel()})
    write_csv(out / "trace.csv", trace)
    _plot_trace(out / "trace.png", trace, o["objective"])
    print(f"{result['message']} after {r.evaluations:,} evaluations")
    label, shown = user_objective(o["objective"])  # tokens/s as users think of it, not −tokens/s
    print(pd.DataFrame([{"": "baseline", **{k.key: float(_get(s, k.key)) for k in knobs}, label: shown(base_obj)},
                        {"": "continuous", **{k.key: v for k, v in zip(knobs, r.continuous)},
                         label: shown(cont_obj)},
                        {"": "legal", **{k.key: v for k, v in zip(knobs, r.legal)},
                         label: shown(obj(r.legal_metrics))}]).to_markdown(index=False, floatfmt=".4g"))
    print("constraints: " + ", ".join(
        f"{n} {c['value']:.4g} <= {c['limit']:.4g}" if c["satisfied"] else
        f"{n} {c['value']:.4g} > {c['limit']:.4g} (VIOLATED by {100 * (c['value'] / c['limit'] - 1):.3g}%)"
        for n, c in legal_cons.items()))
    print("10% more of a resource (10% less of an overhead or latency) improves the legal design's objective by: " +
          ", ".join(f"{k} {100 * v:+.1f}%" for k, v in result["sensitivity_10pct"].items()))
    if "balance" in result:
        b = result["balance"]
        print(f"balance of the legal design: {b['flops_per_byte']:.4g} FLOP/s per byte/s of memory bandwidth, "
              f"memory read once in {1e3 * b['capacity_s']:.3g} ms, {b['flops_per_link_byte']:.4g} FLOP/s per link byte/s; "
              "objective when the compute peaks are scaled by f: " +
              ", ".join(f"x{f} {v:.4g}" for f, v in b["objective_vs_balance"].items()))
    print(f"\nwrote {out}/optimum.json, trace.csv, trace.png")
    return result


#: the unit a user reads each optimized metric in (objectives are minimized internally)
UNITS = {"tpot_s": "s", "ttft_s": "s", "e2e_s": "s", "tokens_per_s": "tokens/s", "decode_tokens_per_s": "tokens/s",
         "cost_per_token": "device-s/token", "tco_usd_per_mtok": "USD/M tokens",
         "serve_cost_per_token": "device-s/token", "serve_tco_usd_per_mtok": "USD/M tokens"}


def user_objective(name: str):
    """(column label, value map) of an objective as users think of it: ``neg_decode_tokens_per_s`` is shown
    as ``decode_tokens_per_s (tokens/s, max)`` with positive values."""
    metric, sign = OBJECTIVES[name]
    unit = UNITS.get(metric, "")
    return f"{metric} ({unit}{', ' if unit else ''}{'max' if sign < 0 else 'min'})", (lambda v: sign * v)


def _settings_and_constraints(o: dict, c: dict, base: dict):
    """Settings and Constraints from ``optimize.*``, each value checked (one error naming the key)."""
    import dataclasses
    import math

    def check(key, v, ok, rule):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and ok(v)):
            raise DesignError(f"optimize.{key}={v:g}: {rule}" if isinstance(v, (int, float)) else f"optimize.{key}={v!r}: {rule}")

    check("steps", o.get("steps"), lambda v: v >= 1, "must be a positive number of optax steps")
    check("starts", o.get("starts"), lambda v: v >= 1, "must be a positive number of random starts")
    check("learning_rate", o.get("learning_rate"), lambda v: v > 0, "must be a positive step size")
    check("penalty", o.get("penalty"), lambda v: v > 0, "must be a positive penalty weight")
    check("local_search_rounds", o.get("local_search_rounds"), lambda v: v >= 0, "must be >= 0")
    from dse.explore.search import MIN_BUDGET
    check("budget", o.get("budget"), lambda v: v >= MIN_BUDGET,
          f"must be at least {MIN_BUDGET} evaluations (the gradient phase's shortest descent; or null)")
    check("constraints.loss_delta", c.get("loss_delta"), lambda v: v >= 0,
          "must be >= 0 nats (the loss may rise by at most this much over the baseline)")
    for key, v in c.items():
        if key not in ("loss_delta", "fits_memory"):
            check(f"constraints.{key}", v, lambda v: v > 0, "must be a positive limit (or null: no such constraint)")
    loss_max = c.get("loss_max")
    if loss_max is None and c.get("loss_delta") is not None:
        loss_max = base["loss_proxy"] + float(c["loss_delta"])
    fields = {f.name for f in dataclasses.fields(Constraints)}
    cons = Constraints(**{k: v for k, v in c.items() if k in fields and k != "loss_max"}, loss_max=loss_max)
    sfields = {f.name for f in dataclasses.fields(Settings)}
    settings = Settings(**{k: v for k, v in o.items() if k in sfields and v is not None})
    return settings, cons


def _get(s: Setup, key: str):
    section, name = key.split(".", 1)
    if section == "hardware":
        return getattr(s.hw, "peak_" + name.split(".")[-1] if "peak_flops" in name else name)
    return getattr({"model": s.design.arch, "quant": s.design.quant, "workload": s.design.workload}[section], name)


def _plot_trace(path, trace: pd.DataFrame, objective: str) -> None:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, dpi=110)
    label, shown = user_objective(objective)
    for start, g in trace.groupby("start"):
        a1.plot(g.step, shown(g.objective), lw=1)
        a2.semilogy(g.step, g.max_violation + 1e-12, lw=1)
    a1.set_ylabel(label + ", smooth model")
    a2.set_ylabel("max relative violation")
    a2.set_xlabel("optax step (one line per start)")
    a1.grid(alpha=0.3)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
