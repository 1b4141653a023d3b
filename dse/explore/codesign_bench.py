"""Co-design at scale: dse's budgeted optimizer against black-box search on large problems.

``python -m dse.bench --only codesign [--budgets 1e3 1e4] [--seeds 5] [--methods dse tpe cmaes random]
[--problems ...] [--cache FILE]`` prints one JSON line per problem, budget and method,
``codesign.<problem>.<budget>.<method>``, whose value is the median over the seeds of the relative
gap to the problem's reference (the best feasible objective any method found in any run; 0 = found
it; a run without a feasible design counts 1, gaps are capped at 1), unit ``gap``.

Every method gets the same number of cost-model evaluations: ``dse`` (:mod:`dse.explore.search`,
a value-and-gradient counts as one), ``random`` (uniform over each knob's legal values),
``tpe`` (Optuna's TPESampler with the installed version's defaults, each knob an integer index into
its legal values; the version is recorded with each run) and ``cmaes``
(CMA-ES of the ``cmaes`` package, the implementation Optuna's CmaEsSampler runs, on the unit cube
mapped to legal values, population evaluated in batches). The black-box methods minimize the
objective relative to the baseline design when feasible and ``1000 + total violation`` when not
(their samplers rank, so the offset only orders feasible before infeasible). Problems are defined
over the space description (:mod:`dse.explore.space`): a new knob is one more line in ``PROBLEMS``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

BUDGETS = {"1e3": 1000, "1e4": 10000, "1e5": 100000}
METHODS = ("dse", "tpe", "cmaes", "random")
#: Optuna TPE's wall time ≈ this × trials² seconds (optuna 5.0.0, hw_budget seed 0 on one core of the 2-core
#: Xeon VM: 551 s to 9,000 trials, 2,361 s to 18,000; README, Co-design at scale)
TPE_S_PER_TRIAL2 = 7.8e-6

ARCH = {"model.n_layers": {"low": 16, "high": 80, "integer": True},
        "model.d_model": {"low": 2048, "high": 8192, "multiple_of": 256},
        "model.n_heads": [8, 16, 24, 32, 40, 48, 64],
        "model.n_kv_heads": [1, 2, 4, 8, 16, 32],
        "model.d_head": [64, 96, 128, 160, 192, 256],
        "model.d_ff": {"low": 4096, "high": 28672, "multiple_of": 512}}
QUANT = {"quant.w_bits": {"low": 3, "high": 16, "integer": True},
         "quant.a_bits": {"low": 4, "high": 16, "integer": True},
         "quant.kv_bits": {"low": 2, "high": 16, "integer": True}}
DEPLOY = {"workload.batch": {"low": 1, "high": 1024, "integer": True, "log": True},
          "workload.tp": [1, 2, 4, 8]}
SERVE = {"workload.concurrency": {"low": 1, "high": 1024, "integer": True, "log": True},
         "workload.chunk_tokens": {"low": 256, "high": 8192, "multiple_of": 256},
         "workload.spec_k": [0, 1, 2, 3, 4, 5, 6]}
HW = {"hardware.peak_flops.fp16": {"low": 50e12, "high": 4000e12, "num": 256, "log": True},
      "hardware.peak_flops.fp8": {"low": 100e12, "high": 8000e12, "num": 256, "log": True},
      "hardware.mem_bw": {"low": 0.5e12, "high": 16e12, "num": 256, "log": True},
      "hardware.mem_capacity": {"low": 16e9, "high": 512e9, "num": 256, "log": True},
      "hardware.link_bw": {"low": 25e9, "high": 1800e9, "num": 64, "log": True}}


@dataclass
class Problem:
    model: str
    hardware: str
    knobs: dict
    objective: str
    prompt_len: int = 2048
    gen_len: int = 256
    loss_delta: float = 0.02
    constraints: dict = field(default_factory=dict)  # Constraints fields other than loss_max
    note: str = ""
    workload: dict = field(default_factory=dict)  # other fixed Workload fields (e.g. spec_alpha)


PROBLEMS = {
    "arch_quant": Problem("llama3_8b", "h100_sxm", {**ARCH, **QUANT, **DEPLOY}, "cost_per_token",
                          constraints={"max_tpot_s": 0.05},
                          note="architecture × compression × batch/tp of an 8B-class decoder on H100"),
    "hw_budget": Problem("llama3_70b", "h100_sxm", {**HW, **QUANT, **DEPLOY}, "tco_usd_per_mtok",
                         constraints={"max_tpot_s": 0.05, "max_price_usd": 2500.0, "max_power_w": 1000.0},
                         note="hardware resources × compression × deployment of a 70B decoder under a "
                              "manufacturing-cost and power budget per device"),
    "deploy_slo": Problem("llama2_70b", "h100_sxm", {**QUANT, **DEPLOY, "model.n_kv_heads": [1, 2, 4, 8, 16, 32, 64],
                                                     "model.n_layers": {"low": 40, "high": 96, "integer": True},
                                                     "model.d_ff": {"low": 16384, "high": 32768, "multiple_of": 256},
                                                     "model.d_head": [64, 96, 128, 160, 192, 256],
                                                     "model.d_model": {"low": 6144, "high": 10240, "multiple_of": 256}},
                          "cost_per_token", prompt_len=4096, gen_len=512,
                          constraints={"max_tpot_s": 0.04, "max_ttft_s": 2.0},
                          note="deployment × compression × shape of a 70B decoder under TPOT and TTFT SLOs"),
    "long_context": Problem("llama3_8b", "h200", {**ARCH, **QUANT, **DEPLOY}, "cost_per_token",
                            prompt_len=32768, gen_len=1024, constraints={"max_tpot_s": 0.05},
                            note="a 32k-token context: the KV cache dominates memory and decode time"),
    "full_codesign": Problem("llama3_8b", "h100_sxm", {**ARCH, **QUANT, **DEPLOY, **HW}, "tco_usd_per_mtok",
                             constraints={"max_tpot_s": 0.05, "max_price_usd": 2000.0, "max_power_w": 800.0},
                             note="architecture × compression × deployment × hardware, per dollar"),
    "moe_serve": Problem("qwen3_30b_a3b", "h100_sxm",
                         {"model.n_experts": [32, 64, 96, 128, 160, 192, 256],
                          "model.top_k": {"low": 1, "high": 16, "integer": True},
                          "model.d_ff_expert": {"low": 256, "high": 2048, "multiple_of": 128}, **QUANT,
                          "workload.tp": [1, 2, 4, 8], "workload.ep": [1, 2, 4, 8], **SERVE},
                         "serve_cost_per_token", workload={"spec_alpha": 0.7},
                         constraints={"max_tpot_s": None, "max_serve_tpot_s": 0.03, "max_serve_ttft_s": 1.0},
                         note="experts × compression × tensor/expert parallelism × continuous batching, chunked "
                              "prefill and speculative drafts of a served MoE model under steady-state SLOs"),
}


def setup(name: str):
    """(design, hardware, accuracy, knobs, constraints, base objective) of a named problem."""
    import dse
    from dse.explore.optimize import Constraints, full_metrics, objective_of, reads_serve
    from dse.explore.space import parse_knob
    p = PROBLEMS[name]
    design = dse.Design(dse.load_model(p.model), dse.Quant(), dse.Workload(batch=1, prompt_len=p.prompt_len,
                                                                           gen_len=p.gen_len, **p.workload))
    hw, acc = dse.load_hardware(p.hardware), dse.load_accuracy()
    if any(k.startswith("hardware.peak_flops") for k in p.knobs):  # 8-bit integer work runs on the fp8 units:
        hw = dataclasses.replace(hw, peak_int8=0.0, peak_int4=0.0)  # their area is the knobs', not H100's fixed int8
    knobs = [parse_knob(k, v) for k, v in p.knobs.items()]
    base = full_metrics(design, hw, dse.DEFAULT, acc, serving=reads_serve(p.objective, Constraints(**p.constraints)))
    cons = Constraints(loss_max=float(base["loss_proxy"]) + p.loss_delta, fits_memory=True, **p.constraints)
    return design, hw, acc, knobs, cons, float(objective_of(base, p.objective, design.workload))


def legal_points(knobs) -> float:
    return float(np.prod([float(len(k.values)) for k in knobs]))


class Evaluator:
    """Exact (objective, violation) of index rows, counting evaluations; the black-box methods' function."""

    def __init__(self, name: str):
        import dse
        from dse.core.hwcost import HwCostParams
        from dse.explore.optimize import scorer_of
        from dse.explore.space import specialize_design
        self.name = name
        self.design, self.hw, self.acc, self.knobs, self.cons, self.base = setup(name)
        self.design = specialize_design(self.design, self.knobs)  # as optimize traces it: one compile serves both
        self.objective = PROBLEMS[name].objective
        self.values = [np.asarray(k.values, float) for k in self.knobs]
        self.sizes = np.asarray([len(v) for v in self.values])
        self.score_rows = scorer_of(self.design, self.hw, self.acc, dse.DEFAULT, tuple(k.key for k in self.knobs),
                                    self.objective, self.cons, HwCostParams())  # optimize's default: same compile

    def rows(self, idx: np.ndarray):
        idx = np.asarray(idx, int)
        x = np.stack([self.values[j][idx[:, j]] for j in range(len(self.values))], 1)
        out_o, out_v = [], []
        for s in range(0, len(x), 4096):
            o, v = self.score_rows(x[s:s + 4096])
            out_o.append(o)
            out_v.append(v)
        return np.concatenate(out_o), np.concatenate(out_v)

    def penalized(self, obj, viol):
        """What a black-box sampler minimizes: objective/|baseline| if feasible, else 1000 + violation."""
        return np.where(viol <= 0, obj / abs(self.base), 1000.0 + np.minimum(viol, 1e6))


