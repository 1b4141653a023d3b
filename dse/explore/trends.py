"""Growth rates of the memory-wall trends: least squares in log space (Gholami et al. 2024, Fig. 1).

``growth_per_2y = exp(2·b)`` where ``ln(value) = a + b·year`` is the least-squares line: the
paper's "3.0x / 2 years" figures are fits of this form to the digitized points shipped in
``dse/data`` (hardware_trend.csv, model_trend.csv; sources there).
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd


def data_path(name: str):
    return resources.files("dse.data") / name


def fit_growth(years, values) -> dict:
    """Least-squares line of ln(value) on the year: growth per 2 years, R², doubling time."""
    x, y = np.asarray(years, float), np.log(np.asarray(values, float))
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    r2 = 1.0 - resid.var() / y.var() if y.var() > 0 else 1.0
    return {"growth_per_2y": float(np.exp(2 * b)), "r2": float(r2), "n_points": int(len(x)),
            "first_year": float(x.min()), "last_year": float(x.max()), "intercept_ln": float(a), "slope_ln_per_year": float(b)}


def _decimal_year(dates: pd.Series) -> pd.Series:
    d = pd.to_datetime(dates)
    return d.dt.year + (d.dt.day_of_year - 1) / 365.25


def trend_points() -> pd.DataFrame:
    """All digitized points as (series, year, value, label) rows."""
    hw = pd.read_csv(data_path("hardware_trend.csv"))
    names = {"FLOPS": "peak_flops", "DRAM_BW": "dram_bandwidth", "Interconnect": "interconnect_bandwidth"}
    rows = [pd.DataFrame({"series": hw.series.map(names), "year": hw.year_decimal, "value": hw.normalized_value,
                          "label": hw.label_in_figure.fillna("")})]
    m = pd.read_csv(data_path("model_trend.csv"))
    params = m[(m.quantity == "params") & (m.in_fitted_trend == "yes")]
    compute = m[(m.quantity == "training_compute") & (m.group == "Transformer")]
    memory = m[m.quantity == "params_capacity_of_hw_memory"]
    for series, sub in (("transformer_params", params), ("training_compute", compute), ("accelerator_memory", memory)):
        rows.append(pd.DataFrame({"series": series, "year": _decimal_year(sub.date), "value": sub.value.astype(float),
                                  "label": sub.name}))
    return pd.concat(rows, ignore_index=True)


PAPER = {"peak_flops": 3.0, "dram_bandwidth": 1.6, "interconnect_bandwidth": 1.4, "transformer_params": 410.0,
         "training_compute": 750.0, "accelerator_memory": 2.0}


def fit_all(points: pd.DataFrame | None = None) -> pd.DataFrame:
    points = trend_points() if points is None else points
    rows = []
    for series, g in points.groupby("series", sort=False):
        rows.append({"series": series, **fit_growth(g.year, g.value), "paper_growth_per_2y": PAPER.get(series)})
    return pd.DataFrame(rows)
