"""The Python API's sweep and optimize: the same engines as ``task=sweep`` and ``task=optimize``,
on pytrees and plain dicts, without Hydra (issue 16: the API offered only ``evaluate``).

    front, rows = dse.sweep(design, hw, {"quant.w_bits": [16, 8, 4], "workload.batch": [1, 8, 64]})
    best = dse.optimize(design, hw, {"workload.batch": {"low": 1, "high": 256, "integer": True}},
                        objective="neg_decode_tokens_per_s", constraints={"max_tpot_s": 0.05})

Knobs take the forms of a config ``space`` (a list of values or ``{low, high, num, log, integer,
multiple_of}``); numbers may be ints.
"""
from __future__ import annotations

import tempfile
from typing import Any, Mapping, Sequence

import pandas as pd

from dse.core.accuracy import AccuracyParams
from dse.core.conventions import DEFAULT, Conventions
from dse.core.design import Design, DesignError
from dse.core.hardware import Hardware

DEFAULT_OBJECTIVES = ({"key": "decode_tokens_per_s", "dir": "max"}, {"key": "loss_proxy", "dir": "min"},
                      {"key": "memory_bytes", "dir": "min"})


def _knobs(space: Mapping[str, Any], design: Design, hw: Hardware):
    from dse.explore.space import parse_space, validate_knobs
    knobs = parse_space(dict(space))
    if not knobs:
        raise DesignError("space: empty; give at least one knob, e.g. {'workload.batch': [1, 8, 64]}")
    validate_knobs(knobs, design, hw)
    return knobs


def sweep(design: Design, hw: Hardware, space: Mapping[str, Any], *,
          objectives: Sequence[dict] = DEFAULT_OBJECTIVES, conv: Conventions = DEFAULT,
          acc: AccuracyParams | None = None, scenarios: Sequence[str] = (), fits_only: bool = True,
          keep_rows: bool = True, out_dir=None, dtype: str = "float32",
          chunk_size: int = 262_144) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Every point of the grid ``space`` (knob → values or range): (Pareto front, all rows or None).

    ``out_dir``: where the chunk files and ``results.parquet`` go (a temporary folder by default,
    removed afterwards); a rerun into the same folder resumes.
    """
    from dse.explore.sweep import Grid, run_sweep
    grid = Grid(tuple(_knobs(space, design, hw)))
    acc = acc if acc is not None else AccuracyParams()
    derive = False
    with tempfile.TemporaryDirectory() as tmp:
        out = out_dir or tmp
        res = run_sweep(design, hw, acc, conv, grid, out_dir=out, objectives=list(objectives), chunk_size=chunk_size,
                        keep_rows=keep_rows, fits_only=fits_only, derive_d_head=derive, dtype=dtype, progress=False,
                        scenarios=tuple(scenarios))
        rows = pd.read_parquet(f"{out}/results.parquet") if keep_rows else None
    return res.front, rows


def optimize(design: Design, hw: Hardware, knobs: Mapping[str, Any], *, objective: str = "neg_decode_tokens_per_s",
             constraints: Mapping[str, Any] | None = None, conv: Conventions = DEFAULT,
             acc: AccuracyParams | None = None, **settings) -> dict:
    """The best legal design over ``knobs`` (knob → legal values) under ``constraints`` (the keys of
    ``optimize.constraints``: loss_delta, loss_max, fits_memory, max_params, max_tpot_s, ...).

    Returns {"legal": {knob: value}, "metrics": exact metrics of the legal design, "feasible",
    "evaluations", "continuous": {knob: value}}. ``settings``: steps, starts, learning_rate, ...
    """
    import dataclasses

    from dse.core.metrics import evaluate
    from dse.explore.optimize import OBJECTIVES, Constraints, Settings
    from dse.explore.optimize import optimize as run
    if objective not in OBJECTIVES:
        raise DesignError(f"objective={objective!r}: unknown; available: {sorted(OBJECTIVES)}")
    ks = _knobs(knobs, design, hw)
    acc = acc if acc is not None else AccuracyParams()
    c = dict(constraints or {"loss_delta": 0.02, "max_tpot_s": 0.05})
    delta = c.pop("loss_delta", None)
    if delta is not None and c.get("loss_max") is None:
        if delta < 0:
            raise DesignError(f"constraints.loss_delta={delta:g}: must be >= 0 nats")
        c["loss_max"] = float(evaluate(design, hw, conv, acc)["loss_proxy"]) + delta
    fields = {f.name for f in dataclasses.fields(Constraints)}
    unknown = sorted(set(c) - fields)
    if unknown:
        raise DesignError(f"constraints: unknown {unknown}; available: {sorted(fields | {'loss_delta'})}")
    sfields = {f.name for f in dataclasses.fields(Settings)}
    if set(settings) - sfields:
        raise DesignError(f"settings: unknown {sorted(set(settings) - sfields)}; available: {sorted(sfields)}")
    r = run(design, hw, acc, conv, ks, objective, Constraints(**c), Settings(**settings))
    return {"legal": {k.key: float(v) for k, v in zip(ks, r.legal)}, "metrics": r.legal_metrics,
            "feasible": bool(r.feasible), "evaluations": int(r.evaluations),
            "continuous": {k.key: float(v) for k, v in zip(ks, r.continuous)}}
