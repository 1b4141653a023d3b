"""task=trends and task=casestudy: the paper's two analyses, reproduced and extended."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from dse.app.build import available, build_conventions, build_hardware, load_group, load_model
from dse.app.common import Setup
from dse.core.design import Design, Quant, Workload
from dse.core.metrics import phase_tables
from dse.explore.casestudy import case_rows, remedies
from dse.explore.export import markdown_table, pyplot, save_figure, write_csv
from dse.explore.trends import data_path, fit_all, trend_points

BATCHES = np.unique(np.round(np.geomspace(1, 8192, 200)))


def decode_compute_bound_batch(hw, arch, prompt_len=2048) -> float:
    """Smallest batch at which the weight matmuls of an fp16 decode step turn compute-bound.

    (The attention of a decode step stays memory-bound at any batch: every sequence reads its own
    KV cache, about one FLOP per byte at fp16. So the step as a whole never turns compute-bound
    with MHA; its weight matmuls do, near batch = ridge point × efficiency ratio.)
    """
    design = Design(arch, Quant(), Workload(1.0, float(prompt_len), 1.0, 1.0))
    design = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), design)
    mlp_in = "gate_proj" if arch.gated_mlp else "fc1"

    def bound(b):
        d = Design(design.arch, design.quant, Workload(b, design.workload.prompt_len, 1.0, 1.0))
        t = phase_tables(d, hw)["decode"][1][mlp_in]
        return t.compute_s >= t.memory_s

    hit = np.flatnonzero(np.asarray(jax.jit(jax.vmap(bound))(jnp.asarray(BATCHES))))
    return float(BATCHES[hit[0]]) if len(hit) else float("nan")


def run_trends(cfg: DictConfig, out: Path) -> pd.DataFrame:
    fits = fit_all()
    write_csv(out / "trends.csv", fits)
    print("Growth per two years, least squares in log space over the digitized points of Gholami et al. 2024:")
    print(markdown_table(fits, ["series", "n_points", "first_year", "last_year", "growth_per_2y", "paper_growth_per_2y", "r2"]))
    arch = load_model("llama2_7b")
    rows = []
    for name in available("hardware"):
        if name == "measured":  # this machine (task=validate), not a catalog device
            continue
        g = load_group("hardware", name)
        hw = build_hardware(g)
        peak = max(float(hw.peak_fp16), float(hw.peak_fp32))
        rows.append({"hardware": name, "year": g.year, "peak_fp16_flops": peak, "mem_bw": float(hw.mem_bw),
                     "ridge_flops_per_byte": peak / float(hw.mem_bw),
                     "decode_compute_bound_batch": decode_compute_bound_batch(hw, arch)})
    ridge = pd.DataFrame(rows).sort_values(["year", "ridge_flops_per_byte"]).reset_index(drop=True)
    write_csv(out / "ridge.csv", ridge)
    print("\nThe modern catalog: ridge point (peak fp16 FLOP/s per byte/s of DRAM) and the batch at which a "
          "Llama-2-7B fp16 decode step's weight matmuls (2k context) turn compute-bound:")
    print(markdown_table(ridge, ["hardware", "year", "ridge_flops_per_byte", "decode_compute_bound_batch"]))
    _plot_trends(out / "trends.png", trend_points(), fits, ridge)
    print(f"\nwrote {out}/trends.csv, ridge.csv, trends.png")
    return fits


def _plot_trends(path, points: pd.DataFrame, fits: pd.DataFrame, ridge: pd.DataFrame) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), dpi=110)
    panels = [("Hardware (normalized to 1996-98)", ["peak_flops", "dram_bandwidth", "interconnect_bandwidth"]),
              ("Models and memory", ["transformer_params", "training_compute", "accelerator_memory"])]
    for ax, (title, series) in zip(axes, panels):
        for name in series:
            p, f = points[points.series == name], fits.set_index("series").loc[name]
            sc = ax.scatter(p.year, p.value, s=16)
            x = np.linspace(p.year.min(), p.year.max(), 50)
            ax.plot(x, np.exp(f.intercept_ln + f.slope_ln_per_year * x), color=sc.get_facecolor()[0],
                    label=f"{name}: {f.growth_per_2y:.3g}x / 2 years")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("year")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax = axes[2]
    ax.scatter(ridge.year, ridge.ridge_flops_per_byte, s=20)
    _label_points(ax, ridge.year.to_numpy(float), ridge.ridge_flops_per_byte.to_numpy(float), list(ridge.hardware))
    ax.set_title("Ridge point of the catalog (fp16 FLOP/s per byte/s)")
    ax.set_xlabel("year")
    ax.set_ylabel("FLOPs per byte")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _label_points(ax, x, y, labels, fontsize=7) -> None:
    """Annotate points without overlapping labels (issue 16): each label tries offsets around its
    point and takes the first whose box is clear of the labels placed so far."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    offsets = [(4, 2), (4, -9), (-4, 2), (-4, -9), (4, 11), (-4, 11), (4, -18), (-4, -18), (4, 20), (-4, 20),
               (4, -27), (-4, -27), (4, 29), (-4, 29)]
    for i in np.argsort(-np.asarray(y)):
        for dx, dy in offsets:
            t = ax.annotate(labels[i], (x[i], y[i]), fontsize=fontsize, xytext=(dx, dy), textcoords="offset points",
                            ha="left" if dx > 0 else "right")
            box = t.get_window_extent(renderer).expanded(1.02, 1.05)
            if not any(box.overlaps(b) for b in placed):
                placed.append(box)
                break
            t.remove()
        else:  # no clear spot: keep the first offset
            t = ax.annotate(labels[i], (x[i], y[i]), fontsize=fontsize, xytext=offsets[0], textcoords="offset points")
            placed.append(t.get_window_extent(renderer))


