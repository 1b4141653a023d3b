"""What a job returns to its sweeper: the objective values under Hydra's Optuna sweeper.

hydra-optuna-sweeper (https://hydra.cc/docs/plugins/optuna_sweeper/) reads each job's return
value as the trial's objective values, in the order of ``hydra.sweeper.direction``. dse's objectives
are written once, in ``sweep.objectives`` (the grid sweep's): a trial returns those metrics of its
``result.json``, and the directions must agree (``max`` = ``maximize``), or the run stops with one
error naming both. Under any other sweeper a job returns its result unchanged.
"""
from __future__ import annotations

from omegaconf import OmegaConf

from dse.core.design import DesignError


def _sweeper():
    from hydra.core.hydra_config import HydraConfig
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().sweeper


def is_optuna(sweeper) -> bool:
    return sweeper is not None and "optuna" in str(sweeper.get("_target_", "")).lower()


def objective_values(cfg, result: dict, directions) -> list[float]:
    """The values of ``sweep.objectives`` in ``result``, after checking them against the directions."""
    objectives = OmegaConf.to_container(cfg.sweep.objectives, resolve=True)
    directions = [str(getattr(d, "name", d)) for d in (directions if isinstance(directions, (list, tuple))
                                                      or OmegaConf.is_list(directions) else [directions])]
    want = ["maximize" if o["dir"] == "max" else "minimize" for o in objectives]
    if directions != want:
        raise DesignError(f"hydra.sweeper.direction={directions}: must match sweep.objectives "
                          f"{[(o['key'], o['dir']) for o in objectives]}, i.e. {want}")
    if not isinstance(result, dict):
        raise DesignError(f"task={cfg.task.name}: the Optuna sweeper needs task=evaluate (one design per trial)")
    missing = [o["key"] for o in objectives if o["key"] not in result]
    if missing:
        raise DesignError(f"sweep.objectives: {missing} not in the job's result")
    return [float(result[o["key"]]) for o in objectives]


def check(cfg) -> None:
    """Before the job runs: a trial of the Optuna sweeper evaluates one design (task=evaluate)."""
    if is_optuna(_sweeper()) and cfg.task.name != "evaluate":
        raise DesignError(f"task={cfg.task.name}: the Optuna sweeper needs task=evaluate (one design per trial)")


def job_return(cfg, result):
    """The job's return value for its sweeper."""
    sweeper = _sweeper()
    if not is_optuna(sweeper):
        return result
    return objective_values(cfg, result, sweeper.get("direction"))
