"""task=validate: measure this device, write it as hardware=measured, compare predicted with measured.

Writes ``measured_hardware.yaml`` (and, in a source checkout, ``conf/hardware/measured.yaml`` so
that ``hardware=measured`` selects it), ``microbench.csv``, ``validation.csv`` (case, phase,
predicted_s, measured_s, error, and the roofline-only prediction), ``validation.md``,
``validation.png`` and ``roofline.png`` (the measured roofline with the microbenchmarks on it).
"""
from __future__ import annotations

import datetime
import platform
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from dse.app.build import resource_dir
from dse.app.common import Setup
from dse.explore.export import markdown_table, pyplot, save_figure, write_csv, write_text
from dse.measure.reference import PEAK_KEYS, RefConfig
from dse.measure.roofline import numpy_check
from dse.measure.validate import run_validation


def hardware_yaml(hw: dict, note: str) -> str:
    peaks = {"fp32": 0.0, "bf16": 0.0, "fp16": 0.0, "fp8": 0.0, "int8": 0.0, "int4": 0.0, **hw["peak_flops"]}
    lines = [f"# Measured by `python -m dse task=validate` ({note}).", "name: measured", f"year: {datetime.date.today().year}", f"mem_bw: {hw['mem_bw']:.6g}  # bytes/s",
             f"mem_capacity: {hw['mem_capacity']:.6g}  # bytes", "peak_flops:"]
    lines += [f"  {k}: {float(v):.6g}" for k, v in peaks.items()]
    for k in ("flops_efficiency", "mem_efficiency", "kernel_overhead_s", "step_overhead_s", "gemm_half_tokens",
              "attn_efficiency"):
        if k in hw:
            lines.append(f"{k}: {float(hw[k]):.6g}")
    return "\n".join(lines) + "\n"


def run_validate(s: Setup, out: Path) -> pd.DataFrame:
    params = s.cfg.task.get("params") or {}
    quick = bool(params.get("quick", False))
    dtype = str(params.get("dtype", "float32"))
    if dtype not in PEAK_KEYS:  # the reference decoder's and the microbenchmarks' precision
        raise SystemExit(f"dse: error: task.params.dtype: {dtype!r} is not one of {list(PEAK_KEYS)}")
    cfg = RefConfig(dtype=dtype)
    dev = jax.devices()[0]
    note = (f"{datetime.date.today()}, {platform.machine()} {platform.processor() or ''}, {dev.platform}:{dev.device_kind}"
            f", {dtype}")
    print(f"measuring {dev.platform} ({dev.device_kind}) in {dtype} with microbenchmarks, then the reference decoder ...")
    df, hw, raw = run_validation(quick=quick, cfg=cfg)
    write_csv(out / "microbench.csv", pd.DataFrame(raw))
    text = hardware_yaml(hw, note)
    write_text(out / "measured_hardware.yaml", text)
    conf_hw = resource_dir("conf") / "hardware"
    where = f"{out / 'measured_hardware.yaml'} (copy it to {conf_hw}/measured.yaml to use hardware=measured)"
    if params.get("install_hardware", True):
        try:
            write_text(conf_hw / "measured.yaml", text)
            where = f"{conf_hw / 'measured.yaml'} (use hardware=measured)"
        except OSError:
            pass
    np_check = numpy_check()
    write_csv(out / "validation.csv", df)
    err, before = df.error.abs(), df.error_before.abs()
    worst = df.loc[err.idxmax()]
    summary = (f"{len(df)} cases on {note}: median |error| {100 * err.median():.1f}% "
               f"(roofline only: {100 * before.median():.1f}%), worst {worst.case} {100 * worst.error:+.0f}%")
    table = markdown_table(df.assign(predicted_ms=1e3 * df.predicted_s, measured_ms=1e3 * df.measured_s,
                                     error_pct=100 * df.error, before_pct=100 * df.error_before),
                           ["case", "phase", "batch", "length", "n_kv_heads", "measured_ms", "predicted_ms", "error_pct", "before_pct"])
    write_text(out / "validation.md", f"{summary}\n\n{table}\n")
    _plot(out / "validation.png", df, summary)
    _plot_roofline(out / "roofline.png", raw, hw, note, cfg)
    print(table)
    print(f"\n{summary}")
    print(f"second method (numpy/BLAS, float32 on the host CPU): matmul {np_check['numpy_flops_per_s'] / 1e9:.1f} "
          f"GFLOP/s vs JAX peak {hw['peak_flops'][cfg.peak_key] / 1e9:.1f}; matrix-vector {np_check['numpy_matvec_bytes_per_s'] / 1e9:.1f} GB/s "
          f"vs JAX {hw['mem_bw'] / 1e9:.1f}")
    print(f"\nwrote {out}/validation.csv, validation.md, validation.png, roofline.png, microbench.csv; measured hardware: {where}")
    return df


