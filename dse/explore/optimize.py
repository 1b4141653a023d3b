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
from dse.core.design import Design, DesignError, is_valid, order_slack
from dse.core.hardware import Hardware
from dse.core.hwcost import HwCostParams, hardware_cost
from dse.core.metrics import COMPILER_OPTIONS, evaluate, map_points
from dse.explore.search import BATCHES, budgeted_search, descend, penalized_step
from dse.explore.space import Knob, get_knob, set_knob, specialize_design

#: knobs with at most this many legal values are searched jointly around the rounded design,
#: all together when their combinations number at most BLOCK_MAX, else two at a time
SMALL_KNOB = 16
BLOCK_MAX = 2048

#: objective name → (metric, sign); cost_per_token is device-seconds per generated token;
#: tco_usd_per_mtok is USD per million generated tokens of the hardware cost model (dse.core.hwcost):
#: the devices' price amortized over their lifetime plus their energy at TDP.
OBJECTIVES = {"tpot_s": ("tpot_s", 1.0), "ttft_s": ("ttft_s", 1.0), "e2e_s": ("e2e_s", 1.0),
              "neg_tokens_per_s": ("tokens_per_s", -1.0), "neg_decode_tokens_per_s": ("decode_tokens_per_s", -1.0),
              "cost_per_token": ("cost_per_token", 1.0), "tco_usd_per_mtok": ("tco_usd_per_mtok", 1.0),
              "serve_cost_per_token": ("serve_cost_per_token", 1.0),
              "serve_tco_usd_per_mtok": ("serve_tco_usd_per_mtok", 1.0)}
#: objectives of the steady-state serving model (dse.core.serving): continuous batching at the
#: deployment's concurrency, chunked prefill, speculative decoding, pipeline stages and replicas —
#: per device of the whole deployment (``serve.n_devices``), per generated token
SERVE_OBJECTIVES = frozenset({"serve_cost_per_token", "serve_tco_usd_per_mtok"})


@dataclass(frozen=True)
class Constraints:
    loss_max: float | None = None  # loss_proxy <= loss_max (nats)
    fits_memory: bool = True
    max_params: float | None = None
    max_tpot_s: float | None = None
    max_ttft_s: float | None = None  # a time-to-first-token SLO (s)
    max_area_mm2: float | None = None  # per device, logic die area of the hardware cost model
    max_power_w: float | None = None  # per device, TDP of the hardware cost model
    max_price_usd: float | None = None  # per device, price of the hardware cost model
    max_serve_tpot_s: float | None = None  # steady-state inter-token latency of the serving model (serve.tpot_s)
    max_serve_ttft_s: float | None = None  # steady-state time to first token of the serving model (serve.ttft_s)

    @property
    def serving(self) -> bool:
        """Whether a constraint reads the steady-state serving model (``serve.*``)."""
        return self.max_serve_tpot_s is not None or self.max_serve_ttft_s is not None

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
        for name, key in (("max_ttft_s", "ttft_s"), ("max_area_mm2", "hw.die_area_mm2"), ("max_power_w", "hw.power_w"),
                          ("max_price_usd", "hw.price_usd"), ("max_serve_tpot_s", "serve.tpot_s"),
                          ("max_serve_ttft_s", "serve.ttft_s")):
            if getattr(self, name) is not None:
                out[key] = (m[key], getattr(self, name))
        if self.fits_memory and "serve.kv_request_bytes" in m:  # the KV cache holds at least one request:
            out["serve.kv_request_bytes"] = (m["serve.kv_request_bytes"], m["serve.kv_free_bytes"])
        return out

    def violations(self, m: dict):
        """Relative violations (value/limit − 1, clipped at 0), one per constraint, stacked on the last axis."""
        vals = [jnp.maximum(v / lim - 1.0, 0.0) for v, lim in self.values(m).values()]
        return jnp.stack(vals, -1) if vals else jnp.zeros(jnp.shape(m["tpot_s"]) + (0,))


