"""Budgeted co-design search over mixed integer and continuous knobs: gradients, rounding, evolution, local search.

``optimize(..., Settings(budget=N))`` runs this instead of the fixed schedule: every call of the
cost model counts against one budget of ``N`` evaluations (a value-and-gradient of the smooth
model counts as one, like an exact evaluation), so it compares with black-box optimizers at equal
budgets (``python -m dse.bench --only codesign``). Any knob of a space (:mod:`dse.explore.space`)
works: the search sees only each knob's sorted legal values, so a knob added to the design
pytrees is searchable without a change here. Continuous knobs are fine grids (``num`` values).

1. Gradient phase (``grad_share``: 40% of the budget at 10³ evaluations, 20% at 10⁴, 50% from 10⁵):
   rounds of ``STARTS`` points in the relaxed box (a sigmoid per knob, log space for log knobs)
   descend the smooth model with Adam (gradients clipped to norm 1) under squared-hinge
   penalties on the constraints and on the order relations of the validity rules
   (:func:`dse.core.design.order_slack`), whose weight grows 10⁴× over the run; the iterates are
   kept at ten checkpoints.
2. Rounding: every checkpoint is rounded to its nearest legal point (in log space for log knobs),
   and each start's last iterate also to random floor/ceil combinations; all are scored exactly.
3. Evolution (``evolve_share`` of what is left: 50% at 10³ evaluations, 90% from 10⁴): CMA-ES
   (Hansen's, the ``cmaes`` package) on the unit cube of legal indices, its mean at the best rounded
   design and its step ``EVOLVE_SIGMA`` (0.05) of each knob's range: the population moves several knobs
   at once, which a one- or two-knob neighbourhood cannot (shape, bits and batch change together at a
   constraint).
4. Iterated local search (the rest): from the best legal point, every knob moves by ±1 legal step;
   when none of those improves, to each of its values (knobs of at most ``SMALL`` values) or by ±1, 2,
   4, … legal steps; with either, joint ±1 moves of the knobs whose single moves were invalid (a
   validity rule couples them: expert parallelism divides tensor parallelism, heads divide by it); and
   when no such move improves, every pair of knobs by ±1 step jointly (couplings such as heads and
   tensor parallelism). The best improving move is taken, and the neighbourhood starts small again,
   until none improves (the ±1 steps first: at 10³ evaluations a step over every value of every knob,
   ~125 designs for moe_serve, left two steps); then the search restarts from the next-best rounded
   start, and when those are used up, from a random kick of the best design.

Comparisons are exact (``smooth=False``): feasible beats infeasible, then the objective, then the
total violation — DOSA's recipe (Hong et al., MICRO 2023) with a budget.
"""
from __future__ import annotations

import itertools
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dse.explore.space import Knob

#: knobs with at most this many legal values try every value in a local-search step
SMALL = 16
#: exact evaluations run in padded batches of this size, so a problem compiles once
BATCHES = (1024,)
#: starts of the gradient phase (fixed, so one compile serves every budget and seed)
STARTS = 8
#: the smallest budget: the shortest descent (STARTS × 4 steps) plus as many exact evaluations
MIN_BUDGET = 2 * STARTS * 4
#: step size of the evolution phase, in units of each knob's whole range (mapped to the unit interval).
#: 0.05, not 0.15: the evolution starts at the best rounded design, usually at a constraint, where a
#: population of steps of 0.15 in all knobs at once was mostly infeasible (moe_serve at 10³: on 6 of 20
#: seeds it found nothing better). Held-out seeds (5–44 at 10³, 5–14 at 10⁴), median gaps 0.15 → 0.05 —
#: 10³: arch_quant .055/.047, hw_budget .077/.050, deploy_slo .116/.112, long_context .062/.061,
#: full_codesign .154/.110, moe_serve .024/.023; 10⁴: .017/.017, .039/.038, .019/.014, 0/0, .017/.017,
#: .006/.004 (gaps to the best value any run found; ``python -m dse.bench --only codesign
#: --codesign-first-seed 5 --codesign-seeds 40``).
EVOLVE_SIGMA = 0.05


