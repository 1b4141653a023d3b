"""Predicted vs published: the cost model on every published row, the calibration of its terms on
those rows (:mod:`dse.measure.calibrate`), leave-one-out generalization and prediction bands.

Every row is evaluated by :func:`dse.core.metrics.evaluate` on its catalog device
(``conf/hardware``) with the fitted terms of its device family and engine, and turned into the
published metric by its source's definition (:func:`dse.measure.published.metric_from`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dse.core.conventions import DEFAULT
from dse.core.metrics import evaluate
from dse.measure import calibrate as cal
from dse.measure.published import KIND_CODE, designs, load, metric_from

#: the fitted terms: hardware physics per device family, software costs per engine or per launch path
#: (spread: how far a group may stray from the pool, in logit or log units)
TERMS = (
    cal.Term("mem_efficiency", "family", cal.UNIT, spread=0.5),
    cal.Term("flops_efficiency", "family", cal.UNIT, spread=0.5),
    cal.Term("gemm_half_tokens", "family", cal.POSITIVE, scale=16.0, spread=0.7),
    cal.Term("attn_efficiency", "family", cal.UNIT, spread=0.7),
    cal.Term("link_hop_latency", "family", cal.POSITIVE, scale=1e-6, spread=0.7),
    cal.Term("net_latency", "family", cal.POSITIVE, scale=1e-5, spread=0.7),
    # the fixed cost of a kernel and of a collective: the engine's launch path (engines.LAUNCH), whose
    # values span an order of magnitude (Python dispatch, C++ enqueue, graph replay): a wide spread
    cal.Term("kernel_overhead_s", "launch", cal.POSITIVE, scale=1e-6, spread=2.0),
    cal.Term("link_latency", "launch", cal.POSITIVE, scale=1e-5, spread=2.0),
    cal.Term("step_overhead_s", "engine", cal.POSITIVE, scale=1e-4, spread=1.5),
    cal.Term("mem_reserve_bytes", "engine", cal.POSITIVE, scale=1e9, spread=1.0),
    cal.Term("act_buffer_factor", "engine", cal.POSITIVE, scale=1.0, spread=1.0),
    # the matmul kernels' unpacking of weight-only quantized weights: the engine's kernels (gpt-fast's
    # int8 and int4 rows are the only weight-only measurements; other engines take the pool)
    cal.Term("dequant_ops_per_weight", "engine", cal.POSITIVE, scale=1.0, spread=1.0),
)

#: device family of each catalog device: same vendor and generation (the transfer rule)
FAMILY = {
    "a100_40gb": "nvidia-ampere", "a100_80gb": "nvidia-ampere", "a6000": "nvidia-ampere",
    "h100_sxm": "nvidia-hopper", "h100_pcie": "nvidia-hopper", "h200": "nvidia-hopper",
    "l40s": "nvidia-ada", "l4": "nvidia-ada", "rtx4090": "nvidia-ada",
    "mi250x": "amd-cdna2", "mi250x_gcd": "amd-cdna2", "mi300x": "amd-cdna3", "mi325x": "amd-cdna3",
    "b200": "nvidia-blackwell", "v100": "nvidia-volta",
}


#: the columns a term may be grouped by: device family, engine, the engine's launch path
GROUPINGS = ("family", "engine", "launch")


@dataclass(frozen=True)
class Catalog:
    """What this layer reads from the app's catalog (``conf/``), passed in so measure never imports
    the app: ``dse.app.accuracy_task.catalog()`` builds it from ``dse.app.build``."""

    load_model: Callable  # name -> Arch (conf/model)
    load_hardware: Callable  # name -> Hardware (conf/hardware)
    conf_dir: Path  # conf/ (hardware/ and engine/ are written by calibrate)


@dataclass
class Problem:
    """The published rows as stacked pytrees, grouped by architecture structure (one compile each)."""

    df: pd.DataFrame
    chunks: list  # (row indices, stacked Design, stacked base Hardware, kind codes, GPU counts)
    group_names: dict  # by -> list of names
    row_groups: dict  # by -> int array per row (over all rows; -1 if not expressible)
    order: np.ndarray  # the row index of each prediction, in chunk order

    @classmethod
    def build(cls, catalog: Catalog, df: pd.DataFrame | None = None) -> "Problem":
        df = load() if df is None else df
        from dse.measure.engines import LAUNCH
        df = df.assign(family=df.device.map(FAMILY), engine=df.engine_short)
        df = df.assign(launch=df.engine.map(LAUNCH))
        ds, ok = designs(df, catalog.load_model)
        df = df.assign(expressible=ok)
        hw = {n: catalog.load_hardware(n) for n in df.device.dropna().unique()}
        hw = {name: {sys: _with_system(h, sys) for sys in df.hardware.unique()} for name, h in hw.items()}
        by_structure: dict = {}
        for i, d in enumerate(ds):
            if d is not None:
                by_structure.setdefault(jax.tree.structure(d), []).append(i)
        chunks = []
        for idx in by_structure.values():
            stack = lambda xs: jax.tree.map(lambda *v: jnp.asarray(np.asarray(v, float)), *xs)  # noqa: E731
            chunks.append((np.asarray(idx), stack([ds[i] for i in idx]),
                           stack([hw[df.device[i]][df.hardware[i]] for i in idx]),
                           jnp.asarray([KIND_CODE[df.kind[i]] for i in idx]),
                           jnp.asarray((df.tp * df.pp).values[idx].astype(float))))
        names = {by: sorted(df.loc[ok, by].unique()) for by in GROUPINGS}
        row_groups = {by: np.asarray([names[by].index(v) if v in names[by] else -1 for v in df[by]])
                      for by in names}
        order = np.concatenate([c[0] for c in chunks])
        return cls(df, chunks, names, row_groups, order)

    def layout(self, terms=TERMS) -> cal.Layout:
        return cal.Layout.build(terms, self.group_names)

    def predict_fn(self, layout: cal.Layout):
        """theta -> predictions of the expressible rows (in ``self.order``), traceable."""
        chunks, row_groups = self.chunks, self.row_groups

        def predict(theta):
            out = []
            for idx, D, H, kind, n_gpus in chunks:
                hw = cal.row_hardware(layout, theta, H, {k: v[idx] for k, v in row_groups.items()})
                m = jax.vmap(lambda d, h: evaluate(d, h, DEFAULT))(D, hw)
                value = metric_from(m, kind, D.workload.batch, D.workload.gen_len, n_gpus)
                # the time-weighted memory-bound share (for the regime of the prediction band)
                gen = jnp.where(kind == KIND_CODE["ttft_s"], 0.0, m["generate.time_s"])
                share = ((m["prefill.memory_bound_frac"] * m["prefill.time_s"] + m["decode.memory_bound_frac"] * gen)
                         / (m["prefill.time_s"] + gen))
                out.append(jnp.stack([value, share]))
            return jnp.concatenate(out, axis=1)
        return predict


def _with_system(hw, description: str):
    """The catalog device with the system a row names: the FasterTransformer SuperPod's nodes of 8
    GPUs on NVSwitch joined by 8 × 200 Gb/s InfiniBand, one 25 GB/s NIC per GPU (NVIDIA DGX A100
    SuperPOD reference architecture)."""
    if "8x200Gb/s IB" in description:
        return dataclasses.replace(hw, node_size=8.0, net_bw=200e9 / 8)
    return hw


#: prior centres of the pooled terms, fixed before any fit (never the calibrated catalog, which has
#: seen every row: a leave-one-out fit must not start from or lean toward it). The pre-calibration
#: catalog (fitted to one FasterTransformer 13B case, kipply 2022) for the efficiencies and the
#: collective latency; a CUDA kernel launch costs 4-6 us of driver and runtime calls (measured in
#: "pegainfer (3): From Launch Overhead to CUDA Graph", susun-blog.com); the rest start at their
#: scale. All priors are wide (TERMS: prior_sd = 3 in log or logit units). A narrow launch prior
#: (sd 0.5) moved the leave-one-source-out error from gpt-fast (48% -> 24%) to FasterTransformer
#: (11% -> 19%) when those terms were per engine: an unseen engine's launch cost is not predictable
#: from engines that launch differently; grouped by launch path (engines.LAUNCH), FasterTransformer
#: takes TensorRT-LLM's, and a path with no measured engine (CUDA-graph replay without gpt-fast) takes
#: its nearest measured path or, with a floor, the midpoint (unmeasured_by_order; README). dequant_ops_per_weight: 4 vector ops per weight (convert, subtract the
#: zero point, multiply by the group's scale; int4 adds a shift and a mask), counted by hand in gpt-fast's
#: weight-only kernels (int8: ``F.linear(x, weight.to(x.dtype)) * scales``; int4: tinygemm's unpack).
PRIOR = {"mem_efficiency": 0.85, "flops_efficiency": 0.73, "gemm_half_tokens": 16.0, "attn_efficiency": 0.73,
         "link_latency": 1.7e-5, "link_hop_latency": 1e-6, "net_latency": 1e-5, "kernel_overhead_s": 5e-6,
         "step_overhead_s": 1e-4, "mem_reserve_bytes": 1e9, "act_buffer_factor": 1.0, "dequant_ops_per_weight": 4.0}


def defaults() -> dict:
    """Prior centres and starting values of the terms (:data:`PRIOR`)."""
    return dict(PRIOR)


def fit(problem: Problem, keep: np.ndarray | None = None, terms=TERMS, x0=None, max_nfev: int = 40):
    """Fit the terms on the rows in ``keep`` (boolean over ``problem.df``); (layout, theta, info)."""
    layout = problem.layout(terms)
    theta0 = cal.initial(layout, defaults())
    keep = np.ones(len(problem.df), bool) if keep is None else keep
    mask = jnp.asarray(keep[problem.order].astype(float))
    theta, info = cal.fit_log(_residual(problem, layout), theta0 if x0 is None else x0,
                              (mask, jnp.asarray(theta0), jnp.asarray(0.0)), max_nfev=max_nfev)
    return layout, unmeasured_by_order(problem, layout, theta, keep), info


#: groupings whose groups have a physical order of cost (cheapest first): launching a kernel by
#: CUDA-graph replay costs at most what a C++ host enqueue of the same kernel costs, which costs at
#: most a Python-dispatched one
ORDERED = {"launch": ("graph", "host", "eager")}

#: sourced lower bounds for a group without rows: CUDA-graph replay has no host launch, so its
#: per-kernel cost is at least the GPU's own gap between dependent kernels of a replayed program
#: (1.1–1.4 µs measured by task=validate on an H200, dse/data/device_validation/h200, microbench.csv
#: ``kernel_chain``) and a collective's fixed cost at least NCCL's base latency of its low-latency
#: ring protocol (3.6 µs, NVIDIA/nccl src/graph/tuning.cc ``baseLat`` Ring/LL)
FLOORS = {("launch", "graph"): {"kernel_overhead_s": 1.2e-6, "link_latency": 3.6e-6}}


def unmeasured_by_order(problem: Problem, layout: cal.Layout, theta, keep: np.ndarray) -> np.ndarray:
    """An ordered grouping's group without kept rows takes the values of its nearest measured group in
    the order (the mean, in the fitted coordinate, of the two when both sides are as near), not the
    pool: the pool mixes the dearer and the cheaper paths (for graph replay, Python dispatch), while
    the nearest measured path is a bound. A group with a sourced floor (:data:`FLOORS`) whose nearest
    measured groups are all dearer takes the geometric midpoint of the floor and them (graph replay
    left out: between the GPU's own kernel gap and the host path). Groups with rows, and unordered
    groupings, keep their fitted values."""
    theta = np.array(theta, float)
    for i, (t, k) in enumerate(zip(layout.terms, layout.offsets())):
        order = ORDERED.get(t.by)
        if order is None:
            continue
        seen = set(problem.df.loc[keep & problem.df.expressible.values, t.by])
        groups = layout.groups[i]
        for j, g in enumerate(groups):
            if g in seen or g not in order:
                continue
            pos = order.index(g)
            near = sorted((abs(order.index(h) - pos), h) for h in seen if h in order and h in groups)
            if near:
                nearest = [h for d, h in near if d == near[0][0]]
                theta[k + 1 + j] = np.mean([theta[k + 1 + groups.index(h)] for h in nearest])
                floor = FLOORS.get((t.by, g), {}).get(t.field)
                if floor is not None and all(order.index(h) > pos for h in nearest):
                    # between its floor and the dearer path above it: the geometric midpoint (the
                    # median of a log-uniform prior over the two bounds)
                    theta[k + 1 + j] = 0.5 * (theta[k + 1 + j] + cal.to_param(t.kind, floor, t.scale) - theta[k])
    return theta


_RESIDUALS: dict = {}


def _residual(problem: Problem, layout: cal.Layout):
    """The residual of the fit (one function object per problem and terms, so one compile).

    ``residual(theta, mask, theta0, want_share)``: log errors of the rows in ``mask`` and the ridge
    penalties; with ``want_share`` = 1 the first part is each row's memory-bound share instead (the
    same compiled function serves predictions and regimes).
    """
    key = (id(problem), layout.terms)
    if key not in _RESIDUALS:
        predict = problem.predict_fn(layout)
        published = jnp.asarray(np.log(problem.df.published.values[problem.order]))

        def residual(theta, mask, theta0, want_share):
            value, share = predict(theta)
            r = jnp.where(want_share > 0, share, (jnp.log(value) - published) * mask)
            return jnp.concatenate([r, cal.penalties(layout, theta, theta0)])
        _RESIDUALS[key] = residual
    return _RESIDUALS[key]


def predictions(problem: Problem, layout: cal.Layout, theta) -> tuple[np.ndarray, np.ndarray]:
    """(predicted value, memory-bound share) of every row, through the fit's own compiled residual."""
    res = _residual(problem, layout)
    if res not in cal._JITS:
        cal._JITS[res] = (jax.jit(res), None)
    f = cal._JITS[res][0]
    n, t = len(problem.order), jnp.asarray(theta)
    ones = jnp.ones(n)
    r = np.asarray(f(t, ones, t, jnp.asarray(0.0)))[:n]
    share = np.asarray(f(t, ones, t, jnp.asarray(1.0)))[:n]
    pred, sh = np.full(len(problem.df), np.nan), np.full(len(problem.df), np.nan)
    pred[problem.order] = np.exp(r + np.log(problem.df.published.values[problem.order]))
    sh[problem.order] = share
    return pred, sh


