"""Exact non-dominated filtering over any objectives, each with its direction.

A point is on the front when no other point is at least as good in every objective and strictly
better in one. Points are deduplicated, sorted lexicographically (a dominating point always
comes earlier in that order), then:

- 2 objectives: one pass with a running minimum — O(n log n) (Kung, Luccio and Preparata 1975);
- 3 objectives: a point is dominated iff an earlier point (in lexicographic order) is <= in the
  other two objectives, an offline 2-D dominance query answered by divide and conquer over the
  sorted order (Kung et al. 1975; Bentley 1980), one vectorized sort and prefix minimum per
  level — O(n log² n), independent of the front's size;
- more: candidates are checked in blocks against the front found so far, vectorized in numpy —
  O(n · |front|), fast when the front is small compared with the cloud, as in design sweeps.

Exact duplicates of a front point are on the front too. The front of a union equals the front of
the union of the parts' fronts, which is how chunks, shards and multirun jobs are merged.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dse.core.design import DesignError

BLOCK = 256


def _as_minimize(objs: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    sign = np.array([1.0 if d == "min" else -1.0 for d in directions])
    return np.asarray(objs, dtype=float) * sign


def pareto_mask(objs: np.ndarray, directions: Sequence[str] | None = None) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``objs`` (n × k); directions 'min'/'max' (default min)."""
    objs = np.asarray(objs, dtype=float)
    n, k = objs.shape
    if n == 0:
        return np.zeros(0, bool)
    x = _as_minimize(objs, directions or ["min"] * k)
    if np.isnan(x).any():
        raise ValueError("objectives contain NaN; drop those rows first")
    uniq, inverse = _unique_rows(x)  # lexicographically sorted, unique
    if k == 1:
        keep = np.zeros(len(uniq), bool)
        keep[0] = True
    elif k == 2:
        prev_min = np.minimum.accumulate(np.concatenate([[np.inf], uniq[:-1, 1]]))
        keep = uniq[:, 1] < prev_min
    elif k == 3:
        keep = _front3(uniq)
    else:
        keep = _front_blocks(uniq)
    return keep[inverse]