# the limits are traced leaves, which limits are set (None or not) and fits_memory are the structure: one compile
# serves every value of an SLO, a loss budget or a price cap (a static Constraints recompiled for each)
jax.tree_util.register_dataclass(Constraints, data_fields=[f for f in Constraints.__dataclass_fields__ if f != "fits_memory"],
                                 meta_fields=["fits_memory"])


@dataclass(frozen=True)
class Settings:
    optimizer: str = "adam"
    learning_rate: float = 0.05
    steps: int = 150
    starts: int = 8
    penalty: float = 1000.0
    seed: int = 0
    local_search_rounds: int = 50
    budget: int | None = None  # total cost-model evaluations: run dse.explore.search (steps/starts chosen by it)
    search_learning_rate: float = 0.4  # Adam's step in the budgeted search (tuned on arch_quant at 1e3: 0.05 → 0.4)


def reads_serve(objective: str, constraints: Constraints | None = None) -> bool:
    """Whether an objective or the constraints need the serving model's ``serve.*`` metrics."""
    return objective in SERVE_OBJECTIVES or bool(constraints and constraints.serving)


def replica_devices(w):
    """Devices of one model replica: tensor-parallel × attention-data-parallel × pipeline stages
    (``tokens_per_s`` is one replica's: ``batch`` counts its sequences; dse.core.design.Workload)."""
    return w.tp * w.attn_dp * w.pp


def objective_of(m: dict, name: str, w):
    """The value ``name`` minimizes for metrics ``m`` of a design with workload ``w``: a metric
    (negated for rates), or a cost per token over every device of the replica — ``cost_per_token``
    in device-seconds, ``tco_usd_per_mtok`` in USD per million tokens."""
    if name not in OBJECTIVES:
        raise ValueError(f"optimize.objective={name!r}: unknown; available: {sorted(OBJECTIVES)}")
    metric, sign = OBJECTIVES[name]
    if metric == "cost_per_token":
        return replica_devices(w) / m["tokens_per_s"]
    if metric == "tco_usd_per_mtok":
        return 1e6 * replica_devices(w) * m["hw.usd_per_s"] / m["tokens_per_s"]
    if metric == "serve_cost_per_token":
        return m["serve.n_devices"] / m["serve.tokens_per_s"]
    if metric == "serve_tco_usd_per_mtok":
        return 1e6 * m["serve.n_devices"] * m["hw.usd_per_s"] / m["serve.tokens_per_s"]
    return sign * m[metric]


def full_metrics(design: Design, hw: Hardware, conv: Conventions, acc, hwp: HwCostParams | None = None, *,
                 smooth: bool = False, serving: bool = False) -> dict:
    """``evaluate``'s metrics plus the hardware cost model's (``hw.*``: area, price, power, USD per second),
    and with ``serving`` the steady-state serving model's (``serve.*``, :func:`dse.core.serving.serve`;
    speculative drafts, if any, from the model's own MTP head)."""
    m = {**evaluate(design, hw, conv, acc, smooth=smooth), **hardware_cost(hw, hwp or HwCostParams())}
    if serving:
        from dse.core.serving import serve
        m.update({f"serve.{k}": v for k, v in serve(design, hw, conv).items()})
    return m


_full_metrics_jit = jax.jit(full_metrics, static_argnames=("conv", "smooth", "serving"))  # one design: compiled, not op by op


def designs_at(values, design, hw, keys):
    """(design, hardware) with knob ``keys[j]`` set to ``values[j]``."""
    d, h = design, hw
    for j, key in enumerate(keys):
        d, h = set_knob(d, h, key, values[j])
    return d, h


def _box(knobs):
    """(lows, highs, logs) of the relaxed box: each knob's interval (a degenerate one widened by a hair)."""
    return (jnp.asarray([k.low for k in knobs]), jnp.asarray([max(k.high, k.low * (1 + 1e-9) + 1e-9) for k in knobs]),
            jnp.asarray([k.log for k in knobs]))


def _relax(u, lows, highs, logs):
    s = jax.nn.sigmoid(u)
    return jnp.where(logs, jnp.exp(jnp.log(lows) + (jnp.log(highs) - jnp.log(lows)) * s), lows + (highs - lows) * s)