def best_feasible(obj, viol) -> float:
    ok = viol <= 0
    return float(obj[ok].min()) if ok.any() else float("inf")


def run_random(ev: Evaluator, budget: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, ev.sizes[None], size=(budget, len(ev.sizes)))
    return best_feasible(*ev.rows(idx))


def run_cmaes(ev: Evaluator, budget: int, seed: int) -> float:
    from cmaes import CMA
    k = len(ev.sizes)
    pop = max(4 + int(3 * np.log(k)), budget // 1000)  # the default, larger at large budgets (as IPOP grows it)
    opt = CMA(mean=np.full(k, 0.5), sigma=0.3, bounds=np.tile([0.0, 1.0], (k, 1)), seed=seed, population_size=pop)
    best, used = float("inf"), 0
    while used < budget:
        n = min(opt.population_size, budget - used)
        xs = [opt.ask() for _ in range(opt.population_size)]
        idx = np.minimum((np.asarray(xs) * ev.sizes).astype(int), ev.sizes - 1)
        obj, viol = ev.rows(idx[:n])
        used += n
        best = min(best, best_feasible(obj, viol))
        if n < opt.population_size:
            break
        f = ev.penalized(obj, viol)
        opt.tell(list(zip(xs, f.tolist())))
        if opt.should_stop():  # restart with a new seed (IPOP-free restart, same population size)
            opt = CMA(mean=np.random.default_rng(seed + used).random(k), sigma=0.3, bounds=np.tile([0.0, 1.0], (k, 1)),
                      seed=seed + used, population_size=pop)
    return best


def run_tpe(ev: Evaluator, budget: int, seed: int, batch: int = 1) -> float:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    best, used = float("inf"), 0
    while used < budget:
        trials = [study.ask() for _ in range(min(batch, budget - used))]
        idx = np.asarray([[t.suggest_int(f"k{j}", 0, int(n) - 1) for j, n in enumerate(ev.sizes)] for t in trials])
        obj, viol = ev.rows(idx)
        used += len(trials)
        best = min(best, best_feasible(obj, viol))
        for t, f in zip(trials, ev.penalized(obj, viol)):
            study.tell(t, float(f))
    return best


def run_dse(ev: Evaluator, budget: int, seed: int) -> tuple[float, np.ndarray]:
    import dse
    from dse.explore.optimize import Settings, optimize
    r = optimize(ev.design, ev.hw, ev.acc, dse.DEFAULT, ev.knobs, ev.objective, ev.cons, Settings(budget=budget, seed=seed))
    assert r.evaluations <= budget, (r.evaluations, budget)
    obj, viol = ev.score_rows(r.legal[None])
    return (float(obj[0]) if viol[0] <= 0 else float("inf")), r.legal


RUNNERS = {"random": run_random, "cmaes": run_cmaes, "tpe": run_tpe}


def gap(value: float, ref: float) -> float:
    if not np.isfinite(value):
        return 1.0
    return float(min(max((value - ref) / abs(ref), 0.0), 1.0))


def run(budgets=("1e3", "1e4", "1e5"), seeds: int = 5, methods=METHODS, problems=None, cache: str | None = None,
        emit=None, tpe_max_budget: int = 10000, verify_dir: str | None = None, first_seed: int = 0):
    """Run every (problem, budget, method, seed), then emit one line per (problem, budget, method).

    Seeds ``first_seed … first_seed + seeds − 1`` (seeds 0–4 are the reported ones; later ones are held
    out, for tuning the search without fitting the table). ``cache``: JSON-lines files of finished runs,
    comma-separated (resumable; a rerun skips them; new runs go to the first). ``verify_dir``: re-evaluate
    each problem's best dse design through ``task=evaluate`` there (:func:`verify`) and emit
    ``codesign.<problem>.verify``. TPE runs only up to ``tpe_max_budget`` evaluations (Optuna's TPE
    costs O(n) per trial: 1e5 trials do not finish on a 2-core machine in the session; the line says so).
    """
    emit = emit or (lambda **kw: print(json.dumps(kw), flush=True))
    import jax
    jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.expanduser("~"), ".cache", "dse-jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    done = {}
    for path in (cache or "").split(","):  # several files (parallel runs) may be merged
        if path and os.path.exists(path):
            with open(path) as f:
                for line in f:
                    r = json.loads(line)
                    done[(r["problem"], r["budget"], r["method"], r["seed"])] = r
    cache = (cache or "").split(",")[0] or None
    problems = problems or list(PROBLEMS)
    for name in problems:
        ev = Evaluator(name)
        for b in budgets:
            for m in methods:
                if m == "tpe" and BUDGETS[b] > tpe_max_budget:
                    continue
                for s in range(first_seed, first_seed + seeds):
                    key = (name, b, m, s)
                    if key in done:
                        continue
                    t = time.perf_counter()
                    if m == "dse":
                        value, legal = run_dse(ev, BUDGETS[b], s)
                        extra = {"legal": {k.key: float(v) for k, v in zip(ev.knobs, legal)}}
                    else:
                        value, extra = RUNNERS[m](ev, BUDGETS[b], s), {}
                        if m == "tpe":
                            import optuna
                            extra["optuna"] = optuna.__version__
                    r = {"problem": name, "budget": b, "method": m, "seed": s, "value": value,
                         "seconds": round(time.perf_counter() - t, 2), **extra}
                    done[key] = r
                    if cache:
                        with open(cache, "a") as f:
                            f.write(json.dumps(r) + "\n")
    out = summarize(done, problems, budgets, methods, range(first_seed, first_seed + seeds), emit, tpe_max_budget)
    if verify_dir:
        for name in problems:
            runs = [r for (p, *_), r in done.items() if p == name and "legal" in r and np.isfinite(r["value"])]
            if not runs:
                continue
            best = min(runs, key=lambda r: r["value"])
            checks = verify(name, best["legal"], verify_dir)
            emit(name=f"codesign.{name}.verify", value=all(ok for *_, ok in checks.values()), unit="all constraints met",
                 checks=checks, legal=best["legal"], objective=best["value"],
                 note="dse's best legal design re-evaluated by python -m dse task=evaluate (result.json)")
    return out


def summarize(done: dict, problems, budgets, methods, seeds, emit, tpe_max_budget=10000) -> dict:
    out = {}
    for name in problems:
        runs = [r for (p, *_), r in done.items() if p == name]
        ref = min((r["value"] for r in runs), default=float("inf"))
        ev_knobs = PROBLEMS[name].knobs
        from dse.explore.space import parse_knob
        size = legal_points([parse_knob(k, v) for k, v in ev_knobs.items()])
        for b in budgets:
            for m in methods:
                rs = [done[(name, b, m, s)] for s in seeds if (name, b, m, s) in done]
                label = f"codesign.{name}.{b}.{m}"
                if not rs:
                    why = (f"not run (above --codesign-tpe-max): Optuna TPE is O(n) per trial, a run O(n^2); {b} "
                           f"trials take ~{TPE_S_PER_TRIAL2 * BUDGETS[b] ** 2 / 3600:.2g} h on one core here"
                           if m == "tpe" and BUDGETS[b] > tpe_max_budget else "not run")
                    emit(name=label, value=None, unit="gap", skipped=why)
                    continue
                gaps = [gap(r["value"], ref) for r in rs]
                out[label] = float(np.median(gaps))
                emit(name=label, value=round(out[label], 4), unit="gap", seeds=len(rs),
                     gaps=[round(g, 4) for g in gaps], reference=ref, knobs=len(ev_knobs),
                     legal_points=f"{size:.3g}", median_seconds=round(float(np.median([r["seconds"] for r in rs])), 2),
                     max_seconds=max(r["seconds"] for r in rs), objective=PROBLEMS[name].objective)
    return out


def verify(name: str, legal: dict, workdir: str) -> dict:
    """Re-evaluate a problem's legal optimum through ``python -m dse task=evaluate`` (a new process, the
    app's own config path) and check every constraint on its ``result.json``: name → (value, limit, ok)."""
    import subprocess
    import sys
    from dse.explore.optimize import reads_serve
    p = PROBLEMS[name]
    design, hw, acc, knobs, cons, _ = setup(name)
    fmt = lambda v: str(int(v)) if float(v).is_integer() and abs(v) < 1e9 else repr(float(v))  # noqa: E731
    args = [f"model={p.model}", f"hardware={p.hardware}", f"workload.prompt_len={p.prompt_len}",
            f"workload.gen_len={p.gen_len}", "task=evaluate", f"hydra.run.dir={workdir}/{name}"]
    args += [f"workload.{k}={v}" for k, v in p.workload.items()]
    # the device exactly as the benchmark evaluated it (the catalog YAML the app reads may be another copy)
    names = {f"hardware.{f}": getattr(hw, f) for f in hw.__dataclass_fields__ if not f.startswith("peak_")}
    names.update({f"hardware.peak_flops.{q}": getattr(hw, "peak_" + ("fp16" if q == "bf16" else q))
                  for q in ("fp32", "fp16", "bf16", "fp8", "int8", "int4")})
    args += [f"{k}={fmt(v) if float(v).is_integer() else repr(float(v))}" for k, v in names.items() if k not in legal and
             not (k == "hardware.peak_flops.bf16" and "hardware.peak_flops.fp16" in legal)]
    args += [f"{k}={fmt(v)}" for k, v in legal.items()]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this dse, not another
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    os.makedirs(workdir, exist_ok=True)
    subprocess.run([sys.executable, "-m", "dse", *args], check=True, capture_output=True, cwd=workdir, env=env)
    with open(f"{workdir}/{name}/result.json") as f:
        r = json.load(f)
    checks = {"memory_bytes": (r["memory_bytes"], r["mem_capacity_bytes"])}
    if cons.loss_max is not None:
        checks["loss_proxy"] = (r["loss_proxy"], cons.loss_max)
    for field_name, key in (("max_tpot_s", "tpot_s"), ("max_ttft_s", "ttft_s"), ("max_price_usd", "hw.price_usd"),
                            ("max_power_w", "hw.power_w"), ("max_area_mm2", "hw.die_area_mm2"),
                            ("max_serve_tpot_s", "serve.tpot_s"), ("max_serve_ttft_s", "serve.ttft_s")):
        if getattr(cons, field_name) is not None:
            checks[key] = (r[key], getattr(cons, field_name))
    if reads_serve(p.objective, cons):  # the KV cache holds at least one request
        checks["serve.kv_request_bytes"] = (r["serve.kv_request_bytes"], r["serve.kv_free_bytes"])
    return {k: (float(v), float(lim), bool(v <= lim * (1 + 1e-9))) for k, (v, lim) in checks.items()}
