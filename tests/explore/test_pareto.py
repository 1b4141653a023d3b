"""Pareto filtering against brute force on random data, with ties, in 2 to 4 objectives."""
import numpy as np
import pandas as pd
import pytest

from dse.explore.pareto import brute_force_mask, pareto_front, pareto_mask


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_mask_equals_brute_force(k, seed):
    rng = np.random.default_rng(seed)
    n = 3000
    # few distinct values per axis: many ties and exact duplicates, like a grid
    x = rng.integers(0, 12, size=(n, k)).astype(float) if seed % 2 else rng.normal(size=(n, k))
    dirs = [("min", "max")[i % 2] for i in range(k)]
    np.testing.assert_array_equal(pareto_mask(x, dirs), brute_force_mask(x, dirs))


def test_front_rows_sorted_and_fits_only():
    df = pd.DataFrame({"a": [1, 2, 3, 0], "b": [3, 2, 1, 0], "fits_memory": [True, True, True, False]})
    front = pareto_front(df, [{"key": "a", "dir": "min"}, {"key": "b", "dir": "min"}])
    assert front["a"].tolist() == [1, 2, 3]
    both = pareto_front(df, [{"key": "a", "dir": "min"}, {"key": "b", "dir": "min"}], fits_only=False)
    assert both["a"].tolist() == [0]


def test_union_of_fronts_is_front_of_union():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5000, 3))
    parts = np.array_split(np.arange(len(x)), 4)
    merged = np.concatenate([p[pareto_mask(x[p])] for p in parts])
    merged = merged[pareto_mask(x[merged])]
    np.testing.assert_array_equal(np.sort(merged), np.flatnonzero(pareto_mask(x)))


@pytest.mark.parametrize("seed", range(4))
def test_merge_fronts_equals_front_of_union(seed):
    from dse.explore.pareto import merge_fronts
    rng = np.random.default_rng(seed)
    objectives = [{"key": "a", "dir": "min"}, {"key": "b", "dir": "max"}, {"key": "c", "dir": "min"}]
    df = pd.DataFrame(rng.integers(0, 9, size=(4000, 3)).astype(float), columns=["a", "b", "c"]).assign(i=range(4000))
    parts = [df.iloc[s:s + 600] for s in range(0, len(df), 600)]
    front = pd.DataFrame()
    for part in parts:
        front = merge_fronts(front, pareto_front(part, objectives, fits_only=False), objectives)
    whole = pareto_front(df, objectives, fits_only=False)
    assert sorted(front.i) == sorted(whole.i)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_staircase_only_drops_dominated_rows_and_most_of_them(k, seed):
    """The staircase prefilter is one-sided: every row it drops is strictly dominated by a
    witness (checked by brute force), duplicates of a witness are kept, and with the witnesses
    being a front it finds most dominated rows (a cut of 64 values per axis)."""
    from dse.explore.pareto import dominated_by_staircase
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, size=(4000, k)).astype(float) if seed % 2 else rng.normal(size=(4000, k))
    x[:5] = np.nan  # a missing objective is never dropped here (the exact filter drops it)
    witnesses = x[5:1005][pareto_mask(x[5:1005])]
    dropped = dominated_by_staircase(x, witnesses, cells=64)
    truly = np.array([((witnesses <= p).all(1) & (witnesses < p).any(1)).any() for p in x])
    assert not (dropped & ~truly).any()
    assert dropped[truly].mean() > 0.9
    assert not dominated_by_staircase(witnesses, witnesses).any()