def relaxed_loss(design, hw, acc, hwp, *, conv, keys, objective, constraints, box, scale):
    """``loss(u, weight)`` of one start ``u`` in the relaxed box → (penalized loss, (objective, max violation)):
    the log of the smooth objective relative to ``scale`` (−log for a rate), plus ``weight`` × squared-hinge
    penalties on the constraints and on the order relations of the validity rules (ep ≤ tp·attn_dp, KV heads ≤
    heads, ...: :func:`dse.core.design.order_slack`; the rules themselves are flat, so a knob the smooth model
    ignores drifted past them). One loss for both relaxations (the fixed schedule and the budgeted search)."""
    lows, highs, logs = box
    serving = reads_serve(objective, constraints)

    def loss(u, weight):
        d, h = designs_at(_relax(u, lows, highs, logs), design, hw, keys)
        m = full_metrics(d, h, conv, acc, hwp, smooth=True, serving=serving)
        value = objective_of(m, objective, d.workload)
        rel = value / jnp.abs(scale)
        obj = jnp.where(rel > 0, jnp.log(jnp.maximum(rel, 1e-30)), -jnp.log(jnp.maximum(-rel, 1e-30)))
        viol = constraints.violations(m)
        return obj + weight * (jnp.sum(viol ** 2) + jnp.sum(order_slack(d) ** 2)), (value, jnp.max(viol, initial=0.0))
    return loss


def clipped(optimizer: str, learning_rate):
    """The optax optimizer on gradients clipped to norm 1: a constraint touched late in the run, when the penalty
    weight is 10⁴× its start, gave gradients ~10⁶× the objective's; Adam's second moment then remembered them for
    ~1,000 steps and every later step was tiny (long_context at 1e4: batch stuck at 4.7 of an optimum of 47), or
    the step after a spike jumped across the box."""
    return optax.chain(optax.clip_by_global_norm(1.0), getattr(optax, optimizer)(learning_rate))


@partial(jax.jit, static_argnames=("conv", "keys", "objective"), compiler_options=COMPILER_OPTIONS)
def exact_batch(values, design, hw, acc, hwp=None, *, conv, keys, objective, constraints):
    """Exact metrics, objective, violations and validity of a batch of knob-value rows."""
    def one(v):
        d, h = designs_at(v, design, hw, keys)
        serving = reads_serve(objective, constraints)
        m = full_metrics(d, h, conv, acc, hwp, serving=serving)
        valid = is_valid(d) & m["serve.fits_memory"] if serving else is_valid(d)
        return {"objective": objective_of(m, objective, d.workload), "violation": constraints.violations(m),
                "valid": valid, "metrics": m}
    return map_points(one, values)


@dataclass
class Result:
    continuous: np.ndarray  # best start's continuous knob values
    continuous_metrics: dict
    legal: np.ndarray
    legal_metrics: dict
    feasible: bool
    evaluations: int
    trace: dict = field(default_factory=dict)  # step → arrays over starts


def check_knobs(knobs: list[Knob], objective: str, constraints: Constraints) -> None:
    """Every knob must move some objective or constraint: a serving knob (``SERVE_KNOBS``: concurrency,
    chunked prefill, speculative decoding, disaggregation, ...) changes only the steady-state ``serve.*``
    metrics, so it needs a ``serve_*`` objective or a ``max_serve_*`` constraint — else its "optimum"
    would be arbitrary."""
    from dse.core.serving import SERVE_KNOBS
    serving = [k.key for k in knobs if k.key in SERVE_KNOBS]
    if serving and not reads_serve(objective, constraints):
        raise DesignError(f"optimize.knobs: {serving} are serving knobs: they change only the steady-state serve.* "
                          f"metrics, which optimize.objective={objective!r} and the constraints do not read; use a "
                          f"serve objective ({', '.join(sorted(SERVE_OBJECTIVES))}) or a constraint max_serve_tpot_s / "
                          "max_serve_ttft_s, or search them with task=serve")


