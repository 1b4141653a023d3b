"""Gradient-based co-design: optax over the relaxed space, then rounding to legal designs.

The knobs of a :class:`~dse.explore.space.Knob` list are relaxed to their interval [min, max]
(through a sigmoid, in log space for log knobs), the smooth cost model is minimized with any
optax optimizer under squared-hinge penalties whose weight grows over the run (a penalty
schedule), from several random starts at once (vmap). Each start's continuous optimum is then
rounded to its neighbouring legal values (every floor/ceil combination), and the best legal design
is improved by a local search over the discrete neighbours (±1 legal step per knob) — DOSA's
recipe (Hong et al. 2023). Every legal candidate is evaluated exactly (``smooth=False``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dse.core.accuracy import AccuracyParams
from dse.core.conventions import Conventions
from dse.core.design import Design, is_valid
from dse.core.hardware import Hardware
from dse.core.metrics import evaluate
from dse.explore.space import Knob, get_knob, set_knob

#: knobs with at most this many legal values are searched jointly around the rounded design,
#: all together when their combinations number at most BLOCK_MAX, else two at a time
SMALL_KNOB = 16
BLOCK_MAX = 2048

#: objective name → (metric, sign); cost_per_token is device-seconds per generated token.
OBJECTIVES = {"tpot_s": ("tpot_s", 1.0), "ttft_s": ("ttft_s", 1.0), "e2e_s": ("e2e_s", 1.0),
              "neg_tokens_per_s": ("tokens_per_s", -1.0), "neg_decode_tokens_per_s": ("decode_tokens_per_s", -1.0),
              "cost_per_token": ("cost_per_token", 1.0)}


@dataclass(frozen=True)
class Constraints:
    loss_max: float | None = None  # loss_proxy <= loss_max (nats)
    fits_memory: bool = True
    max_params: float | None = None
    max_tpot_s: float | None = None

    def values(self, m: dict) -> dict:
        """name → (value, limit); satisfied when value <= limit."""
        out = {}
        if self.loss_max is not None:
            out["loss_proxy"] = (m["loss_proxy"], self.loss_max)
        if self.fits_memory:
            out["memory_bytes"] = (m["memory_bytes"], m["mem_capacity_bytes"])
        if self.max_params is not None:
            out["params"] = (m["params"], self.max_params)
        if self.max_tpot_s is not None:
            out["tpot_s"] = (m["tpot_s"], self.max_tpot_s)
        return out

    def violations(self, m: dict):
        """Relative violations (value/limit − 1, clipped at 0), one per constraint, stacked on the last axis."""
        vals = [jnp.maximum(v / lim - 1.0, 0.0) for v, lim in self.values(m).values()]
        return jnp.stack(vals, -1) if vals else jnp.zeros(jnp.shape(m["tpot_s"]) + (0,))


@dataclass(frozen=True)
class Settings:
    optimizer: str = "adam"
    learning_rate: float = 0.05
    steps: int = 150
    starts: int = 8
    penalty: float = 1000.0
    seed: int = 0
    local_search_rounds: int = 50


def objective_of(m: dict, name: str, tp):
    if name not in OBJECTIVES:
        raise ValueError(f"optimize.objective={name!r}: unknown; available: {sorted(OBJECTIVES)}")
    metric, sign = OBJECTIVES[name]
    value = tp / m["tokens_per_s"] if metric == "cost_per_token" else m[metric]
    return sign * value


def _designs(values, design, hw, keys):
    d, h = design, hw
    for j, key in enumerate(keys):
        d, h = set_knob(d, h, key, values[j])
    return d, h


def _relax(u, lows, highs, logs):
    s = jax.nn.sigmoid(u)
    return jnp.where(logs, jnp.exp(jnp.log(lows) + (jnp.log(highs) - jnp.log(lows)) * s), lows + (highs - lows) * s)


@partial(jax.jit, static_argnames=("conv", "keys", "objective", "constraints"))
def exact_batch(values, design, hw, acc, *, conv, keys, objective, constraints):
    """Exact metrics, objective, violations and validity of a batch of knob-value rows."""
    def one(v):
        d, h = _designs(v, design, hw, keys)
        m = evaluate(d, h, conv, acc)
        return {"objective": objective_of(m, objective, d.workload.tp), "violation": constraints.violations(m),
                "valid": is_valid(d), "metrics": m}
    return jax.vmap(one)(values)


@dataclass
class Result:
    continuous: np.ndarray  # best start's continuous knob values
    continuous_metrics: dict
    legal: np.ndarray
    legal_metrics: dict
    feasible: bool
    evaluations: int
    trace: dict = field(default_factory=dict)  # step → arrays over starts


def optimize(design: Design, hw: Hardware, acc: AccuracyParams, conv: Conventions, knobs: list[Knob],
             objective: str, constraints: Constraints, settings: Settings = Settings()) -> Result:
    keys = tuple(k.key for k in knobs)
    lows = jnp.asarray([k.low for k in knobs])
    highs = jnp.asarray([max(k.high, k.low * (1 + 1e-9) + 1e-9) for k in knobs])
    logs = jnp.asarray([k.log for k in knobs])
    base = evaluate(design, hw, conv, acc)
    scale = jnp.abs(objective_of(base, objective, design.workload.tp)) + 1e-30
    opt = getattr(optax, settings.optimizer)(settings.learning_rate)

    def loss(u, weight):
        d, h = _designs(_relax(u, lows, highs, logs), design, hw, keys)
        m = evaluate(d, h, conv, acc, smooth=True)
        obj = objective_of(m, objective, d.workload.tp) / scale
        viol = constraints.violations(m)
        return obj + weight * jnp.sum(viol ** 2), (obj, jnp.max(viol, initial=0.0))

    @jax.jit
    def run(u0):
        def step(carry, t):
            u, state = carry
            weight = settings.penalty * 10.0 ** (4.0 * t / settings.steps)  # 1x → 10⁴x over the run
            (_, (obj, viol)), g = jax.vmap(jax.value_and_grad(loss, has_aux=True), (0, None))(u, weight)
            updates, state = jax.vmap(opt.update)(g, state, u)
            return (optax.apply_updates(u, updates), state), (obj * scale, viol)
        state0 = jax.vmap(opt.init)(u0)
        (u, _), (objs, viols) = jax.lax.scan(step, (u0, state0), jnp.arange(settings.steps, dtype=jnp.float64))
        return u, objs, viols

    rng = np.random.default_rng(settings.seed)
    u0 = jnp.asarray(rng.normal(0.0, 1.5, size=(settings.starts, len(knobs))))
    u, objs, viols = run(u0)
    cont = np.asarray(_relax(u, lows, highs, logs))
    evals = settings.starts * settings.steps

    kw = dict(conv=conv, keys=keys, objective=objective, constraints=constraints)
    values = [np.asarray(k.values, float) for k in knobs]

    def score(rows):
        n = len(rows)
        padded = np.concatenate([rows, np.repeat(rows[-1:], (1 << max(0, (n - 1).bit_length())) - n, 0)])
        out = jax.tree.map(lambda x: np.asarray(x)[:n],  # power-of-two batches: few compilations
                           exact_batch(jnp.asarray(padded, float), design, hw, acc, **kw))
        viol = out["violation"].sum(-1) if out["violation"].ndim > 1 else np.zeros(n)
        return out["objective"], np.where(out["valid"], viol, np.inf), out

    def best_of(objv, viol):
        feasible = viol <= 0
        if feasible.any():
            return int(np.argmin(np.where(feasible, objv, np.inf))), True
        return int(np.argmin(viol)), False

    # rounding: every floor/ceil combination of every start's continuous optimum
    neighbours = []
    for c in cont:
        per_knob = [sorted({int(np.clip(np.searchsorted(v, x) - 1, 0, len(v) - 1)),
                            int(np.clip(np.searchsorted(v, x), 0, len(v) - 1))}) for v, x in zip(values, c)]
        neighbours.extend(itertools.product(*per_knob))
    # the baseline's own legal neighbourhood too: it usually satisfies a loss budget relative to
    # itself, so the search has a feasible point to start from when rounding breaks a constraint
    base_vals = [float(get_knob(design, hw, k.key)) for k in knobs]
    neighbours.append(tuple(int(np.argmin(np.abs(v - x))) for v, x in zip(values, base_vals)))
    cand = np.unique(np.asarray(neighbours, int), axis=0)
    objv, viol, _ = score(np.stack([values[j][cand[:, j]] for j in range(len(knobs))], 1))
    evals += len(cand)
    i, feasible = best_of(objv, viol)
    best_idx, best_obj, best_viol = cand[i], objv[i], viol[i]
    # every point evaluated so far is no better than the current best, so only new ones are scored
    seen = {tuple(r) for r in cand}
    # local search (block coordinate descent): around the best legal design, every value of each
    # knob (a line) and every combination of the small knobs (<= SMALL_KNOB values each) as one
    # block when it has <= BLOCK_MAX points, else every pair of them (planes); move to the best
    # improvement until none improves. Joint moves matter: a constraint such as the loss budget
    # couples knobs (fewer KV heads pay for themselves only with more KV or weight bits).
    sizes = [len(v) for v in values]
    small = [j for j, n in enumerate(sizes) if n <= SMALL_KNOB]
    block = int(np.prod([sizes[j] for j in small])) if small else 0
    for _ in range(settings.local_search_rounds):
        moves = []
        for j in range(len(knobs)):
            line = np.repeat(best_idx[None], sizes[j], 0)
            line[:, j] = np.arange(sizes[j])
            moves.append(line)
        if len(small) > 1 and block <= BLOCK_MAX:
            cube = np.repeat(best_idx[None], block, 0)
            cube[:, small] = np.array(list(itertools.product(*[range(sizes[j]) for j in small])))
            moves.append(cube)
        else:
            for i, j in itertools.combinations(small, 2):
                plane = np.repeat(best_idx[None], sizes[i] * sizes[j], 0)
                plane[:, [i, j]] = np.array(list(itertools.product(range(sizes[i]), range(sizes[j]))))
                moves.append(plane)
        moves = np.unique(np.concatenate(moves), axis=0)
        moves = moves[[tuple(r) not in seen for r in moves]]
        if not len(moves):
            break
        seen.update(tuple(r) for r in moves)
        objv, viol, _ = score(np.stack([values[j][moves[:, j]] for j in range(len(knobs))], 1))
        evals += len(moves)
        j, ok = best_of(objv, viol)
        better = (ok and (not feasible or objv[j] < best_obj - 1e-12 * abs(best_obj))) or \
                 (not ok and not feasible and viol[j] < best_viol)
        if not better:
            break
        best_idx, best_obj, best_viol, feasible = moves[j], objv[j], viol[j], ok
    legal = np.asarray([values[j][best_idx[j]] for j in range(len(knobs))])
    _, _, out = score(legal[None])
    best_start = int(np.argmin(np.where(np.asarray(viols[-1]) <= 1e-3, np.asarray(objs[-1]), np.inf))) \
        if (np.asarray(viols[-1]) <= 1e-3).any() else int(np.argmin(np.asarray(viols[-1])))
    d, h = _designs(jnp.asarray(cont[best_start]), design, hw, keys)
    cont_metrics = {k: float(v) for k, v in evaluate(d, h, conv, acc, smooth=True).items()}
    return Result(cont[best_start], cont_metrics, legal, {k: np.asarray(v)[0].item() for k, v in out["metrics"].items()},
                  bool(feasible), evals, {"objective": np.asarray(objs), "max_violation": np.asarray(viols)})


def sensitivity(design: Design, hw: Hardware, acc: AccuracyParams, conv: Conventions, objective: str,
                factor: float = 1.1) -> dict:
    """Relative improvement of the (minimized) objective when one hardware resource grows by ``factor``.

    Positive = better: 0.05 means 10% more of that resource makes the design 5% better.
    """
    base = float(objective_of(evaluate(design, hw, conv, acc), objective, design.workload.tp))
    groups = {"mem_bw": ("mem_bw",), "peak_flops": ("peak_fp32", "peak_fp16", "peak_fp8", "peak_int8", "peak_int4"),
              "link_bw": ("link_bw",), "mem_capacity": ("mem_capacity",)}
    out = {}
    for name, fields in groups.items():
        more = type(hw)(**{**hw.__dict__, **{f: getattr(hw, f) * factor for f in fields}})
        val = float(objective_of(evaluate(design, more, conv, acc), objective, design.workload.tp))
        out[name] = (base - val) / abs(base) if base else 0.0
    return out
