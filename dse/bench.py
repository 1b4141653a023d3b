"""Benchmarks: ``python -m dse.bench [--quick] [--only NAME ...]``, one JSON object per line.

- ``eval_points_per_s``: full metrics (prefill, decode, exact generation sum, memory, accuracy
  proxies) of >= 1,048,576 random designs (GQA × bits × batch × context), float32, evaluated as a
  sweep does: the swept knobs vary per point, the other leaves are one shared (traced) value.
- ``grad_points_per_s``: value and gradient of ``tpot_s`` (smooth) w.r.t. every swept knob.
- ``eval_points_per_s_moe``, ``grad_points_per_s_moe``: the same over a DeepSeek-V3-like space
  (routed experts, top-k, expert width, latent rank, window and its layer pattern, bits, batch,
  context, expert parallelism), every new architecture knob a vmapped leaf (``--only moe``).
- ``llm_analysis_configs_per_s`` and ``speedup_vs_llm_analysis``: the llm-analysis package's
  ``LLMAnalysis.inference`` on the same kind of configurations, if it is installed
  (``pip install llm-analysis``).
- ``sweep_points_per_s``, ``study_cold_s``/``study_warm_s``, ``multirun_job_overhead_s``:
  the app end to end (see ``dse/app``).
- ``sweep_kept_points_per_s``, ``issue16_sweep_s``: a sweep that keeps every row and has a large
  front, and issue 16's 884,736-point command (``--only sweep_kept``).
- ``serve_search_s``: task=serve's vectorized deployment search (>= 100,000 deployments) after compilation.
- ``optimize_vs_exhaustive``: task=optimize's legal result on enumerable problems (322,560 legal
  points each) as a fraction of the exhaustive optimum, with random search and Optuna TPE
  (``pip install optuna``) at the same number of evaluations.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import dse
from dse.app.build import load_hardware, load_model
from dse.core.design import Design, Quant, Workload, specialize
from dse.core.metrics import COMPILER_OPTIONS, evaluate, map_points


def emit(name: str, value, unit: str, **extra):
    print(json.dumps({"name": name, "value": value, "unit": unit, **extra}), flush=True)


def _space(base: Design, arch: dict, quant: dict, work: dict) -> tuple[Design, dict]:
    """(fixed design, swept knobs): a space as a sweep evaluates it — the swept knobs are arrays of
    points, every other leaf one (traced) value shared by all points — with the fixed design
    tracing only the cost-model parts the knobs' values need (``Arch.features``)."""
    arch_np = {k: np.asarray(v) for k, v in arch.items()}
    base = Design(specialize(base.arch, **arch_np), base.quant, base.workload)
    f32 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)  # noqa: E731
    return f32(base), f32({"arch": arch, "quant": quant, "workload": work})


def _point(base: Design, knobs: dict) -> Design:
    return Design(*(dataclasses.replace(getattr(base, part), **knobs[name])
                    for part, name in (("arch", "arch"), ("quant", "quant"), ("workload", "workload"))))


def _random_designs(n: int, seed: int = 0):
    """Llama-2-7B with GQA × bits × batch × context random per point."""
    rng = np.random.default_rng(seed)
    return _space(Design(load_model("llama2_7b")),
                  {"n_kv_heads": rng.choice([1, 2, 4, 8, 16, 32], n)},
                  {"w_bits": rng.choice([4, 8, 16], n), "a_bits": rng.choice([8, 16], n),
                   "kv_bits": rng.choice([4, 8, 16], n)},
                  {"batch": rng.integers(1, 257, n), "prompt_len": rng.integers(128, 32769, n),
                   "gen_len": rng.integers(1, 1025, n)})


def _rate(fn, args, n, repeats=3):
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return n / best