class Scorer:
    """Exact scores of legal index rows, with a budget and a cache of what was already scored."""

    def __init__(self, score_rows, values, budget: int):
        self.score_rows, self.values, self.budget = score_rows, values, budget
        self.used = 0
        self.seen: dict[tuple, tuple[float, float]] = {}
        self.best_idx, self.best = None, (np.inf, np.inf)  # (violation, objective)

    @property
    def left(self) -> int:
        return self.budget - self.used

    def __call__(self, idx: np.ndarray) -> list[tuple[float, float]]:
        """(violation, objective) per row, scoring only unseen rows and at most the remaining budget."""
        rows = list(map(tuple, np.asarray(idx, int).tolist()))
        new = list(dict.fromkeys(r for r in rows if r not in self.seen))[:max(self.left, 0)]
        for s in range(0, len(new), BATCHES[-1]):
            chunk = np.asarray(new[s:s + BATCHES[-1]], int)
            x = np.stack([self.values[j][chunk[:, j]] for j in range(len(self.values))], 1)
            obj, viol = self.score_rows(x)
            self.used += len(chunk)
            for r, o, v in zip(chunk, obj.tolist(), viol.tolist()):
                key = tuple(r.tolist())
                self.seen[key] = (float(v), float(o))
                if _better(self.seen[key], self.best):
                    self.best, self.best_idx = self.seen[key], np.asarray(r)
        return [self.seen.get(r, (np.inf, np.inf)) for r in rows]


def _better(a, b) -> bool:
    """Feasible (violation 0) beats infeasible; then the objective; among infeasible, the smaller violation."""
    (va, oa), (vb, ob) = a, b
    if va <= 0 and vb <= 0:
        return oa < ob - 1e-12 * abs(ob)
    if va <= 0 or vb <= 0:
        return va <= 0
    return va < vb


def nearest_index(values: list[np.ndarray], logs, x: np.ndarray) -> np.ndarray:
    """Nearest legal value index per knob (log distance for log knobs) of points ``x`` (n, k)."""
    out = np.empty(x.shape, int)
    for j, v in enumerate(values):
        if logs[j]:
            d = np.abs(np.log(v)[None] - np.log(np.maximum(x[:, j:j + 1], 1e-300)))
        else:
            d = np.abs(v[None] - x[:, j:j + 1])
        out[:, j] = np.argmin(d, 1)
    return out


def neighbours(idx: np.ndarray, sizes: list[int], pairs: bool = False, among=None, near: bool = False) -> np.ndarray:
    """Single-knob moves (``near``: ±1 step; else all values of small knobs, ±2^i steps of large ones), or
    joint ±1 moves of pairs (of the knobs ``among``, default all)."""
    idx, sizes_a, moves = np.asarray(idx), np.asarray(sizes), []
    if near:  # one array: this is the local search's most frequent call
        cols = np.repeat(np.arange(len(sizes)), 2)
        m = np.repeat(idx[None], len(cols), 0)
        m[np.arange(len(cols)), cols] = np.clip(idx[cols] + np.tile([-1, 1], len(sizes)), 0, sizes_a[cols] - 1)
        moves.append(m)
    elif not pairs:
        for j, n in enumerate(sizes):
            if n <= SMALL:
                targets = np.arange(n)
            else:
                steps = 2 ** np.arange(int(np.log2(n)) + 1)
                targets = np.clip(np.concatenate([idx[j] + steps, idx[j] - steps]), 0, n - 1)
            m = np.repeat(idx[None], len(targets), 0)
            m[:, j] = targets
            moves.append(m)
    else:  # every pair (i, j) by (±1, ±1), built as one array (a Python loop here was most of a 1e5 run's time)
        pairs_ij = np.asarray(list(itertools.combinations(range(len(sizes)) if among is None else among, 2)), int)
        if not len(pairs_ij):
            return np.empty((0, len(sizes)), int)
        signs = np.asarray([(1, 1), (1, -1), (-1, 1), (-1, -1)])
        pi, sg = np.repeat(pairs_ij, 4, 0), np.tile(signs, (len(pairs_ij), 1))
        m = np.repeat(idx[None], len(pi), 0)
        rows = np.arange(len(pi))[:, None]
        m[rows, pi] = np.clip(m[rows, pi] + sg, 0, sizes_a[pi] - 1)
        moves.append(m)
    out = np.unique(np.concatenate(moves), axis=0)  # sorted: ties go to the same design on every machine
    return out[(out != idx).any(1)]