# ----------------------------------------------------------------------------- catalog, folds, bands

#: catalog file (conf/engine/<name>.yaml) of each engine's software terms
ENGINE_FILES = {"FasterTransformer": "fastertransformer", "Megatron-LM": "megatron_lm", "TensorRT-LLM": "tensorrt_llm",
                "gpt-fast": "gpt_fast"}
#: the engine whose terms the hardware catalog carries by default
DEFAULT_ENGINE = "TensorRT-LLM"


def catalog_theta(problem: Problem, layout: cal.Layout, catalog: Catalog) -> np.ndarray:
    """The parameter vector that reproduces the shipped catalog: each family's values from its
    devices' ``conf/hardware`` entries, each engine's from ``conf/engine`` (so the table is what a
    user of the catalog gets)."""
    from dse.measure.engines import load_engine
    theta = np.zeros(layout.size)
    for i, (t, k) in enumerate(zip(layout.terms, layout.offsets())):
        vals = []
        for g in layout.groups[i]:
            if t.by == "family":
                dev = problem.df.device[problem.df.family == g].iloc[0]
                vals.append(float(getattr(catalog.load_hardware(dev), t.field)))
            else:  # an engine, or a launch path: the value its engines' profiles carry (one value per path)
                engines = [g] if t.by == "engine" else sorted(problem.df.engine[problem.df[t.by] == g].unique())
                vals.append(float(np.mean([load_engine(catalog.conf_dir, ENGINE_FILES[e]).get(t.field, 0.0)
                                           for e in engines])))
        x = np.asarray([cal.to_param(t.kind, v if (t.kind == cal.UNIT or v > 0) else 1e-12 * t.scale, t.scale)
                        for v in vals])
        theta[k] = x.mean()
        theta[k + 1:k + 1 + len(vals)] = x - x.mean()
    return theta