def optimize(design: Design, hw: Hardware, acc: AccuracyParams, conv: Conventions, knobs: list[Knob],
             objective: str, constraints: Constraints, settings: Settings = Settings(),
             hwp: HwCostParams | None = None) -> Result:
    hwp = hwp or HwCostParams()
    check_knobs(knobs, objective, constraints)
    serving = reads_serve(objective, constraints)
    design = specialize_design(design, knobs)
    if settings.budget is not None:
        return _budgeted(design, hw, acc, conv, knobs, objective, constraints, settings, hwp)
    keys = tuple(k.key for k in knobs)
    box = _box(knobs)
    base = _full_metrics_jit(design, hw, conv, acc, hwp, serving=serving)
    scale = jnp.abs(objective_of(base, objective, design.workload)) + 1e-30
    loss = relaxed_loss(design, hw, acc, hwp, conv=conv, keys=keys, objective=objective, constraints=constraints,
                        box=box, scale=scale)
    opt = clipped(settings.optimizer, settings.learning_rate)

    @partial(jax.jit, compiler_options=COMPILER_OPTIONS)
    def run(u0):
        one = penalized_step(loss, opt, settings.penalty, settings.steps)  # penalty weight 1x → 10⁴x over the run

        def step(carry, t):
            u, state, (obj, viol) = one(*carry, t)
            return (u, state), (obj, viol)
        state0 = jax.vmap(opt.init)(u0)
        (u, _), (objs, viols) = jax.lax.scan(step, (u0, state0), jnp.arange(settings.steps, dtype=jnp.float64))
        return u, objs, viols

    rng = np.random.default_rng(settings.seed)
    u0 = jnp.asarray(rng.normal(0.0, 1.5, size=(settings.starts, len(knobs))))
    u, objs, viols = run(u0)
    cont = np.asarray(_relax(u, *box))
    evals = settings.starts * settings.steps

    kw = dict(conv=conv, keys=keys, objective=objective, constraints=constraints)
    values = [np.asarray(k.values, float) for k in knobs]

    def score(rows):
        out = exact_rows(rows, design, hw, acc, hwp, **kw)
        viol = out["violation"].sum(-1) if out["violation"].ndim > 1 else np.zeros(len(rows))
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
    d, h = designs_at(jnp.asarray(cont[best_start]), design, hw, keys)
    cont_metrics = {k: float(v) for k, v in _full_metrics_jit(d, h, conv, acc, hwp, smooth=True, serving=serving).items()}
    return Result(cont[best_start], cont_metrics, legal, {k: np.asarray(v)[0].item() for k, v in out["metrics"].items()},
                  bool(feasible), evals, {"objective": np.asarray(objs), "max_violation": np.asarray(viols)})


