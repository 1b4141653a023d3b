"""Prediction intervals: every latency and throughput gets a p10–p90 band from the calibration's
out-of-sample errors, by regime (``dse/data/prediction_bands.csv``, written by ``task=calibrate``:
the 10th and 90th percentiles of log(published / predicted) time on rows whose source or model
family was left out of the fit).

A design's regime is read from its own metrics: more than one GPU → "communication" (collectives
on the critical path); else "memory-bound" when over half of the time is spent in memory-bound
operators, "compute-bound" otherwise. A time ``t`` gets ``[t·e^q10, t·e^q90]``; a rate ``r`` gets
``[r·e^−q90, r·e^−q10]``; ``memory_bytes`` gets the "memory use" band (FasterTransformer's reported GB).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

PATH = Path(__file__).resolve().parents[1] / "data" / "prediction_bands.csv"
#: the last part of a latency key (``ttft_s``, ``prefill.time_s``, ``serve.tpot_s``, ...) and of a rate key
TIMES_LAST = ("ttft_s", "tpot_s", "e2e_s", "time_s")
RATES_LAST = ("tokens_per_s", "decode_tokens_per_s", "tokens_per_s_per_gpu", "tokens_per_s_per_user",
              "tokens_per_s_per_device")


@functools.lru_cache(maxsize=1)
def load_bands() -> pd.DataFrame | None:
    if not PATH.is_file():
        return None
    b = pd.read_csv(PATH).set_index("regime")
    single = [r for r in ("compute-bound", "memory-bound") if r in b.index]
    if single:  # the envelope of the single-GPU regimes
        b.loc["single GPU", ["q10", "q90"]] = [b.loc[single, "q10"].min(), b.loc[single, "q90"].max()]
    return b


def write_bands(bands: pd.DataFrame, source: str) -> None:
    out = bands.assign(source=source)
    tmp = PATH.with_suffix(".csv.tmp")
    out.to_csv(tmp, index=False)
    tmp.replace(PATH)
    load_bands.cache_clear()


def regime_of(m: dict, n_gpus) -> np.ndarray:
    """The regime of each design (arrays or scalars of metrics); without the phase times (a serving
    table) a single-GPU design is "single GPU", whose band spans the compute- and memory-bound ones."""
    if "prefill.time_s" not in m:
        return np.where(np.asarray(n_gpus) > 1, "communication", "single GPU")
    pre, gen = np.asarray(m["prefill.time_s"], float), np.asarray(m["generate.time_s"], float)
    share = (np.asarray(m["prefill.memory_bound_frac"]) * pre + np.asarray(m["decode.memory_bound_frac"]) * gen) \
        / np.maximum(pre + gen, 1e-30)
    return np.where(np.asarray(n_gpus) > 1, "communication", np.where(share > 0.5, "memory-bound", "compute-bound"))


def _is_time(key: str) -> bool:
    return key.split(".")[-1] in TIMES_LAST


def _is_rate(key: str) -> bool:
    return key.split(".")[-1] in RATES_LAST


def with_bands(m: dict, n_gpus) -> dict:
    """``m`` plus ``<key>_p10`` and ``<key>_p90`` for every latency and rate (scalars or arrays),
    ``serve.*`` keys included (a float per key where ``m`` holds scalars)."""
    b = load_bands()
    if b is None:
        return m
    reg = regime_of(m, n_gpus)
    q10 = b.q10.reindex(np.ravel(reg)).values.reshape(np.shape(reg))
    q90 = b.q90.reindex(np.ravel(reg)).values.reshape(np.shape(reg))
    out = dict(m)
    scalar = np.ndim(reg) == 0
    cast = (lambda x: float(x)) if scalar else (lambda x: x)  # noqa: E731
    for k, v in m.items():
        if isinstance(v, (bool, np.bool_)) or k.endswith(("_p10", "_p90")):
            continue
        if k.split(".")[-1] == "memory_bytes" and "memory use" in b.index:  # the engines' reported memory
            lo, hi = np.exp(b.q10["memory use"]), np.exp(b.q90["memory use"])
        elif _is_time(k):
            lo, hi = np.exp(q10), np.exp(q90)
        elif _is_rate(k):
            lo, hi = np.exp(-q90), np.exp(-q10)
        else:
            continue
        out[f"{k}_p10"], out[f"{k}_p90"] = cast(np.asarray(v) * lo), cast(np.asarray(v) * hi)
    return out


def with_bands_frame(df):
    """A results DataFrame (sweep rows, a Pareto front) with ``<key>_p10`` and ``<key>_p90`` columns."""
    need = ("prefill.time_s", "generate.time_s", "prefill.memory_bound_frac", "decode.memory_bound_frac")
    if load_bands() is None or df.empty:
        return df
    if not all(k in df for k in need):
        need = ()
    n = 1.0
    for k in ("workload.tp", "workload.pp"):
        if k in df:
            n = n * df[k].astype(float).values
    cols = {k: df[k].values for k in df.columns if _is_time(k) or _is_rate(k) or k in need}
    extra = {k: v for k, v in with_bands(cols, n).items() if k.endswith(("_p10", "_p90")) and k not in df}
    return pd.concat([df, pd.DataFrame(extra, index=df.index)], axis=1)  # one insert (no fragmentation)