#: dse model name -> the survey's model label (Kim et al. 2023, Tab. 1)
SURVEY_MODELS = {"bert_base": "BERT-Base", "bert_large": "BERT-Large", "gpt2": "GPT-2"}


def survey_table() -> pd.DataFrame:
    """The survey's Fig. 4-6 (Kim et al. 2023): GFLOPs, GMOPs, arithmetic intensity by model and seq_len."""
    t = pd.read_csv(data_path("kim2023_fig4_6.csv"))
    return t.pivot_table(index=["model", "seq_len"], columns="quantity", values="value").reset_index()


def survey_comparison(total: pd.DataFrame) -> pd.DataFrame:
    """dse's totals next to the published ones, for every case-study model the survey has."""
    pub = survey_table()
    rows = []
    for name, label in SURVEY_MODELS.items():
        mine = total[total.model == name].set_index("seq_len")
        for r in pub[pub.model == label].itertuples():
            if r.seq_len not in mine.index:
                continue
            m = mine.loc[r.seq_len]
            rows.append({"model": name, "seq_len": int(r.seq_len), "survey_GFLOPs": r.GFLOPs, "dse_GFLOPs": m.flops / 1e9,
                         "survey_GMOPs": r.GMOPs, "dse_GB": m.bytes / 1e9,
                         "survey_AI": r.arithmetic_intensity_FLOPs_per_byte, "dse_AI": m.arithmetic_intensity})
    cmp = pd.DataFrame(rows)
    if len(cmp):
        cmp["GFLOPs_error"] = cmp.dse_GFLOPs / cmp.survey_GFLOPs - 1
        cmp["AI_error"] = cmp.dse_AI / cmp.survey_AI - 1
    return cmp


def casestudy_models(s: Setup, params: dict) -> list[str]:
    """The survey's models (task.params.models) plus the one chosen with model= (if not among them)."""
    names = list(params.get("models", ["bert_base", "bert_large", "gpt2"]))
    chosen = s.cfg.model.name
    return names if chosen in names else names + [chosen]


def run_casestudy(s: Setup, out: Path) -> pd.DataFrame:
    params = dict(s.cfg.task.get("params") or {})
    conv = build_conventions(str(params.get("conventions", "kim2023")))
    seq_lens = params.get("seq_lens", [128, 256, 512, 1024, 2048, 4096])
    names = casestudy_models(s, params)
    models = {n: (s.design.arch if n == s.cfg.model.name else load_model(n)) for n in names}
    bits = float(params.get("bits", 8))
    rows = case_rows(models, s.hw, conv, seq_lens, bits=bits)
    write_csv(out / "casestudy.csv", rows)
    total = rows[rows.group == "all"]
    print(f"Case study on {s.cfg.hardware.name} (batch 1, {bits:g}-bit, conventions {conv.name}: MAC = 2 FLOPs, "
          f"{'fused' if conv.fused_attention else 'unfused'} attention; a decoder generates every token with a KV cache):")
    print(markdown_table(total, ["model", "seq_len", "flops", "bytes", "arithmetic_intensity", "latency_s"]))
    cmp = survey_comparison(total)
    write_csv(out / "survey_comparison.csv", cmp)
    if len(cmp):
        print("\nAgainst the published figures (Kim et al. 2023, Fig. 4-6):")
        print(markdown_table(cmp))
    acc = s.acc
    decoders = [n for n in dict.fromkeys(["gpt2", s.cfg.model.name]) if bool(models.get(n, load_model(n)).causal)]
    rem = []
    for name in decoders:
        r = remedies(models.get(name) or load_model(name), s.hw, s.conv, acc)
        rem.append(r.assign(model=name))
    rem = pd.concat(rem, ignore_index=True)
    write_csv(out / "remedies.csv", rem)
    print(f"\nThe paper's remedies on {s.cfg.hardware.name} (prompt 2048, 256 generated tokens, conventions {s.conv.name}):")
    print(markdown_table(rem, ["model", "change", "decode_arithmetic_intensity", "tpot_ms", "tpot_speedup",
                               "throughput_gain", "kv_cache_GB", "loss_proxy_delta"]))
    _plot_case(out / "casestudy.png", rows)
    print(f"\nwrote {out}/casestudy.csv, survey_comparison.csv, remedies.csv, casestudy.png")
    return rows


def _plot_case(path, rows: pd.DataFrame) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), dpi=110)
    total = rows[rows.group == "all"]
    for model, g in total.groupby("model"):
        axes[0].loglog(g.seq_len, g.flops, "o-", label=model)
        axes[1].loglog(g.seq_len, g.bytes, "o-", label=model)
        axes[2].semilogx(g.seq_len, g.arithmetic_intensity, "o-", label=model)
    lens = sorted(total.seq_len.unique())
    for ax, t in zip(axes, ("FLOPs", "memory traffic (bytes)", "arithmetic intensity (FLOPs/byte)")):
        ax.set_title(t)
        ax.set_xlabel("sequence length")
        # one plain label per swept length, no minor labels (issue 16: log-axis labels overprinted)
        ax.set_xticks(lens, [f"{int(v)}" for v in lens])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