def exact_rows(x, design, hw, acc, hwp, metrics: bool = True, **kw) -> dict:
    """:func:`exact_batch` of rows of knob values ``x`` (n, k) in padded blocks of ``BATCHES[-1]`` rows:
    one compiled shape serves every call (a single row compiled the whole model again). ``metrics=False``
    copies only the objective, violations and validity to the host (the ~300 metric arrays cost ~2 ms a call)."""
    size, parts = BATCHES[-1], []
    for s in range(0, len(x), size):
        part = x[s:s + size]
        padded = np.concatenate([part, np.repeat(part[-1:], size - len(part), 0)])
        out = exact_batch(jnp.asarray(padded, float), design, hw, acc, hwp, **kw)
        if not metrics:
            out = {k: out[k] for k in ("objective", "violation", "valid")}
        parts.append(jax.tree.map(lambda a, n=len(part): np.asarray(a)[:n], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def scorer_of(design, hw, acc, conv, keys, objective, constraints, hwp):
    """rows of knob values (n, k) → (objective, total violation; inf where the design is invalid), exact."""
    kw = dict(conv=conv, keys=keys, objective=objective, constraints=constraints)

    def score_rows(x):
        out = exact_rows(np.asarray(x), design, hw, acc, hwp, metrics=False, **kw)
        obj, viol, valid = out["objective"], out["violation"], out["valid"]
        viol = viol.sum(-1) if viol.ndim > 1 else np.zeros(len(obj))
        ok = valid & np.isfinite(obj)
        return np.where(ok, obj, np.inf), np.where(ok, viol, np.inf)
    return score_rows


#: compiled gradient phases, one per fixed design and problem (oldest dropped beyond DESCENTS_KEPT)
_DESCENTS: dict = {}
DESCENTS_KEPT = 16


def _fingerprint(tree):
    """A hashable identity of a pytree's structure and every leaf's value."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(x), np.asarray(x).dtype.str, np.asarray(x).tobytes()) for x in leaves)


def descent_of(design, hw, acc, hwp, *, conv, keys, objective, optimizer):
    """The gradient phase of the budgeted search for one problem, compiled once (any seed, schedule, limits).

    The fixed design, hardware and accuracy parameters are **constants** of the compiled function, not
    arguments: XLA folds every part of the cost model the knobs do not reach. As traced arguments
    they made the codesign benchmark's moe_serve descent 45k HLO lines that compiled in 116–132 s on
    the 2-core Xeon; baked in, ~20 s (``JAX_LOG_COMPILES=1``, first run of ``python -m dse.bench --only
    codesign --codesign-problems moe_serve`` with an empty ``~/.cache/dse-jax``), and it runs ~2× faster.
    A design with other fixed values compiles again (seconds); knob values, schedule, the constraints'
    limits and the seed do not.
    Returns ``run(u0, steps, penalty, learning_rate, scale, box, constraints)`` → relaxed knob values at
    ten checkpoints (checkpoints, starts, knobs).
    """
    key = (_fingerprint((design, hw, acc, hwp)), conv, keys, objective, optimizer)
    if key in _DESCENTS:
        return _DESCENTS[key]

    def run(u0, steps, penalty, learning_rate, scale, box, constraints):
        loss = relaxed_loss(design, hw, acc, hwp, conv=conv, keys=keys, objective=objective, constraints=constraints,
                            box=box, scale=scale)
        us = descend(loss, u0, penalty, steps, opt=clipped(optimizer, learning_rate))
        return jax.vmap(jax.vmap(lambda u: _relax(u, *box)))(us)

    while len(_DESCENTS) >= DESCENTS_KEPT:
        _DESCENTS.pop(next(iter(_DESCENTS)))
    fn = _DESCENTS[key] = jax.jit(run, compiler_options=COMPILER_OPTIONS)
    return fn


def _budgeted(design, hw, acc, conv, knobs, objective, constraints, settings, hwp) -> Result:
    keys = tuple(k.key for k in knobs)
    kw = dict(conv=conv, keys=keys, objective=objective, constraints=constraints)
    base_values = np.asarray([float(get_knob(design, hw, k)) for k in keys])
    score_rows = scorer_of(design, hw, acc, conv, keys, objective, constraints, hwp)
    scale = abs(float(exact_rows(base_values[None], design, hw, acc, hwp, **kw)["objective"][0])) + 1e-30
    box = _box(knobs)

    descent = descent_of(design, hw, acc, hwp, conv=conv, keys=keys, objective=objective, optimizer=settings.optimizer)

    def run_descent(u0, steps):
        return descent(u0, steps, settings.penalty, settings.search_learning_rate, scale, box, constraints)
    idx, scorer, cont, trace = budgeted_search(run_descent, score_rows, knobs, base_values, budget=settings.budget,
                                        seed=settings.seed)
    legal = np.asarray([k.values[i] for k, i in zip(knobs, idx)], float)
    out = exact_rows(legal[None], design, hw, acc, hwp, **kw)
    v_last, o_last = trace["max_violation"][-1], trace["objective"][-1]
    i = int(np.argmin(np.where(v_last <= 0, o_last, np.inf))) if (v_last <= 0).any() else int(np.argmin(v_last))
    d, h = designs_at(jnp.asarray(cont[i]), design, hw, keys)
    # one point, op by op: ~0.1–0.7 s, where compiling it took 7 s (moe_serve) once per structure
    cont_metrics = {k: float(v) for k, v in full_metrics(d, h, conv, acc, hwp, smooth=True,
                                                         serving=reads_serve(objective, constraints)).items()}
    return Result(cont[i], cont_metrics, legal, {k: v[0].item() for k, v in out["metrics"].items()},
                  bool(scorer.best[0] <= 0), scorer.used, trace)


def sensitivity(design: Design, hw: Hardware, acc: AccuracyParams, conv: Conventions, objective: str,
                factor: float = 1.1, hwp: HwCostParams | None = None) -> dict:
    """Relative improvement of the (minimized) objective when one hardware resource grows by ``factor``.

    Positive = better: 0.05 means 10% more of that resource makes the design 5% better. Resources
    are the peaks, every bandwidth and the capacity (×1.1), and every fixed cost — overheads and
    latencies — whose "10% more" is 1/1.1 of the time. With a
    cost objective (``tco_usd_per_mtok``) the resource's price and power are included, so at an
    interior optimum of a hardware design every value is near 0 (no resource pays for more of it).
    """
    obj = lambda h: float(objective_of(full_metrics(design, h, conv, acc, hwp, serving=reads_serve(objective)),  # noqa: E731
                                       objective, design.workload))
    base = obj(hw)
    groups = {"mem_bw": ("mem_bw",), "peak_flops": ("peak_fp32", "peak_fp16", "peak_fp8", "peak_int8", "peak_int4"),
              "link_bw": ("link_bw",), "mem_capacity": ("mem_capacity",)}
    groups.update({f: (f,) for f in hw.__dict__ if f.endswith("_bw") and f not in groups})  # every bandwidth
    out = {}
    for name, fields in groups.items():
        more = type(hw)(**{**hw.__dict__, **{f: getattr(hw, f) * factor for f in fields}})
        out[name] = (base - obj(more)) / abs(base) if base else 0.0
    # fixed costs (kernel launch and engine step overheads, collective latencies): 10% more of that
    # resource is the same work in 1/1.1 of the time (issue 16: they were left out)
    for f in (f for f in hw.__dict__ if f.endswith(("_latency", "_overhead_s"))):
        less = type(hw)(**{**hw.__dict__, f: getattr(hw, f) / factor})
        out[f] = (base - obj(less)) / abs(base) if base else 0.0
    return out


def balance(design: Design, hw: Hardware, acc: AccuracyParams, conv: Conventions, objective: str,
            hwp: HwCostParams | None = None, factors=(0.5, 0.8, 0.9, 1.1, 1.25, 2.0)) -> dict:
    """The hardware's balance and how the objective moves when the balance moves.

    ``flops_per_byte``: dense 16-bit tensor FLOP/s per byte/s of memory bandwidth (the roofline's
    ridge point); ``capacity_s``: memory capacity over bandwidth (seconds to read all memory once);
    ``flops_per_link_byte``: FLOP/s per byte/s of link. ``objective_vs_balance``: the objective's
    ratio to its value here when every compute peak is scaled by f (bandwidth, capacity and link
    fixed; price and power follow through the cost model): > 1 on both sides at an optimum.
    """
    from dse.core.hwcost import tensor_flops16
    obj = lambda h: float(objective_of(full_metrics(design, h, conv, acc, hwp, serving=reads_serve(objective)),  # noqa: E731
                                       objective, design.workload))
    base = obj(hw)
    peaks = ("peak_fp32", "peak_fp16", "peak_fp8", "peak_int8", "peak_int4")
    curve = {}
    for f in factors:
        h = type(hw)(**{**hw.__dict__, **{p: getattr(hw, p) * f for p in peaks}})
        curve[f"{f:g}"] = obj(h) / base if base else float("nan")
    f16 = float(tensor_flops16(hw))
    return {"flops_per_byte": f16 / float(hw.mem_bw), "capacity_s": float(hw.mem_capacity) / float(hw.mem_bw),
            "flops_per_link_byte": f16 / float(hw.link_bw) if float(hw.link_bw) > 0 else float("inf"),
            "objective_vs_balance": curve}