def _key(s):
    return (s[0] > 0, s[0] if s[0] > 0 else s[1])


def local_search(scorer: Scorer, start: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Best-improvement descent from ``start`` over growing neighbourhoods: ±1 step of each knob, then every
    value / ±2^i steps of each, then joint ±1 moves of pairs; back to the first after every improvement."""
    cur = np.asarray(start)
    cur_score = scorer(cur[None])[0]
    level = 0  # 0: ±1 steps, 1: whole lines, 2: pairs
    while scorer.left > 0:
        cand = neighbours(cur, sizes, pairs=level == 2, near=level == 0)
        scores = scorer(cand)
        if level < 2:  # knobs coupled by a validity rule (ep divides tp, heads divide by tp, ...) move together:
            # joint ±1 moves of the knobs whose single moves gave an invalid design (tp 2 → 1 needs ep 2 → 1)
            blocked = sorted({int(np.flatnonzero(c != cur)[0]) for c, sc in zip(cand, scores) if np.isinf(sc[0])})
            if len(blocked) > 1:
                extra = neighbours(cur, sizes, True, among=blocked)
                cand, scores = np.concatenate([cand, extra]), scores + scorer(extra)
        j = min(range(len(cand)), key=lambda i: _key(scores[i]))
        if _better(scores[j], cur_score):
            cur, cur_score, level = cand[j], scores[j], 0
        elif level < 2:
            level += 1
        else:
            break
    return cur


def grad_share(budget: int) -> float:
    """Share of the budget the gradient phase spends: 0.4 at 10³ evaluations, 0.2 at 10⁴, 0.5 at 10⁵ and
    above, linear in log budget between. Chosen on the codesign benchmark's six problems with held-out
    seeds (5–44 at 10³, 5–14 at 10⁴; the reported seeds are 0–4), with the order penalties of
    :func:`dse.core.design.order_slack` in the descent. At 10³ the share buys descent steps (8 starts ×
    25 steps at 0.2, × 50 at 0.4): 25 steps left no full_codesign start's rounded design within 2× the
    reference. Median gaps at 10³, shares 0.2 / 0.4 / 0.5 / 0.6 — arch_quant .119/.053/.031/.027,
    hw_budget .157/.086/.074/.079, deploy_slo .290/.150/.147/.112, long_context .256/.065/.059/.040,
    full_codesign .468/.146/.114/.082, moe_serve .024/.025/.035/.039 (its descent helps less than the
    evolution phase; 0.4 is the largest share that keeps it). At 10⁴, 0.4 instead of 0.2 lost arch_quant
    (0.021 vs 0.008), won moe_serve (0.003 vs 0.006), tied the rest. At 10⁵, 0.2 instead of 0.5 lost on
    two problems (session 6: hw_budget 0.017 vs 0.006, full_codesign 0.027 vs 0.017)."""
    return float(np.interp(np.log10(max(budget, 1)), [3.0, 4.0, 5.0], [0.4, 0.2, 0.5]))


#: most steps of one descent; a larger gradient budget runs more rounds of STARTS new starts
MAX_STEPS = 300


def grad_schedule(budget: int) -> tuple[int, int]:
    """(rounds, steps) of the gradient phase: ``grad_share`` of the budget over rounds of STARTS starts."""
    total = max(int(budget * grad_share(budget) // STARTS), 4)
    rounds = 1 if total <= 1000 else -(-total // MAX_STEPS)  # one descent up to 1e4 evaluations
    return rounds, max(total // rounds, 4)


def penalized_step(loss, opt, penalty, steps):
    """One step of ``opt`` on ``loss(u, weight)`` → (value, aux) for every start at once, the penalty weight
    growing 10⁴× over ``steps`` (non-finite gradients dropped): ``step(u, state, t)`` → (u, state, aux).
    Shared by :func:`descend` and the fixed schedule of :func:`dse.explore.optimize.optimize`."""
    def step(u, state, t):
        weight = penalty * 10.0 ** (4.0 * t / steps)
        (_, aux), g = jax.vmap(jax.value_and_grad(loss, has_aux=True), (0, None))(u, weight)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        updates, state = jax.vmap(opt.update)(g, state, u)
        return optax.apply_updates(u, updates), state, aux
    return step


def descend(loss, u0, penalty, steps, *, opt, checkpoints: int = 10):
    """``opt`` on ``loss(u, weight)`` → (value, aux) for every start at once for ``steps`` steps (a traced
    count: one compile serves every budget); returns the iterates at ``checkpoints`` evenly spaced steps
    (checkpoints, starts, knobs)."""
    every = jnp.maximum(steps // checkpoints, 1)
    one = penalized_step(loss, opt, penalty, steps)

    def step(t, carry):
        u, state, keep = carry
        u, state, _ = one(u, state, t)
        slot = jnp.clip((t + 1) // every - 1, 0, checkpoints - 1)
        keep = jnp.where(((t + 1) % every == 0) & ((t + 1) // every <= checkpoints), keep.at[slot].set(u), keep)
        return u, state, keep

    keep0 = jnp.repeat(u0[None], checkpoints, 0)
    _, _, keep = jax.lax.fori_loop(0, steps, step, (u0, jax.vmap(opt.init)(u0), keep0))
    return keep


def evolve_share(budget: int) -> float:
    """Share of what the gradient phase and rounding leave that the evolution phase spends: 0.5 at 10³
    evaluations, rising linearly in log budget to 0.9 at 10⁴ and above. Chosen on the codesign benchmark's
    problems with seeds 5–19 (10³), 5–14 (10⁴) and 5–9 (10⁵), not the reported seeds 0–4, before the
    gradient clip of :func:`dse.explore.optimize.descent_of` (not re-tuned after it): at 10³, 0.9
    lost deploy_slo's feasibility in half the runs (median gap 0.999 vs 0.701); at 10⁴ and 10⁵, 0.9 beat
    0.5 on 4 of 5 problems (full_codesign at 10⁵: 0.006 vs 0.014) and lost none by more than 0.003."""
    return float(np.clip(0.5 + 0.4 * (np.log10(max(budget, 1)) - 3.0), 0.5, 0.9))


def evolve(scorer: Scorer, start: np.ndarray, sizes: list[int], budget: int, seed: int) -> None:
    """CMA-ES (Hansen's, the ``cmaes`` package) on the unit cube of legal indices, started at ``start``."""
    from cmaes import CMA
    sizes = np.asarray(sizes)
    k = len(sizes)
    pop = max(4 + int(3 * np.log(k)), budget // 200)
    opt = CMA(mean=(np.asarray(start) + 0.5) / sizes, sigma=EVOLVE_SIGMA, seed=seed, population_size=pop)
    stop = scorer.used + budget
    scale = abs(scorer.best[1]) if np.isfinite(scorer.best[1]) and scorer.best[1] != 0 else 1.0
    for _ in range(2 * budget // pop):  # at most twice the budget asked: a converged run repeats cached points
        if scorer.used + pop > stop:
            break
        # unbounded samples repaired into the box and told as repaired (the mean cannot drift onto the
        # flat region beyond a bound); cheaper than the package's resampling when the mean sits at a bound
        xs = np.clip(np.asarray([opt.ask() for _ in range(pop)]), 0.0, 1.0 - 1e-9)
        idx = np.floor(xs * sizes).astype(int)
        v, o = np.asarray(scorer(idx), float).T
        # feasible: the objective relative to the start's; infeasible after any feasible, by violation
        f = np.where(v <= 0, o / scale, 1e6 + np.minimum(np.nan_to_num(v, posinf=1e6), 1e6))
        opt.tell(list(zip(xs, f.tolist())))
        if opt.should_stop():
            break


def budgeted_search(run_descent, score_rows, knobs: list[Knob], base_values: np.ndarray, *, budget: int, seed: int):
    """Run the four phases within ``budget`` evaluations; returns (best index row, Scorer, the starts'
    last continuous points, trace: exact objective and violation of the rounded checkpoints).

    ``run_descent(u0, steps)``: the relaxed knob values at ten checkpoints of the gradient descent from
    the starts ``u0`` (checkpoints, starts, knobs); ``score_rows(x)``: exact (objective, total
    violation; inf if invalid) of rows of knob values.
    """
    if budget < MIN_BUDGET:
        raise ValueError(f"budget={budget}: the budgeted search needs at least {MIN_BUDGET} evaluations")
    rng = np.random.default_rng(seed)
    values = [np.asarray(k.values, float) for k in knobs]
    sizes = [len(v) for v in values]
    logs = [k.log for k in knobs]
    rounds, steps = grad_schedule(budget)
    scorer = Scorer(score_rows, values, budget)
    scorer.used = rounds * STARTS * steps
    u0 = rng.normal(0.0, 1.5, size=(rounds, STARTS, len(knobs)))
    cont = np.concatenate([np.asarray(run_descent(jnp.asarray(u), steps)) for u in u0], 1)  # (checkpoints, starts, knobs)
    # rounding: the baseline, every checkpoint's nearest legal point, random floor/ceil of the last ones
    first = [nearest_index(values, logs, base_values[None])]
    first.append(nearest_index(values, logs, cont.reshape(-1, len(knobs))))
    last = cont[-1]
    lo = np.stack([np.clip(np.searchsorted(v, last[:, j]) - 1, 0, len(v) - 1) for j, v in enumerate(values)], 1)
    hi = np.stack([np.clip(np.searchsorted(v, last[:, j]), 0, len(v) - 1) for j, v in enumerate(values)], 1)
    flips = max(1, min(16, budget // (50 * STARTS * rounds)))
    for _ in range(flips):
        pick = rng.random(lo.shape) < 0.5
        first.append(np.where(pick, lo, hi))
    cand = np.concatenate(first)
    scores = scorer(cand)
    ck = np.asarray(scores[1:1 + cont.shape[0] * cont.shape[1]], float).reshape(cont.shape[0], cont.shape[1], 2)
    trace = {"objective": ck[..., 1], "max_violation": ck[..., 0]}  # exact, of each start's rounded checkpoints
    order = sorted(range(len(cand)), key=lambda i: _key(scores[i]))
    queue = list(dict.fromkeys(tuple(int(x) for x in cand[i]) for i in order))  # distinct starts, best first
    # evolution from the best rounded design; its best joins the local search's starts, first
    if scorer.best_idx is not None:
        evolve(scorer, scorer.best_idx, sizes, int(scorer.left * evolve_share(budget)), seed)
        queue.insert(0, tuple(int(x) for x in scorer.best_idx))
    # iterated local search: from each rounded start in turn, then from kicks of the best design
    while scorer.left > 0:
        if queue:
            start = np.asarray(queue.pop(0))
        else:
            start = scorer.best_idx.copy()
            for j in rng.choice(len(knobs), size=min(len(knobs), int(rng.integers(2, 4))), replace=False):
                span = max(2, sizes[j] // 8)
                start[j] = int(np.clip(start[j] + rng.integers(-span, span + 1), 0, sizes[j] - 1))
        local_search(scorer, start, sizes)
    return scorer.best_idx, scorer, cont[-1], trace
