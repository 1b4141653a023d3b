"""task=serve: search every deployment of ``serve.gpus`` devices (dse.explore.serve_search) and
write ``serve_pareto.csv``/``.md``/``.png`` (+ ``report.html`` where the report module offers a
serve section), ``serve.json``, and with ``serve.target_rps`` the fewest devices that serve it."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from dse.app.build import load_model
from dse.app.common import Setup, hydra_overrides, meta
from dse.core.design import DesignError, validate_design
from dse.core.serving import check_draft
from dse.explore.export import markdown_table, plot_front, write_csv, write_json, write_text
from dse.explore.serve_search import KNOBS, METRICS, ServeGrid, fewest_devices, layouts, search


def serve_grid(cfg) -> ServeGrid:
    """The searched values from ``serve.*`` (each a non-empty list of positive integers)."""
    sv = OmegaConf.to_container(cfg, resolve=True)
    kw = {"gpus": int(sv["gpus"] if sv["gpus"] is not None else 8)}
    if kw["gpus"] < 1:
        raise DesignError(f"serve.gpus={sv['gpus']}: must be a positive integer")
    for key in ("tp", "pp", "concurrency", "chunk_tokens", "w_bits", "kv_bits", "spec_k", "prefill_batch",
                "prefill_w_bits"):
        vals = sv[key]
        low = 0 if key in ("concurrency", "chunk_tokens", "spec_k", "prefill_w_bits") else 1
        if not vals or any(not isinstance(v, (int, float)) or v < low or v != int(v) for v in vals):
            raise DesignError(f"serve.{key}={vals}: must be a non-empty list of integers >= {low}")
        kw[key] = tuple(int(v) for v in vals)
    bad = [m for m in sv["modes"] if m not in ("aggregated", "disaggregated")]
    if bad or not sv["modes"]:
        raise DesignError(f"serve.modes={sv['modes']}: must list 'aggregated' and/or 'disaggregated'")
    kw["modes"] = tuple(sv["modes"])
    grid = ServeGrid(**kw)
    if not layouts(grid):
        raise DesignError(f"serve.gpus={grid.gpus}: no layout of serve.tp={list(grid.tp)} × serve.pp={list(grid.pp)} "
                          f"(× replicas) uses exactly {grid.gpus} devices")
    return grid


def run_serve(s: Setup, out: Path, *, quiet: bool = False) -> dict:
    sv = s.cfg.serve
    for key in ("isl", "osl"):
        if sv[key] < 1:
            raise DesignError(f"serve.{key}={sv[key]}: must be a positive integer")
    for key in ("ttft_max_s", "tpot_max_s"):
        if not sv[key] > 0:
            raise DesignError(f"serve.{key}={sv[key]}: must be a positive time in s")
    if not 0 <= sv.spec_alpha < 1:
        raise DesignError(f"serve.spec_alpha={sv.spec_alpha}: must be in [0, 1)")
    grid = serve_grid(sv)
    w = dataclasses.replace(s.design.workload, prompt_len=float(sv.isl), gen_len=float(sv.osl),
                            spec_alpha=float(sv.spec_alpha))
    base = validate_design(dataclasses.replace(s.design, workload=w))
    draft = load_model(sv.draft_model) if sv.draft_model else None
    check_draft(base.arch, draft)
    res = search(base, s.hw, s.conv, grid, ttft_max_s=float(sv.ttft_max_s), tpot_max_s=float(sv.tpot_max_s),
                 draft=draft)
    front = res.front.sort_values(["tokens_per_s_per_gpu", "tokens_per_s_per_user"], ascending=False)
    # deployments with identical figures (a concurrency or chunk that does not bind): keep the smallest knobs
    front = front.sort_values(list(KNOBS)).drop_duplicates(["tokens_per_s_per_gpu", "tokens_per_s_per_user"])
    front = front.sort_values("tokens_per_s_per_gpu", ascending=False).reset_index(drop=True)
    cols = ["mode", *METRICS, *KNOBS]
    constants = {"model.name": s.cfg.model.name, "hardware.name": s.cfg.hardware.name, "serve.gpus": grid.gpus,
                 "serve.isl": int(sv.isl), "serve.osl": int(sv.osl), "serve.ttft_max_s": float(sv.ttft_max_s),
                 "serve.tpot_max_s": float(sv.tpot_max_s), "serve.draft_model": sv.draft_model or "mtp",
                 "workload.spec_alpha": float(sv.spec_alpha)}
    from dse.measure.bands import with_bands_frame
    table = with_bands_frame(front[cols].assign(**constants))  # p10-p90 bands (README, Accuracy)
    write_csv(out / "serve_pareto.csv", table)
    show = ["mode", "tokens_per_s_per_gpu", "tokens_per_s_per_user", "ttft_s", "tpot_s", "j_per_token", "usd_per_mtok",
            "workload.tp", "workload.pp", "workload.dp", "workload.prefill_tp", "workload.prefill_dp", "concurrency",
            "workload.chunk_tokens", "quant.w_bits", "quant.kv_bits", "workload.spec_k"]
    md = markdown_table(front, show, max_rows=int(sv.top))
    write_text(out / "serve_pareto.md", md + "\n")
    title = (f"{s.cfg.model.name} on {grid.gpus}x {s.cfg.hardware.name}: ISL {sv.isl}, OSL {sv.osl}, "
             f"TTFT <= {sv.ttft_max_s:g} s, TPOT <= {sv.tpot_max_s:g} s")
    plot_front(out / "serve_pareto.png", res.feasible, front, "tokens_per_s_per_user", "tokens_per_s_per_gpu",
               title=f"{title}\n{len(res.feasible):,} feasible of {res.points:,}",
               logx=False)
    _report(out, res.feasible, front[cols], title)
    summary = {"deployments": res.points, "valid": len(res.rows), "feasible": len(res.feasible),
               "pareto_rows": len(front), "search_s": round(res.search_s, 4), "compile_s": round(res.compile_s, 2),
               "modes": {m: int((res.rows["mode"] == m).sum()) for m in grid.modes}, **constants,
               **meta(hydra_overrides())}
    if float(sv.target_rps) > 0:
        need = fewest_devices(res.feasible, float(sv.target_rps))
        if len(need):
            best = need.iloc[0]
            summary["target_rps"] = float(sv.target_rps)
            summary["fewest_devices"] = int(best["devices_for_target"])
            summary["fewest_devices_deployment"] = {k: _py(best[k]) for k in ["mode", *KNOBS]}
            write_csv(out / "serve_target.csv", need[["devices_for_target", *cols]].head(50))
        else:
            summary["fewest_devices"] = None
    write_json(out / "serve.json", summary)
    if not quiet:
        print(f"searched {res.points:,} deployments ({summary['modes']}) in {res.search_s:.3f} s after "
              f"{res.compile_s:.1f} s of compilation; {len(res.feasible):,} meet the SLOs; Pareto front: {len(front)} rows")
        print(md)
        if "fewest_devices" in summary:
            print(f"\ntarget {sv.target_rps:g} requests/s: fewest devices {summary['fewest_devices']} "
                  f"({summary.get('fewest_devices_deployment')})")
        print(f"\nwrote {out}/serve_pareto.csv, serve_pareto.md, serve_pareto.png, serve.json")
    return summary


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _report(out: Path, feasible, front, title: str) -> None:
    """report.html through dse.explore.report's serve section (H-15's report), when that module offers it."""
    try:
        from dse.explore.report import serve_section, table_section, write_report
    except ImportError:  # the hook: nothing to do without the report module
        return
    sample = feasible.sample(min(len(feasible), 20000), random_state=0) if len(feasible) else feasible
    write_report(out / "report.html", title, [serve_section(sample), table_section(front, title="Pareto front")])