def regime(kind: str, n_gpus: float, mem_share: float) -> str:
    """The regime of a prediction, for its band: memory use; communication (collectives on the path:
    more than one GPU); memory-bound (over half the time in memory-bound operators); compute-bound."""
    if kind == "memory_bytes":
        return "memory use"
    if n_gpus > 1:
        return "communication"
    return "memory-bound" if mem_share > 0.5 else "compute-bound"


THROUGHPUT_KINDS = ("tokens_per_s", "tokens_per_s_per_gpu", "decode_tokens_per_s")


def _time_sign(kinds) -> np.ndarray:
    """+1 for times and sizes, −1 for rates: residuals in the direction of time (a rate's log error
    is minus its time's)."""
    return np.where(pd.Series(kinds).isin(THROUGHPUT_KINDS).values, -1.0, 1.0)


FOLDS = {"source": "source_family", "model family": "model_family"}


def leave_one_out(problem: Problem, by: str, progress=print) -> np.ndarray:
    """Each row's prediction by a fit that did not see its group (``by``: a column of the rows)."""
    out = np.full(len(problem.df), np.nan)
    for g in sorted(problem.df[by].unique()):
        held = (problem.df[by] == g).values
        layout, theta, info = fit(problem, ~held)
        out[held] = predictions(problem, layout, theta)[0][held]
        progress(f"  left out {by}={g}: {held.sum()} rows, median |error| "
                 f"{100 * np.nanmedian(np.abs(out[held] / problem.df.published.values[held] - 1)):.1f}%")
    return out