def _bench_eval(space, n: int, suffix: str = "", **extra) -> float:
    """Compile time, evaluation rate (every metric) and gradient rate (smooth tpot_s w.r.t. every swept knob)."""
    base, knobs = space
    hw = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), load_hardware("h100_sxm"))
    fn = jax.jit(lambda ks, d0, h: map_points(lambda k: evaluate(_point(d0, k), h), ks),
                 compiler_options=COMPILER_OPTIONS)
    t = time.perf_counter()
    jax.block_until_ready(fn(knobs, base, hw))
    emit("eval_compile_s" + suffix, round(time.perf_counter() - t, 3), "s")
    eval_rate = _rate(fn, (knobs, base, hw), n)
    emit("eval_points_per_s" + suffix, round(eval_rate), "points/s", points=n,
         metrics=len(fn(knobs, base, hw)), features=list(base.arch.features), **extra)
    tpot = lambda k, d0, h: evaluate(_point(d0, k), h, smooth=True)["tpot_s"]  # noqa: E731
    grad = jax.jit(lambda ks, d0, h: map_points(lambda k: jax.value_and_grad(tpot)(k, d0, h), ks),
                   compiler_options=COMPILER_OPTIONS)
    emit("grad_points_per_s" + suffix, round(_rate(grad, (knobs, base, hw), n)), "points/s", points=n,
         knobs=sum(len(v) for v in knobs.values()), **extra)
    return eval_rate


def bench_core(n: int):
    return _bench_eval(_random_designs(n), n)


def _random_moe_designs(n: int, seed: int = 0):
    """A DeepSeek-V3-like space: every MoE/MLA/window knob random per point."""
    rng = np.random.default_rng(seed)
    pick = lambda *values: rng.choice(values, n)  # noqa: E731
    arch = {"n_experts": pick(64, 128, 256), "top_k": pick(2, 4, 8), "d_ff_expert": pick(1024, 2048, 4096),
            "kv_lora_rank": pick(256, 512, 1024), "window": pick(0, 4096), "global_every": pick(2, 4),
            "n_shared_experts": pick(0, 1, 2)}
    quant = {"w_bits": pick(4, 8, 16), "a_bits": pick(8, 16), "kv_bits": pick(4, 8, 16)}
    work = {"batch": rng.integers(1, 257, n), "prompt_len": rng.integers(128, 32769, n),
            "gen_len": rng.integers(1, 1025, n), "ep": pick(1, 2, 4, 8)}
    return _space(Design(load_model("deepseek_v3"), Quant(), Workload(tp=8.0)), arch, quant, work)


def bench_moe(n: int):
    _bench_eval(_random_moe_designs(n), n, "_moe", model="deepseek_v3-like")


def bench_llm_analysis(eval_rate: float, n: int = 200):
    try:
        logging.disable(logging.CRITICAL)
        from llm_analysis.analysis import LLMAnalysis
        from llm_analysis.config import get_dtype_config_by_name, get_gpu_config_by_name, get_model_config_by_name
    except Exception as exc:  # not installed: say so, do not fail
        emit("llm_analysis_configs_per_s", None, "configs/s", skipped=f"llm-analysis not importable: {exc}")
        return
    import contextlib
    import io
    model = get_model_config_by_name("facebook_opt-1.3b")
    gpu, dtype = get_gpu_config_by_name("a100-sxm-80gb"), get_dtype_config_by_name("w16a16e16")
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for _ in range(n):
            LLMAnalysis(model, gpu, dtype).inference(batch_size_per_gpu=int(rng.integers(1, 65)),
                                                    seq_len=int(rng.integers(128, 2049)),
                                                    num_tokens_to_generate=int(rng.integers(1, 1025)))
    rate = n / (time.perf_counter() - t)
    emit("llm_analysis_configs_per_s", round(rate, 1), "configs/s", configs=n)
    emit("speedup_vs_llm_analysis", round(eval_rate / rate), "x")


