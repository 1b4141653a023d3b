"""The deployment search of ``task=serve``: every aggregated and disaggregated deployment of a
device budget, enumerated as arrays and evaluated by one vmapped, jitted call of
:func:`dse.core.serving.serve` (compiled once per model/hardware structure), then the SLO filter,
the Pareto front of tokens/s per GPU against tokens/s per user, and the fewest devices for a
target request rate.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dse.core.conventions import Conventions
from dse.core.design import Arch, Design, is_valid, specialize
from dse.core.hardware import Hardware
from dse.core.metrics import COMPILER_OPTIONS
from dse.core.serving import serve
from dse.explore.pareto import pareto_front

#: the knobs a deployment row carries (config keys), besides the mode
KNOBS = ("workload.tp", "workload.pp", "workload.dp", "workload.microbatches", "workload.concurrency",
         "workload.chunk_tokens", "quant.w_bits", "quant.kv_bits", "workload.spec_k", "workload.disagg",
         "workload.prefill_tp", "workload.prefill_dp", "workload.prefill_batch", "workload.prefill_w_bits")
#: the serve_pareto.csv metric columns, first
METRICS = ("tokens_per_s_per_gpu", "tokens_per_s_per_user", "ttft_s", "tpot_s", "tpot_incl_first_s", "e2e_s",
           "j_per_token", "usd_per_mtok", "requests_per_s", "n_devices", "concurrency", "kv_capacity_requests",
           "spec_tokens_per_step", "disagg_balance", "kv_transfer_s")
POW2 = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class ServeGrid:
    """Values of each searched knob (lists); layouts are every split of ``gpus`` devices."""
    gpus: int = 8
    tp: tuple = POW2
    pp: tuple = (1, 2, 4, 8)
    concurrency: tuple = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    chunk_tokens: tuple = (0, 256, 512, 1024, 2048, 4096, 8192)
    w_bits: tuple = (16, 8, 4)
    kv_bits: tuple = (16, 8, 4)
    spec_k: tuple = (0, 1, 2, 3, 4)
    prefill_batch: tuple = (1, 2, 4, 8)
    prefill_w_bits: tuple = (0,)  # the prefill pool's weight bits (0: as the decode pool's)
    modes: tuple = ("aggregated", "disaggregated")


def layouts(g: ServeGrid) -> list[tuple]:
    """(disagg, tp, pp, dp, prefill_tp, prefill_dp) using exactly ``g.gpus`` devices."""
    out = []
    for tp, pp in itertools.product(g.tp, g.pp):
        if "aggregated" in g.modes and g.gpus % (tp * pp) == 0:
            out.append((0, tp, pp, g.gpus // (tp * pp), 1, 1))
    if "disaggregated" in g.modes:
        for ptp, pdp, tp, pp in itertools.product(g.tp, range(1, g.gpus), g.tp, g.pp):
            rest = g.gpus - ptp * pdp
            if rest > 0 and rest % (tp * pp) == 0:
                out.append((1, tp, pp, rest // (tp * pp), ptp, pdp))
    return out


def grid_arrays(g: ServeGrid) -> dict[str, np.ndarray]:
    """Every deployment of the grid as flat arrays keyed by config key (aggregated, then disaggregated)."""
    blocks = []
    for dis, tp, pp, dp, ptp, pdp in layouts(g):
        chunks = g.chunk_tokens if not dis else (0,)
        batches = g.prefill_batch if dis else (1,)
        pbits = g.prefill_w_bits if dis else (0,)
        combos = np.array(list(itertools.product(g.concurrency, chunks, g.w_bits, g.kv_bits, g.spec_k, batches, pbits)),
                          float)
        n = len(combos)
        fixed = {"workload.disagg": dis, "workload.tp": tp, "workload.pp": pp, "workload.dp": dp,
                 "workload.microbatches": pp, "workload.prefill_tp": ptp, "workload.prefill_dp": pdp}
        block = {k: np.full(n, float(v)) for k, v in fixed.items()}
        for j, k in enumerate(("workload.concurrency", "workload.chunk_tokens", "quant.w_bits", "quant.kv_bits",
                               "workload.spec_k", "workload.prefill_batch", "workload.prefill_w_bits")):
            block[k] = combos[:, j]
        blocks.append(block)
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def _designs(cols: dict, base: Design) -> Design:
    w = base.workload
    q = base.quant
    wl = dataclasses.replace(w, **{k.split(".")[1]: v for k, v in cols.items() if k.startswith("workload.")})
    qz = dataclasses.replace(q, **{k.split(".")[1]: v for k, v in cols.items() if k.startswith("quant.")})
    return Design(base.arch, qz, wl)


@partial(jax.jit, static_argnames=("conv",), compiler_options=COMPILER_OPTIONS)
def _evaluate(cols, base, hw, draft, *, conv):
    def one(c):
        d = _designs(c, base)
        m = serve(d, hw, conv, draft)
        m["valid"] = is_valid(d)
        return m
    return jax.vmap(one)(cols)


@dataclass
class SearchResult:
    rows: pd.DataFrame  # every valid deployment with its metrics
    feasible: pd.DataFrame  # rows meeting the SLOs that fit in memory
    front: pd.DataFrame  # Pareto front of feasible (tokens/s/GPU, tokens/s/user), best first
    points: int
    search_s: float  # evaluation + filtering of a compiled search
    compile_s: float


def search(base: Design, hw: Hardware, conv: Conventions, grid: ServeGrid, *, ttft_max_s: float,
           tpot_max_s: float, draft: Arch | None = None, dtype=jnp.float32) -> SearchResult:
    """Evaluate the whole grid (one compiled call), keep SLO-feasible rows, return their front."""
    cols = {k: jnp.asarray(v, dtype) for k, v in grid_arrays(grid).items()}
    base = dataclasses.replace(base, arch=specialize(base.arch))  # the grid varies the workload only
    draft = None if draft is None else specialize(draft)
    cast = partial(jax.tree.map, lambda x: jnp.asarray(x, dtype))
    args = (cols, cast(base), cast(hw), None if draft is None else cast(draft))
    t = time.perf_counter()
    jax.block_until_ready(_evaluate(*args, conv=conv))
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(_evaluate(*args, conv=conv))
    res = {k: np.asarray(v) for k, v in out.items()}
    ok = res.pop("valid")
    feas = ok & res["fits_memory"] & (res["ttft_s"] <= ttft_max_s) & (res["tpot_s"] <= tpot_max_s)
    search_s = time.perf_counter() - t
    frame = pd.DataFrame({**{k: np.asarray(v) for k, v in cols.items()}, **res})
    frame.insert(0, "mode", np.where(frame["workload.disagg"] > 0, "disaggregated", "aggregated"))
    rows = frame[ok].reset_index(drop=True)
    feasible = frame[feas].reset_index(drop=True)
    objectives = [{"key": "tokens_per_s_per_gpu", "dir": "max"}, {"key": "tokens_per_s_per_user", "dir": "max"}]
    front = pareto_front(feasible, objectives, fits_only=False) if len(feasible) else feasible
    return SearchResult(rows, feasible, front, len(frame), search_s, compile_s)


def fewest_devices(feasible: pd.DataFrame, target_rps: float) -> pd.DataFrame:
    """Per SLO-feasible deployment, the fewest devices that serve ``target_rps`` requests/s.

    Replicas scale a deployment: aggregated ``ceil(target / rate of one replica)`` replicas of
    tp·pp devices; disaggregated ``ceil(target / prefill replica rate)`` prefill replicas plus
    ``ceil(target / decode replica rate)`` decode replicas. Sorted by devices, then energy.
    """
    if not len(feasible) or target_rps <= 0:
        return feasible.iloc[:0]
    f = feasible
    replica = f["workload.tp"] * f["workload.pp"]
    agg = np.ceil(target_rps / (f["decode_rps"] / f["workload.dp"])) * replica
    pre_rate = f["prefill_rps"] / f["workload.prefill_dp"]
    dis = agg + np.ceil(target_rps / np.maximum(pre_rate, 1e-30)) * f["workload.prefill_tp"]
    devices = np.where(f["workload.disagg"] > 0, dis, agg)
    return f.assign(devices_for_target=devices).sort_values(["devices_for_target", "j_per_token"]).reset_index(drop=True)