def bands_from(log_ratio: np.ndarray, regimes: np.ndarray, lo=0.10, hi=0.90) -> pd.DataFrame:
    """p10 and p90 of log(published / predicted) by regime (the band: predicted · exp(q))."""
    rows = []
    for r in sorted(set(regimes)):
        x = log_ratio[(regimes == r) & np.isfinite(log_ratio)]
        rows.append({"regime": r, "n": len(x), "q10": float(np.quantile(x, lo)), "q90": float(np.quantile(x, hi))})
    return pd.DataFrame(rows)


def nested_coverage(log_ratio, regimes, groups) -> float:
    """Share of rows inside bands built without their own group's residuals (honest coverage)."""
    inside = []
    for g in np.unique(groups):
        held = groups == g
        b = bands_from(log_ratio[~held], regimes[~held]).set_index("regime")
        for x, r in zip(log_ratio[held], regimes[held]):
            if r in b.index and np.isfinite(x):
                inside.append(b.q10[r] <= x <= b.q90[r])
    return float(np.mean(inside))


def run(catalog: Catalog, loo: bool = True, loo_each_model: bool = False,
        progress=print) -> tuple[pd.DataFrame, dict]:
    """Every row predicted with the shipped catalog, the leave-one-out predictions, bands and summary.

    ``loo_each_model``: also refit with each of the 14 models left out in turn (column
    ``loo_each_model_error``; about 10 s more), a finer fold than the model family.
    """
    problem = Problem.build(catalog)
    layout = problem.layout()
    theta = catalog_theta(problem, layout, catalog)
    pred, share = predictions(problem, layout, theta)
    df = problem.df.assign(predicted=pred, mem_share=share)
    df["error"] = df.predicted / df.published - 1
    df["regime"] = [regime(k, n, s) for k, n, s in zip(df.kind, df.tp * df.pp, df.mem_share)]
    summary = {"rows": len(df), "expressible": int(df.expressible.sum()),
               "median_abs_error": float(df.error.abs().median()), "p90_abs_error": float(df.error.abs().quantile(0.9))}
    if loo:
        residuals, groups = [], []
        for name, col in FOLDS.items():
            progress(f"leave-one-{name}-out fits:")
            p = leave_one_out(problem, col, progress)
            key = col.replace("_family", "")
            df[f"loo_{key}_predicted"] = p
            df[f"loo_{key}_error"] = p / df.published - 1
            summary[f"loo_{key}_median_abs_error"] = float(np.nanmedian(np.abs(df[f"loo_{key}_error"])))
            residuals.append(_time_sign(df.kind) * np.log(df.published / p).values)
            groups.append((name + ":" + df[col]).values)
        reg = np.concatenate([df.regime.values] * len(FOLDS))
        lr, grp = np.concatenate(residuals), np.concatenate(groups)
        bands = bands_from(lr, reg)
        summary["bands"] = bands
        summary["band_coverage_nested"] = nested_coverage(lr, reg, grp)
        b = bands.set_index("regime")
        sign = _time_sign(df.kind)
        q10, q90 = b.q10.reindex(df.regime).values, b.q90.reindex(df.regime).values
        df["predicted_p10"] = df.predicted * np.exp(np.where(sign > 0, q10, -q90))
        df["predicted_p90"] = df.predicted * np.exp(np.where(sign > 0, q90, -q10))
        for name, col in FOLDS.items():
            key = col.replace("_family", "")
            x = sign * np.log(df.published / df[f"loo_{key}_predicted"])
            inside = (x >= b.q10.reindex(df.regime).values) & (x <= b.q90.reindex(df.regime).values)
            summary[f"band_coverage_loo_{key}"] = float(inside.mean())
    if loo and loo_each_model:
        progress("leave-one-model-out fits:")
        p = leave_one_out(problem, "model", progress)
        df["loo_each_model_predicted"], df["loo_each_model_error"] = p, p / df.published - 1
        summary["loo_each_model_median_abs_error"] = float(np.nanmedian(np.abs(df.loo_each_model_error)))
    return df, summary


