"""``python -m dse``: compose the config (Hydra), validate it, build pytrees, run a task, write files.

Thin by design: every number comes from dse.core; every table, plot and file from dse.explore.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from dse.app.build import resource_dir
from dse.app.schema import register_configs
from dse.core.design import DesignError

TASKS = ("evaluate", "sweep", "optimize", "validate", "trends", "casestudy", "serve", "accuracy", "calibrate")


def register_studies() -> None:
    """Named studies in sweeps/*.yaml become the config group ``sweeps`` (package _global_)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for path in sorted(resource_dir("sweeps").glob("*.yaml")):
        cs.store(group="sweeps", name=path.stem, node=OmegaConf.load(path), package="_global_")


def run(cfg: DictConfig):
    """Run one job, then write its report.html (one per multirun, at the root, instead of per job)."""
    from dse.app.optuna_support import check
    try:
        check(cfg)
    except DesignError as e:
        print(f"dse: error: {e}", file=sys.stderr)
        sys.exit(2)
    result = _dispatch(cfg)
    from dse.app.report_task import write_task_report
    write_task_report(cfg)
    from dse.app.optuna_support import job_return
    return job_return(cfg, result)  # the objective values under the Optuna sweeper


def _dispatch(cfg: DictConfig):
    """Dispatch one job; bad input exits non-zero with one line naming the field, value and rule."""
    from dse.app.common import output_dir, setup

    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU found" is not news
    name = cfg.task.name
    try:
        from dse.app.strict import check_config
        check_config(cfg)  # unknown keys (with or without +), task params, non-finite numbers
        if name not in TASKS:
            raise DesignError(f"task={name!r}: unknown task; available: {list(TASKS)}")
        out = output_dir()
        if name in ("accuracy", "calibrate"):
            from dse.app import accuracy_task
            return getattr(accuracy_task, f"run_{name}")(cfg, out)
        if name == "trends":
            from dse.app.paper_tasks import run_trends
            return run_trends(cfg, out)
        s = setup(cfg)
        if name == "evaluate":
            from dse.app.evaluate_task import run_evaluate
            return run_evaluate(s, out)
        if name == "sweep":
            from dse.app.sweep_task import run_sweep_task
            return run_sweep_task(s, out)
        if name == "optimize":
            from dse.app.optimize_task import run_optimize
            return run_optimize(s, out)
        if name == "validate":
            from dse.app.validate_task import run_validate
            return run_validate(s, out)
        if name == "serve":
            from dse.app.serve_task import run_serve
            return run_serve(s, out)
        from dse.app.paper_tasks import run_casestudy
        return run_casestudy(s, out)
    except DesignError as e:
        print(f"dse: error: {e}", file=sys.stderr)
        sys.exit(2)


def _compilation_cache() -> None:
    """JAX's persistent compilation cache (``~/.cache/dse/jax``, or ``$DSE_CACHE_DIR``; ``DSE_CACHE_DIR=``
    turns it off): a later command of the same structure loads its compiled sweep instead of
    compiling it again (~1.5-4 s of a sweep's time on a 2-core CPU). Tracing still runs."""
    import os
    from pathlib import Path

    import jax
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return  # the user's own choice
    path = os.environ.get("DSE_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dse" / "jax"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)


def main() -> None:
    _compilation_cache()
    register_configs()
    # The named studies live in ConfigStore; every composition pays for its entries (~20 ms a
    # job), so they are registered only when a command may use or list them.
    if any(a.lstrip("+~").startswith("sweeps") or a.startswith(("--help", "-h", "--info")) for a in sys.argv[1:]):
        register_studies()
    entry = hydra.main(version_base="1.3", config_path=str(resource_dir("conf")), config_name="config")(run)
    import os
    full = bool(os.environ.get("HYDRA_FULL_ERROR") or os.environ.get("DSE_DEBUG"))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # errors reach the handler below instead of Hydra's traceback printer
    try:
        entry()
    except KeyboardInterrupt as e:  # a sweep says how many chunks are saved and that a rerun resumes
        print(f"dse: {e}" if str(e) else "dse: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        from dse.app.strict import explain
        msg = explain(e)
        if full:
            raise
        if msg is not None:
            print(f"dse: error: {msg}", file=sys.stderr)
            sys.exit(2)
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"dse: internal error: {type(e).__name__}: {first} (a bug in dse, please report it; "
              "DSE_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