def _roofline_points(raw: list[dict], size: float) -> list[tuple[str, float, float]]:
    """(label, FLOP/byte, FLOP/s) of the microbenchmarks that have both (``size`` bytes per element)."""
    pts = []
    for r in raw:
        if r["kernel"] == "matmul":
            m, k, n = (int(x) for x in r["shape"].split("x"))
            pts.append(("square matmul", 2.0 * m * k * n / (size * (m * k + k * n + m * n)), r["flops_per_s"]))
        elif r["kernel"] == "matmul_chain":
            pts.append(("matmul chain, 1-256 rows", r["flops"] / r["bytes"], r["flops_per_s"]))
        elif r["kernel"] == "matvec":
            pts.append(("matrix-vector", 2.0 / size, 2.0 / size * r["bytes_per_s"]))
        elif r["kernel"] == "stream_scale":
            pts.append(("stream (x·a + b)", 1.0 / size, 1.0 / size * r["bytes_per_s"]))
    return pts


def _plot_roofline(path, raw: list[dict], hw: dict, note: str, cfg: RefConfig) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=110)
    peak, bw, size = hw["peak_flops"][cfg.peak_key], hw["mem_bw"], cfg.bits / 8
    x = np.geomspace(0.1, 1e3, 200)
    ax.plot(x, np.minimum(peak, x * bw), "k-", lw=1, label=f"roofline: {peak / 1e9:.0f} GFLOP/s, {bw / 1e9:.1f} GB/s")
    eff = hw.get("flops_efficiency", 1.0)
    ax.plot(x, np.minimum(peak * eff, x * bw), "k:", lw=1, label=f"× flops_efficiency {eff:.2f}")
    half = hw.get("gemm_half_tokens", 0.0)
    m = np.geomspace(2, 256, 50)  # the model's matmul on m rows: intensity 2m/size FLOP/byte (the weights)
    ax.plot(2 * m / size, np.minimum(peak * eff * m / (m + half), bw * 2 * m / size), "r--", lw=1,
            label=f"model, matmul on m rows (gemm_half_tokens {half:.0f})")
    points = _roofline_points(raw, size)
    for label in dict.fromkeys(p[0] for p in points):
        pts = [(i, f) for lab, i, f in points if lab == label]
        ax.scatter(*zip(*pts), s=22, label=label)
    _finish_loglog(fig, ax, path, "arithmetic intensity (FLOP/byte)", "achieved FLOP/s", f"measured roofline ({note})")


def _plot(path, df: pd.DataFrame, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    lo, hi = df[["measured_s", "predicted_s", "predicted_before_s"]].min().min(), df[["measured_s", "predicted_s"]].max().max()
    x = np.geomspace(lo / 1.5, hi * 1.5, 10)
    # the band and the diagonal under the points (issue 16: an opaque band drawn last hid them)
    ax.fill_between(x, x / 1.15, x * 1.15, color="0.85", alpha=0.6, lw=0, zorder=0, label="±15%")
    ax.plot(x, x, "k-", lw=0.8, zorder=1)
    for phase, g in df.groupby("phase"):
        ax.scatter(g.measured_s, g.predicted_s, label=f"{phase} (model)", s=30, zorder=3)
        ax.scatter(g.measured_s, g.predicted_before_s, marker="x", s=25, label=f"{phase} (roofline only)", zorder=3)
    _finish_loglog(fig, ax, path, "measured (s)", "predicted (s)", title)


def _finish_loglog(fig, ax, path, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, path)