def _run_dse(args: list[str], cwd: str) -> float:
    root = os.path.dirname(os.path.dirname(os.path.abspath(dse.__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dse", *args], cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def bench_app(quick: bool):
    with tempfile.TemporaryDirectory() as tmp:
        emit("study_cold_s", round(_run_dse([f"hydra.run.dir={tmp}/study"], tmp), 2), "s",
             note="python -m dse in a new process: imports, compile, sweep, Pareto, files, plot")
        emit("study_warm_s", round(_run_dse([f"hydra.run.dir={tmp}/study2"], tmp), 2), "s",
             note="second run in a new process (imports and tracing again; compilations come from JAX's persistent cache)")
        from dse.app.sweep_task import run_sweep_bench
        n = 1_000_000 if quick else 10_000_000
        cold, points = run_sweep_bench(n, os.path.join(tmp, "big"))
        seconds, _ = run_sweep_bench(n, os.path.join(tmp, "big2"))  # compiled once: the jit cache is warm
        emit("sweep_points_per_s", round(points / seconds), "points/s", points=points, seconds=round(seconds, 2),
             cold_seconds=round(cold, 2), cold_points_per_s=round(points / cold),
             note="task=sweep end to end in one process: grid, chunks, Pareto, parquet/CSV/Markdown, plot; the "
                  "value is the second run (compiled), cold_* the first (tracing and compilation)")
        jobs = 4 if quick else 16
        total = _run_dse(["-m", f"hydra.sweep.dir={tmp}/mr", "task=evaluate",
                          f"workload.batch={','.join(str(b) for b in range(1, jobs + 1))}"], tmp)
        one = _run_dse(["-m", f"hydra.sweep.dir={tmp}/mr1", "task=evaluate", "workload.batch=1"], tmp)
        emit("multirun_job_overhead_s", round((total - one) / (jobs - 1), 3), "s/job", jobs=jobs,
             note="basic launcher: (time of N jobs − time of 1 job) / (N − 1), aggregation included")


ISSUE16_SWEEP = ["task=sweep", "space=none", "+space.model.n_kv_heads=[32,16,8,4,2,1]", "+space.quant.w_bits=[16,8,4]",
                 "+space.quant.kv_bits=[16,8,4]", "+space.workload.batch={low: 1, high: 256, integer: true}",
                 "+space.workload.prompt_len={low: 128, high: 8192, multiple_of: 128}", "sweep.progress=false"]


def bench_sweep_kept(quick: bool):
    """``sweep_kept_points_per_s``: a sweep keeping every row (Parquet) whose front has thousands of
    designs; ``issue16_sweep_s``: issue 16's 884,736-point command in a new process (its printed
    sweep time, and the process's wall time; the second run finds JAX's compilation cache warm)."""
    import json as _json
    from dse.app.sweep_task import run_sweep_kept_bench
    with tempfile.TemporaryDirectory() as tmp:
        n = 1_000_000 if quick else 10_000_000
        cold, points, rows, front = run_sweep_kept_bench(n, os.path.join(tmp, "kept"))
        warm, *_ = run_sweep_kept_bench(n, os.path.join(tmp, "kept2"))  # compiled once: the jit cache is warm
        emit("sweep_kept_points_per_s", round(points / warm), "points/s", points=points, rows_kept=rows,
             pareto_rows=front, seconds=round(warm, 2), cold_seconds=round(cold, 2),
             cold_points_per_s=round(points / cold),
             note="task=sweep, sweep.keep_results=all, end to end in one process: grid, chunks, exact Pareto, every "
                  "row to results.parquet, pareto.csv/md, plot; the value is the second run (compiled; a new "
                  "process gets the same from JAX's persistent cache), cold_* the first (tracing and compilation)")
        for run in ("first", "second"):
            wall = _run_dse([*ISSUE16_SWEEP, f"hydra.run.dir={tmp}/issue16_{run}"], tmp)
            info = _json.loads(open(os.path.join(tmp, f"issue16_{run}", "sweep.json")).read())
            emit("issue16_sweep_s", info["eval_and_pareto_s"], "s", run=run, points=info["points"],
                 pareto_rows=info["pareto_rows"], total_s=info["total_s"], process_wall_s=round(wall, 2),
                 note="the printed 'swept N points in X s' of issue 16's command (X), files and plot (total_s), "
                      "and the whole process")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes (for a smoke run)")
    p.add_argument("--only", nargs="*", default=["core", "moe", "llm_analysis", "app", "sweep_kept", "optimize", "serve"],
                   help="any of: core moe llm_analysis app sweep_kept optimize serve codesign (codesign is not in the "
                        "default set: hours of CPU; see dse/explore/codesign_bench.py)")
    p.add_argument("--codesign-budgets", nargs="*", default=["1e3", "1e4", "1e5"], help="codesign: budgets to run")
    p.add_argument("--codesign-seeds", type=int, default=5, help="codesign: seeds per (problem, budget, method)")
    p.add_argument("--codesign-first-seed", type=int, default=0,
                   help="codesign: the first seed (0-4 are the reported ones; e.g. 5 for held-out seeds)")
    p.add_argument("--codesign-methods", nargs="*", default=["dse", "tpe", "cmaes", "random"], help="codesign: methods")
    p.add_argument("--codesign-problems", nargs="*", default=None, help="codesign: problems (default: all)")
    p.add_argument("--codesign-cache", default=None, help="codesign: JSON-lines file of finished runs (resumable)")
    p.add_argument("--codesign-verify", default=None, help="codesign: a directory; re-evaluate each optimum by task=evaluate")
    p.add_argument("--codesign-tpe-max", type=int, default=1000,
                   help="codesign: largest budget Optuna TPE runs at (O(n) per trial: 1e4 trials take hours here)")
    a = p.parse_args(argv)
    emit("machine", platform.processor() or platform.machine(), "", cpus=os.cpu_count(), jax=jax.__version__,
         devices=[str(d) for d in jax.devices()], dse=dse.__version__, python=platform.python_version())
    n = 1 << 17 if a.quick else 1 << 20
    rate = bench_core(n) if "core" in a.only else None
    if "moe" in a.only:
        bench_moe(n)
    if "llm_analysis" in a.only and rate:
        bench_llm_analysis(rate)
    if "app" in a.only:
        bench_app(a.quick)
    if "sweep_kept" in a.only:
        bench_sweep_kept(a.quick)
    if "optimize" in a.only:
        bench_optimize(with_optuna=not a.quick)
    if "serve" in a.only:
        bench_serve()
    if "codesign" in a.only:
        from dse.explore.codesign_bench import run as run_codesign
        run_codesign(a.codesign_budgets, a.codesign_seeds, a.codesign_methods, a.codesign_problems, a.codesign_cache,
                     emit=lambda name, value, unit, **kw: emit(name, value, unit, **kw), tpe_max_budget=a.codesign_tpe_max,
                     verify_dir=a.codesign_verify, first_seed=a.codesign_first_seed)



def bench_serve():
    """task=serve's search: Llama-3.1-70B on 8 H100s, ISL 2048, OSL 256, every aggregated and
    disaggregated deployment of the default grid, one compiled vmapped call (timed after compiling)."""
    from dse.core.conventions import DEFAULT
    from dse.explore.serve_search import ServeGrid, search

    base = Design(load_model("llama3_70b"), Quant(), Workload(prompt_len=2048.0, gen_len=256.0, spec_alpha=0.7))
    r = search(base, load_hardware("h100_sxm"), DEFAULT, ServeGrid(gpus=8), ttft_max_s=2.0, tpot_max_s=0.05)
    emit("serve_search_s", round(r.search_s, 4), "s", deployments=r.points, feasible=len(r.feasible),
         pareto_rows=len(r.front), compile_s=round(r.compile_s, 2),
         note="llama3_70b on 8x h100_sxm, ISL 2048, OSL 256, TTFT <= 2 s, TPOT <= 50 ms; search after compilation")


OPT_PROBLEMS = [("h100_sxm", "neg_decode_tokens_per_s", 0.02, 0.03), ("h100_sxm", "neg_decode_tokens_per_s", 0.01, 0.03),
                ("a100_80gb", "cost_per_token", 0.05, 0.05), ("a100_80gb", "neg_decode_tokens_per_s", 0.03, 0.05),
                ("tpu_v5e", "neg_decode_tokens_per_s", 0.03, 0.05), ("tpu_v5e", "neg_decode_tokens_per_s", 0.02, 0.03)]
OPT_KNOBS = [("model.n_kv_heads", [1, 2, 4, 8, 16, 32]), ("quant.w_bits", {"low": 3, "high": 16, "integer": True}),
             ("quant.kv_bits", {"low": 2, "high": 16, "integer": True}),
             ("workload.batch", {"low": 1, "high": 256, "integer": True, "log": True})]


def bench_optimize(with_optuna: bool = True):
    """optax vs random search vs Optuna TPE at equal evaluation budgets, on enumerable problems."""
    import itertools

    from dse.app.build import load_accuracy
    from dse.core.conventions import DEFAULT
    from dse.explore.optimize import Constraints, Settings, exact_batch, optimize
    from dse.explore.space import parse_knob

    design = Design(load_model("llama2_7b"), Quant(), Workload(1.0, 2048.0, 256.0, 1.0))
    acc = load_accuracy()
    knobs = [parse_knob(k, v) for k, v in OPT_KNOBS]
    keys = tuple(k.key for k in knobs)
    grid = np.array(list(itertools.product(*[k.values for k in knobs])), float)
    for hw_name, objective, delta, slo in OPT_PROBLEMS:
        hw = load_hardware(hw_name)
        base = evaluate(design, hw, DEFAULT, acc)
        cons = Constraints(loss_max=float(base["loss_proxy"]) + delta, fits_memory=True, max_tpot_s=slo)
        kw = dict(conv=DEFAULT, keys=keys, objective=objective, constraints=cons)

        def best(rows):
            out = exact_batch(jnp.asarray(rows), design, hw, acc, **kw)
            ok = np.asarray(out["valid"]) & (np.asarray(out["violation"]).sum(-1) <= 0)
            return float(np.asarray(out["objective"])[ok].min()) if ok.any() else float("inf")

        optimum = min(best(grid[s:s + 65536]) for s in range(0, len(grid), 65536))
        t = time.perf_counter()
        r = optimize(design, hw, acc, DEFAULT, knobs, objective, cons, Settings())
        t_opt = time.perf_counter() - t
        found = best(r.legal[None])
        budget = r.evaluations
        rng = np.random.default_rng(0)
        rand = min(best(grid[rng.choice(len(grid), budget, replace=False)]) for _ in range(1))
        tpe = None
        if with_optuna:
            tpe = _optuna_best(grid, knobs, best, budget)
        label = f"{hw_name}/{objective}/loss+{delta}/tpot<={slo}"
        # quality relative to the optimum, <= 1 (1 = optimal), for minimized costs and negated rates alike
        rel = lambda v: None if not np.isfinite(v) else round(optimum / v if optimum > 0 else v / optimum, 4)  # noqa: E731
        emit("optimize_vs_exhaustive", rel(found), "fraction of optimum", problem=label, evaluations=budget,
             grid=len(grid), seconds=round(t_opt, 2), random_search=rel(rand), optuna_tpe=rel(tpe) if tpe is not None else None,
             note="quality vs the exhaustive optimum: 1 = optimal, 0.95 = 5% worse; inf/None = no feasible point found")


def _optuna_best(grid, knobs, best, budget):
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    found = float("inf")
    for _ in range(budget):
        trial = study.ask()
        row = [trial.suggest_categorical(k.key, [float(v) for v in k.values]) if len(k.values) <= 16
               else float(k.values[trial.suggest_int(k.key, 0, len(k.values) - 1)]) for k in knobs]
        value = best(np.asarray([row]))
        found = min(found, value)
        study.tell(trial, value if np.isfinite(value) else 1e30)
    return found


if __name__ == "__main__":
    main()