def calibrate(catalog: Catalog, progress=print) -> dict:
    """Fit every term on every published row and write the catalog: each fitted family's values into
    every ``conf/hardware`` device of that family (calibrated where the family has rows, transferred
    to its other devices), each engine's terms into ``conf/engine``, the catalog's engine terms from
    TensorRT-LLM. Returns the values."""
    from dse.measure import engines
    problem = Problem.build(catalog)
    layout, theta, info = fit(problem, max_nfev=80)
    vals = cal.values(layout, theta)
    progress(f"fit on {len(problem.df)} rows: {info}")
    counts = problem.df.groupby("family").size()
    hw_dir = Path(catalog.conf_dir) / "hardware"
    date = engines.stamp()
    launch = dict(zip(problem.df.engine, problem.df.launch))
    engine_vals = {e: {t.field: vals[f"{t.field}@{t.by}"][e if t.by == "engine" else launch[e]]
                       for t in layout.terms if t.by in ("engine", "launch")}
                   for e in problem.group_names["engine"]}
    for dev, fam in FAMILY.items():
        path = hw_dir / f"{dev}.yaml"
        if not path.is_file():
            continue
        has = fam in problem.group_names["family"]
        fam_vals = {t.field: vals[f"{t.field}@family"][fam if has else "pooled"]
                    for t in layout.terms if t.by == "family"}
        used = sorted(problem.df.device[problem.df.family == fam].unique()) if has else []
        if has:
            how = (f"{fam} terms fitted to {counts[fam]} published rows on {', '.join(used)} "
                   f"(dse/data/published_measurements.csv)"
                   + ("" if dev in used else f"; transferred to {dev} (same generation)"))
        else:
            how = f"no {fam} measurements: the pooled values of all families (a guess; recalibrate when data exist)"
        comment = [f"`python -m dse task=calibrate` ({date}); {how};",
                   f"software terms (kernel overhead and fixed collective latency of its launch path, step "
                   f"overhead, memory reserve) of {DEFAULT_ENGINE} (conf/engine has the others)."]
        engines.update_hardware_yaml(path, {**fam_vals, **engine_vals[DEFAULT_ENGINE]}, comment)
    n_rows = problem.df.groupby("engine").size()
    for e, v in engine_vals.items():
        engines.write_engine(catalog.conf_dir, ENGINE_FILES[e], e, v, f"{date}; {n_rows[e]} published rows")
    return vals
