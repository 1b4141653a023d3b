"""Hydra sweeper plugin ``hydra/sweeper=dse``, installed as ``hydra_plugins.dse_sweeper``.

Hydra's basic sweeper composes every job's configuration before launching a batch, to catch
composition errors early (``Sweeper.validate_batch_is_legal``); the basic launcher then composes
each job again, in the same process, right before running it. For a 16-job multirun of
``task=evaluate`` that repeated composition is half of Hydra's per-job cost (~0.1 s a job on a
2-core VM). This sweeper is the basic sweeper without the repeat when the launcher is the
in-process basic launcher: a composition error then stops the run at the failing job, after
the earlier jobs wrote their files. With any other launcher (joblib, submitit, ray: jobs
composed elsewhere, possibly much later) every job is still checked before the first starts.

Hydra discovers plugins only in the ``hydra_plugins`` namespace package; ``pyproject.toml``
installs this folder there (``pip install .``).
"""
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

#: by name: Hydra re-executes its core plugin modules while scanning, so class objects can differ
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class DseSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch) -> None:
        launcher = type(self.launcher)
        if f"{launcher.__module__}.{launcher.__qualname__}" == BASIC_LAUNCHER:
            return  # the launcher composes each job itself, right away
        super().validate_batch_is_legal(batch)
