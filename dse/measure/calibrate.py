"""The one fitting path: physically named efficiency terms fitted by least squares on log time,
through the cost model's own ``evaluate`` (no second formula).

A *term* is a :class:`dse.core.hardware.Hardware` field (achieved bandwidth, GEMM efficiency and
its half-saturation rows, attention efficiency, per-kernel and per-step overheads, collective
latency, ...) shared by a *group* of rows: a device family (same vendor and generation: the
hardware terms), an engine (its software terms) or an engine's launch path (the fixed costs of a
kernel and of a collective). Each term is a pooled value plus one deviation per group, the
deviations pulled toward 0 by a ridge penalty, so a group with few rows stays near the pool and a
group with none (a left-out source, a device without measurements) gets the pooled value — the
transfer rule (``dse.measure.accuracy`` gives an unmeasured launch path its nearest measured one
instead). Never a constant per row.

Loss: Σ (log predicted − log measured)² over the rows kept, + Σ (δ/σ_group)² + Σ ((g − g₀)/σ₀)²,
minimized by trust-region least squares (``scipy.optimize.least_squares``) on the compiled cost
model, evaluated for every row at once (``jax.vmap`` per architecture structure, one compile).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import least_squares

from dse.core.hardware import Hardware

UNIT, POSITIVE = "unit", "positive"


@dataclass(frozen=True)
class Term:
    """A Hardware field fitted per group (``by``: a column of the rows, e.g. device family or engine).

    ``kind``: "unit" — a fraction in (0, 1] (fitted as a logit); "positive" — a positive amount
    (fitted as a log around ``scale``). ``spread``: the ridge's standard deviation of a group's
    deviation from the pool, in the fitted coordinate (logit or natural log).
    """

    field: str
    by: str
    kind: str
    scale: float = 1.0
    spread: float = 0.5
    prior_sd: float = 3.0


def to_param(kind: str, value, scale: float):
    v = np.asarray(value, float)
    if kind == UNIT:
        v = np.clip(v, 1e-4, 1 - 1e-4)
        return np.log(v / (1 - v))
    return np.log(np.maximum(v, 1e-30) / scale)


def from_param(kind: str, x, scale: float):
    return jax.nn.sigmoid(x) if kind == UNIT else scale * jnp.exp(x)


@dataclass
class Layout:
    """Where each term's pooled value and group deviations sit in the parameter vector."""

    terms: tuple
    groups: dict  # term index -> list of group names
    size: int

    @classmethod
    def build(cls, terms: Sequence[Term], group_names: dict) -> "Layout":
        groups, size = {}, 0
        for i, t in enumerate(terms):
            groups[i] = list(group_names[t.by])
            size += 1 + len(groups[i])
        return cls(tuple(terms), groups, size)

    def offsets(self):
        out, k = [], 0
        for i in range(len(self.terms)):
            out.append(k)
            k += 1 + len(self.groups[i])
        return out


def row_hardware(layout: Layout, theta, base: Hardware, row_groups: dict) -> Hardware:
    """Each row's Hardware: ``base`` (stacked catalog devices, one per row) with the fitted terms.

    ``row_groups[by]``: integer array, each row's group index in ``layout.groups`` order.
    """
    fields = {}
    for i, (t, k) in enumerate(zip(layout.terms, layout.offsets())):
        dev = theta[k + 1 + jnp.asarray(row_groups[t.by])]
        fields[t.field] = from_param(t.kind, theta[k] + dev, t.scale)
    return dataclasses.replace(base, **fields)


def initial(layout: Layout, defaults: dict) -> np.ndarray:
    """Pooled values at ``defaults[field]``, deviations 0."""
    x = np.zeros(layout.size)
    for t, k in zip(layout.terms, layout.offsets()):
        v = defaults.get(t.field, 0.0)
        if t.kind == UNIT:  # start off the sigmoid's flat ends
            v = min(max(v, 0.05), 0.9)
        elif v <= 0:  # a positive term absent from the catalog starts at its scale
            v = t.scale
        x[k] = to_param(t.kind, v, t.scale)
    return x


def penalties(layout: Layout, theta, theta0):
    """Ridge residuals: deviations over their spread, pooled values over their prior width."""
    out = []
    for i, (t, k) in enumerate(zip(layout.terms, layout.offsets())):
        out.append((theta[k:k + 1] - theta0[k:k + 1]) / t.prior_sd)
        out.append(theta[k + 1:k + 1 + len(layout.groups[i])] / t.spread)
    return jnp.concatenate(out)


_JITS: dict = {}


def fit_log(residual: Callable, x0: np.ndarray, args: tuple = (), *, max_nfev: int = 40,
            autodiff: bool = False, ftol: float = 1e-10) -> tuple[np.ndarray, dict]:
    """Least squares on a traceable residual vector (log errors and penalties).

    ``residual(theta, *args) -> 1-d array``; returns (theta, info). The compiled residual is kept
    per ``residual`` function, so refits with other ``args`` (another fold's row mask) do not
    recompile. The Jacobian is by finite differences on the compiled residual (a few ms per call;
    compiling ``jax.jacfwd`` of the whole cost model over every published row costs more than the
    fit) or, with ``autodiff``, by forward-mode autodiff. Shared by every calibration in dse
    (task=validate's microbenchmarks and task=calibrate's published measurements).
    """
    if residual not in _JITS:
        _JITS[residual] = (jax.jit(residual), jax.jit(jax.jacfwd(residual)) if autodiff else None)
    f, jac = _JITS[residual]
    fun = lambda x: np.asarray(f(jnp.asarray(x), *args))  # noqa: E731
    jac_fn = (lambda x: np.asarray(jac(jnp.asarray(x), *args))) if jac is not None else "2-point"
    res = least_squares(fun, x0, jac=jac_fn, method="lm", max_nfev=max_nfev, x_scale="jac", diff_step=1e-4,
                        ftol=ftol, xtol=1e-10)
    return res.x, {"cost": float(res.cost), "nfev": int(res.nfev), "status": int(res.status)}


def values(layout: Layout, theta) -> dict:
    """{field: {"pooled": v, group: v, ...}} in physical units."""
    out = {}
    for i, (t, k) in enumerate(zip(layout.terms, layout.offsets())):
        d = {"pooled": float(from_param(t.kind, theta[k], t.scale))}
        for j, g in enumerate(layout.groups[i]):
            d[g] = float(from_param(t.kind, theta[k] + theta[k + 1 + j], t.scale))
        out[f"{t.field}@{t.by}"] = d
    return out
