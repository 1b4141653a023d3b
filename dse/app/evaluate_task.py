"""task=evaluate: one design → ``result.json`` (flat metrics, inputs, meta) and ``ops.csv``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dse.app.common import Setup, evaluate_jit, fmt_si, hydra_overrides, meta, phase_tables_jit
from dse.core.design import DesignError
from dse.explore.export import write_csv, write_json
from dse.explore.tables import flat_metrics, ops_frame


def run_evaluate(s: Setup, out: Path) -> dict:
    from dse.app.validity import check_finite_metrics, check_physical
    warnings = check_physical(s)  # a collective with no link: error; past the model's context: warning
    metrics = flat_metrics(evaluate_jit(s.design, s.hw, s.conv, s.acc))
    check_finite_metrics(metrics)
    for ph in ("prefill", "decode"):  # the time's attribution as shares (they add up to 1)
        t = metrics.get(f"{ph}.time_s", 0.0)
        for part in ("compute", "collective", "overhead"):
            if f"{ph}.time_{part}_s" in metrics:
                metrics[f"{ph}.{part}_frac"] = metrics[f"{ph}.time_{part}_s"] / t if t > 0 else 0.0
    metrics.update(serve_metrics(s))
    metrics.update(hardware_cost_metrics(s, metrics))
    # p10-p90 prediction bands of every latency and rate (dse/measure/bands.py; README, Accuracy)
    from dse.measure.bands import with_bands
    w = s.design.workload
    metrics = with_bands(metrics, float(w.tp) * float(getattr(w, "pp", 1.0)))
    row = {**s.inputs(), **metrics, **meta(hydra_overrides()), "meta.warnings": " | ".join(warnings)}
    ops = ops_frame(s.design, s.hw, s.conv, tables=phase_tables_jit(s.design, s.hw, s.conv))
    write_json(out / "result.json", row)
    write_csv(out / "ops.csv", ops)
    print(summary(row, ops))
    print(f"\nwrote {out / 'result.json'} and {out / 'ops.csv'}")
    return row


def hardware_cost_metrics(s: Setup, metrics: dict) -> dict:
    """The hardware cost model's area, cost, price and TDP of the device (``hw.*``, dse.core.hwcost) and
    ``tco_usd_per_mtok``, the objective task=optimize minimizes under that name (README "Hardware cost")."""
    from dse.core.hwcost import hardware_cost
    out = flat_metrics(hardware_cost(s.hw))
    rate = metrics.get("tokens_per_s", 0.0)
    out["tco_usd_per_mtok"] = 1e6 * float(s.design.workload.tp) * out["hw.usd_per_s"] / rate if rate > 0 else float("inf")
    return out


def serve_metrics(s: Setup) -> dict:
    """The steady-state serving figures of the workload's deployment (dse.core.serving) as ``serve.*`` keys."""
    from dse.app.build import load_model
    from dse.core.serving import check_budget, check_draft, serve_jit

    if not s.design.arch.causal:
        return {}
    sv = s.cfg.get("serve") or {}
    if sv.get("gpus") is not None:
        check_budget(s.design, int(sv["gpus"]))
    try:
        draft = load_model(sv["draft_model"]) if sv.get("draft_model") else None
    except DesignError as e:  # name the key the user set, not the catalog group
        raise DesignError(f"serve.draft_model={sv['draft_model']!r}: {str(e).split(': ', 1)[-1]}") from None
    check_draft(s.design.arch, draft)
    return {f"serve.{k}": v for k, v in flat_metrics(serve_jit(s.design, s.hw, s.conv, draft)).items()}


def summary(r: dict, ops: pd.DataFrame) -> str:
    """A readable summary: per-phase time and what bounds it, the heaviest operators."""
    lines = [f"{r['model.name']} on {r['hardware.name']} · W{r['quant.w_bits']:g}A{r['quant.a_bits']:g}"
             f"KV{r['quant.kv_bits']:g} · batch {r['workload.batch']:g}, prompt {r['workload.prompt_len']:g}, "
             f"generate {r['workload.gen_len']:g}, tp {r['workload.tp']:g} · conventions {r['conventions.name']}", ""]
    table = []
    for phase, label in (("prefill", "prefill" if r["model.causal"] else "encode"), ("decode", "decode step"),
                         ("generate", f"generate ({r['workload.gen_len']:g} steps)")):
        if r[f"{phase}.flops"] == 0:
            continue
        ai = r[f"{phase}.flops"] / r[f"{phase}.bytes"]
        row = {"phase": label, "FLOPs": fmt_si(r[f"{phase}.flops"]), "bytes": fmt_si(r[f"{phase}.bytes"], "B"),
               "time": fmt_si(r[f"{phase}.time_s"], "s"), "FLOP/byte": f"{ai:.3g}"}
        for part, head in (("compute", "compute"), ("memory", "memory"), ("collective", "collective"),
                           ("overhead", "overhead")):  # the time's attribution (adds up to 100%)
            v = r.get(f"{phase}.time_{part}_s")
            row[head] = "" if v is None else f"{100 * v / r[f'{phase}.time_s']:.0f}%"
        table.append(row)
    lines.append(pd.DataFrame(table).to_markdown(index=False))
    fits = "fits" if r["fits_memory"] else "DOES NOT FIT"
    no_prompt = r["workload.prompt_len"] == 0
    lines += ["", ("no prompt (workload.prompt_len=0): no prefill, no TTFT" if no_prompt else f"TTFT {fmt_si(r['ttft_s'], 's')}") + f" · TPOT {fmt_si(r['tpot_s'], 's')} · end-to-end "
              f"{fmt_si(r['e2e_s'], 's')} · {r['tokens_per_s']:.4g} tokens/s · memory "
              f"{fmt_si(r['memory_bytes'], 'B')} of {fmt_si(r['mem_capacity_bytes'], 'B')} per device ({fits}) · "
              f"loss proxy {r['loss_proxy']:.4f} nats"]
    for phase in ("prefill", "decode") if r["model.causal"] else ("encode",):
        sub = ops[ops.phase == phase].assign(total_s=lambda d: d.time_s * d["count"])
        top = sub.sort_values("total_s", ascending=False).head(4)
        total = sub.total_s.sum()
        if (phase in ("prefill", "encode") and no_prompt) or not total > 0:
            continue
        parts = [f"{o.op} {100 * o.total_s / total:.0f}% ({o.bound})" for o in top.itertuples()]
        lines.append(f"heaviest {phase} ops: " + ", ".join(parts))
    return "\n".join(lines)
