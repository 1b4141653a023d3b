"""task=accuracy and task=calibrate: the cost model against published measurements of real GPUs.

``task=accuracy`` predicts every row of ``dse/data/published_measurements.csv`` with the shipped
catalog (``conf/hardware`` + ``conf/engine``), refits with each source and each model family left
out, and writes ``accuracy.csv`` (every row: inputs, published, predicted, error, p10/p90 band,
leave-one-out predictions), ``accuracy.md`` (median and p90 |error| by source, metric, device,
tensor-parallel degree, engine, model; the leave-one-out tables; band coverage; the recorded
task=validate runs on accelerators) and
``accuracy.png`` (predicted vs published). ``task=calibrate`` fits the terms on every row and
writes them into the catalog (and the bands into ``dse/data/prediction_bands.csv``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from dse.explore.export import markdown_table, pyplot, save_figure, write_csv, write_text

COLUMNS = ["row_id", "source_family", "source", "engine", "model", "model_family", "device", "tp", "pp", "batch",
           "prompt_len", "gen_len", "w_bits", "a_bits", "kv_bits", "metric", "kind", "value", "unit", "published",
           "predicted", "error", "predicted_p10", "predicted_p90", "regime", "loo_source_predicted",
           "loo_source_error", "loo_model_predicted", "loo_model_error", "loo_each_model_predicted",
           "loo_each_model_error", "expressible"]


def _by(df: pd.DataFrame, col: str, err: str = "error") -> pd.DataFrame:
    g = df.groupby(col)[err]
    return pd.DataFrame({col: list(g.groups), "rows": g.size().values,
                         "median_abs_error_pct": (100 * g.apply(lambda e: e.abs().median())).round(1).values,
                         "p90_abs_error_pct": (100 * g.apply(lambda e: e.abs().quantile(0.9))).round(1).values,
                         "median_error_pct": (100 * g.median()).round(1).values})


def report(df: pd.DataFrame, summary: dict, seconds: float) -> str:
    s = summary
    lines = [f"# Predicted vs published ({s['rows']} rows, {s['expressible']} expressible)", "",
             "Catalog as shipped (conf/hardware + conf/engine): "
             f"**median |error| {100 * s['median_abs_error']:.1f}%**, "
             f"p90 {100 * s['p90_abs_error']:.1f}%. Error = predicted / published − 1 in each source's own metric "
             "(dse/data/published_measurements.md)."]
    if "loo_source_median_abs_error" in s:
        lines += ["", "Leave-one-out (refit without the rows' group): "
                      f"source {100 * s['loo_source_median_abs_error']:.1f}%, "
                      f"model family {100 * s['loo_model_median_abs_error']:.1f}% median |error| on the left-out rows. "
                      f"p10–p90 bands cover {100 * s['band_coverage_loo_source']:.0f}% (source folds) and "
                      f"{100 * s['band_coverage_loo_model']:.0f}% (model folds) of the left-out rows; "
                      f"{100 * s['band_coverage_nested']:.0f}% when each fold's band is built without its own "
                      "residuals."]
        if "loo_each_model_median_abs_error" in s:
            lines[-1] += (f" Each model left out in turn: {100 * s['loo_each_model_median_abs_error']:.1f}% "
                          "median |error| on its rows.")
    for col in ("source_family", "metric", "kind", "device", "tp", "engine", "model"):
        lines += ["", f"## By {col}", "", markdown_table(_by(df, col))]
    if "loo_source_error" in df:
        for col, key in (("source_family", "loo_source_error"), ("model_family", "loo_model_error")):
            what = "source" if key == "loo_source_error" else "model-family"
            lines += ["", f"## Leave-one-{what}-out (fitted without the group)",
                      "", markdown_table(_by(df, col, key))]
        if "loo_each_model_error" in df:
            lines += ["", "## Leave-one-model-out (each model left out in turn)", "",
                      markdown_table(_by(df, "model", "loo_each_model_error"))]
        lines += ["", "## Prediction bands (log(published/predicted) of time, left-out rows)", "",
                  markdown_table(s["bands"].round(4))]
    lines += [device_validation(), "", f"({seconds:.0f} s)"]
    return "\n".join(lines) + "\n"


def device_validation() -> str:
    """accuracy.md's section on the recorded ``task=validate`` runs on accelerators
    (``dse/data/device_validation/<device>/<dtype>/``): end to end by phase, and per operator (the
    attention kernels, the cost model's op time on the fitted hardware against the measured kernels)."""
    from dse.measure.published import DATA_DIR
    rows, ops = [], []
    for case_file in sorted((DATA_DIR / "device_validation").glob("*/*/validation.csv")):
        device, dtype = case_file.parent.parent.name, case_file.parent.name
        cases = pd.read_csv(case_file)
        for phase, g in [("all", cases), *cases.groupby("phase")]:
            rows.append({"device": device, "dtype": dtype, "phase": phase, "cases": len(g),
                         "median_abs_error_pct": round(100 * g.error.abs().median(), 1),
                         "roofline_only_pct": round(100 * g.error_before.abs().median(), 1),
                         "worst_pct": round(100 * g.error.loc[g.error.abs().idxmax()], 1)})
        bench = pd.read_csv(case_file.parent / "microbench.csv")
        attn = bench[bench.kernel.str.startswith("attention")]
        ops += [{"device": device, "dtype": dtype, "op": f"{r.kernel} {r.shape}", "measured_us": round(1e6 * r.seconds, 1),
                 "model_us": round(1e6 * r.model_s, 1), "error_pct": round(100 * (r.model_s / r.seconds - 1), 1)}
                for r in attn.itertuples()]
    if not rows:
        return ""
    return "\n".join(["", "## On accelerators: task=validate (recorded runs, dse/data/device_validation)", "",
                      "A reference decoder timed on the device, predicted from microbenchmarks only (README, "
                      "Validation).", "", markdown_table(pd.DataFrame(rows)), "", "Per operator (attention kernels):",
                      "", markdown_table(pd.DataFrame(ops))])


def plot(path: Path, df: pd.DataFrame, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 6.5), dpi=110)
    x = df.published / df.published.groupby(df.kind).transform("median")
    y = df.predicted / df.published.groupby(df.kind).transform("median")
    for kind in sorted(df.kind.unique()):
        sel = df.kind == kind
        ax.scatter(x[sel], y[sel], s=12, label=kind, alpha=0.8)
    lo, hi = np.nanmin([x.min(), y.min()]) / 1.5, np.nanmax([x.max(), y.max()]) * 1.5
    g = np.geomspace(lo, hi, 10)
    ax.plot(g, g, "k-", lw=0.8)
    ax.fill_between(g, g / 1.12, g * 1.12, color="0.85", label="±12%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("published (÷ median of its metric)")
    ax.set_ylabel("predicted (÷ the same)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, path)


def catalog():
    """The catalog as the measure layer reads it (conf/ through dse.app.build)."""
    from dse.app.build import load_hardware, load_model, resource_dir
    from dse.measure.accuracy import Catalog
    return Catalog(load_model=load_model, load_hardware=load_hardware, conf_dir=resource_dir("conf"))


def run_accuracy(cfg, out: Path) -> pd.DataFrame:
    from dse.measure.accuracy import run
    params = cfg.task.get("params") or {}
    t0 = time.time()
    df, summary = run(catalog(), loo=bool(params.get("loo", True)),
                      loo_each_model=bool(params.get("loo_each_model", True)))
    seconds = time.time() - t0
    write_csv(out / "accuracy.csv", df[[c for c in COLUMNS if c in df]])
    text = report(df, summary, seconds)
    write_text(out / "accuracy.md", text)
    plot(out / "accuracy.png", df, f"{summary['rows']} published measurements: median |error| "
                                   f"{100 * summary['median_abs_error']:.1f}%")
    print(text)
    print(f"wrote {out}/accuracy.csv, accuracy.md, accuracy.png")
    return df


def run_calibrate(cfg, out: Path) -> dict:
    from dse.measure.accuracy import calibrate, run
    params = cfg.task.get("params") or {}
    vals = calibrate(catalog())
    bands = None
    if params.get("bands", True):  # the bands of the catalog just written, from leave-one-out fits
        from dse.measure.bands import write_bands
        from dse.measure.engines import stamp
        _, summary = run(catalog(), loo=True)
        bands = summary["bands"]
        write_bands(bands, f"task=calibrate {stamp()}: p10/p90 of leave-one-out log(published/predicted) time "
                           "by regime")
    rows = [{"term": k.split("@")[0], "by": k.split("@")[1], "group": g, "value": v}
            for k, d in vals.items() for g, v in d.items()]
    write_csv(out / "calibration.csv", pd.DataFrame(rows))
    print(markdown_table(pd.DataFrame(rows)))
    print(f"\nwrote {out}/calibration.csv; updated conf/hardware/*.yaml, conf/engine/*.yaml"
          + (", dse/data/prediction_bands.csv" if bands is not None else ""))
    return vals