def _unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(x, axis=0, return_inverse=True)`` by one lexsort (several times faster)."""
    order = np.lexsort(x.T[::-1])
    xs = x[order]
    new = np.concatenate([[True], (xs[1:] != xs[:-1]).any(1)])
    inverse = np.empty(len(x), np.int64)
    inverse[order] = np.cumsum(new) - 1
    return xs[new], inverse


def _front3(u: np.ndarray) -> np.ndarray:
    """Front of unique, lexicographically sorted rows of 3 objectives (minimized), in O(n log² n).

    Row p is dominated iff some earlier row q has q.y <= p.y and q.z <= p.z (q.x <= p.x holds by
    the order, and q != p). Divide and conquer over the order: at level l every block of 2^(l+1)
    rows is a left and a right half; for each right row, the least z (as a dense rank) among the
    left rows of its block with y <= its y is one prefix minimum over the rows sorted by
    (block, y, order). Blocks are kept apart by offsetting the ranks of earlier blocks upwards,
    so one ``minimum.accumulate`` serves every block of a level at once.
    """
    n = len(u)
    ry = np.unique(u[:, 1], return_inverse=True)[1].reshape(-1).astype(np.int64)
    rz = np.unique(u[:, 2], return_inverse=True)[1].reshape(-1).astype(np.int64)
    nz = int(rz.max()) + 1 if n else 1
    idx = np.arange(n, dtype=np.int64)
    by_y = np.argsort(ry, kind="stable")  # (y, order): at equal y, the left half comes first
    dominated = np.zeros(n, bool)
    level = 0
    while (1 << level) < n:
        block = idx >> (level + 1)
        order = by_y[np.argsort(block[by_y], kind="stable")]
        b, right = block[order], ((order >> level) & 1).astype(bool)
        offset = (int(block[-1]) + 1 - b) * nz  # earlier blocks: larger values, never the minimum
        val = np.where(right, np.iinfo(np.int64).max, offset + rz[order])
        best = np.minimum.accumulate(val)
        hit = right & (best - offset <= rz[order])
        dominated[order[hit]] = True
        level += 1
    return ~dominated


def _front_blocks(u: np.ndarray) -> np.ndarray:
    """Front of unique, lexicographically sorted rows (only earlier rows can dominate later ones)."""
    keep = np.zeros(len(u), bool)
    front = np.empty((0, u.shape[1]))
    for s in range(0, len(u), BLOCK):
        blk = u[s:s + BLOCK]
        # dominated by the front so far (rows are unique, so <= everywhere means dominated)
        alive = ~(front[:, None, :] <= blk[None, :, :]).all(-1).any(0) if len(front) else np.ones(len(blk), bool)
        cand = blk[alive]
        # within the block: row j dominated by an earlier row i of the block
        le = (cand[:, None, :] <= cand[None, :, :]).all(-1)
        np.fill_diagonal(le, False)
        le &= np.tri(len(cand), k=-1, dtype=bool).T  # i < j only
        ok = ~le.any(0)
        idx = np.flatnonzero(alive)[ok]
        keep[s + idx] = True
        front = np.concatenate([front, blk[idx]])
    return keep


def _by_scenario(df: pd.DataFrame, scenarios: Sequence[str], fn) -> pd.DataFrame:
    """``fn`` applied to the rows of each scenario (one value of each scenario column), concatenated."""
    parts = [fn(g) for _, g in df.groupby(list(scenarios), sort=True, dropna=False)]
    return pd.concat(parts, ignore_index=True) if parts else df.iloc[:0].reset_index(drop=True)


def pareto_front(df: pd.DataFrame, objectives: Sequence[dict], *, fits_only: bool = True,
                 scenarios: Sequence[str] = ()) -> pd.DataFrame:
    """The non-dominated rows of ``df``, sorted by the objectives (best first).

    ``scenarios``: columns that are conditions, not choices (a context length, a batch): the front
    is taken within each of their values (a row only competes with rows of its own scenario), and
    the result is sorted by scenario, then objectives."""
    if scenarios:
        missing = [c for c in scenarios if c not in df.columns]
        if missing:
            raise DesignError(f"sweep.scenarios: {missing} not a column; name swept knobs (e.g. workload.prompt_len)")
        return _by_scenario(df, scenarios, lambda g: pareto_front(g, objectives, fits_only=fits_only))
    keys = [o["key"] for o in objectives]
    dirs = [o.get("dir", "min") for o in objectives]
    for key, d in zip(keys, dirs):
        if key not in df.columns:
            raise DesignError(f"sweep.objectives: unknown key {key!r}; available: {sorted(df.columns)}")
        if d not in ("min", "max"):
            raise DesignError(f"sweep.objectives: dir={d!r} for {key!r}: must be 'min' or 'max'")
    sub = df
    if fits_only and "fits_memory" in df.columns:
        sub = sub[sub["fits_memory"].astype(bool)]
    sub = sub.dropna(subset=keys)
    front = sub[pareto_mask(sub[keys].to_numpy(), dirs)]
    return front.sort_values(keys, ascending=[d == "min" for d in dirs], kind="stable").reset_index(drop=True)


def _dominated_rows(x: np.ndarray, by: np.ndarray, block: int = 4096) -> np.ndarray:
    """Rows of x (minimized) strictly dominated by some row of ``by``, in blocks of x (bounded memory)."""
    out = np.zeros(len(x), bool)
    if not len(by):
        return out
    for s in range(0, len(x), block):
        xb = x[s:s + block]
        le = (by[:, None, :] <= xb[None, :, :]).all(-1)
        lt = (by[:, None, :] < xb[None, :, :]).any(-1)
        out[s:s + block] = (le & lt).any(0)
    return out


def merge_fronts(front: pd.DataFrame, new: pd.DataFrame, objectives: Sequence[dict],
                 scenarios: Sequence[str] = ()) -> pd.DataFrame:
    """The front of ``front ∪ new`` when both are already fronts.

    Up to 3 objectives: the sweep-line front of the union (O(n log² n)). More: a row of either
    side survives iff no row of the other side dominates it (neither side dominates itself),
    which is exactly the front of the union, in O(|front|·|new|).
    """
    if not len(front):
        return new.reset_index(drop=True)
    if not len(new):
        return front
    if scenarios:
        both = pd.concat([front.assign(_side=0), new.assign(_side=1)], ignore_index=True)
        return _by_scenario(both, scenarios, lambda g: merge_fronts(
            g[g._side == 0].drop(columns="_side"), g[g._side == 1].drop(columns="_side"), objectives))
    f, n = objective_matrix(front, objectives), objective_matrix(new, objectives)
    if len(objectives) <= 3:  # the sweep-line fronts do not depend on the front's size
        keep = pareto_mask(np.concatenate([f, n]))
        keep_old, keep_new = keep[:len(f)], keep[len(f):]
    else:
        keep_new = ~_dominated_rows(n, f)
        keep_old = ~_dominated_rows(f, n[keep_new])
    keys = [o["key"] for o in objectives]
    merged = pd.concat([front[keep_old], new[keep_new]], ignore_index=True)
    return merged.sort_values(keys, ascending=[o.get("dir", "min") == "min" for o in objectives], kind="stable",
                              ignore_index=True)


def brute_force_mask(objs: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """O(n²) reference: row i is kept iff no row is <= in all and < in one (for tests)."""
    x = _as_minimize(objs, directions)
    le = (x[:, None, :] <= x[None, :, :]).all(-1)
    lt = (x[:, None, :] < x[None, :, :]).any(-1)
    return ~(le & lt).any(0)


@jax.jit
def _dominated_by(x, front):
    """Device-side: row i of x is strictly dominated by some row of ``front`` (both minimized)."""
    return jax.vmap(lambda p: jnp.any(jnp.all(front <= p, -1) & jnp.any(front < p, -1)))(x)


def dominated_by(x, front: np.ndarray):
    """Mask of the rows of ``x`` (a device array, minimized) dominated by ``front``; one compile per
    power-of-two front size (the front is padded with +inf rows, which dominate nothing)."""
    size = 1 << max(4, int(np.ceil(np.log2(max(len(front), 1)))))
    padded = np.full((size, front.shape[1]), np.inf, dtype=x.dtype)
    padded[: len(front)] = front
    return _dominated_by(x, jnp.asarray(padded))


def objective_matrix(columns, objectives: Sequence[dict], xp=np):
    """(n, k) matrix of the objectives, sign-flipped so that every one is minimized."""
    return xp.stack([xp.asarray(columns[o["key"]]) * (1.0 if o.get("dir", "min") == "min" else -1.0)
                     for o in objectives], axis=1)
