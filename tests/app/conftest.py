import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dse.app.build import resource_dir
from dse.app.main import register_studies
from dse.app.schema import register_configs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _store():
    register_configs()
    register_studies()


@pytest.fixture
def make_cfg():
    def _make(*overrides):
        with initialize_config_dir(config_dir=str(resource_dir("conf")), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    return _make


def run_cli(*args, cwd, check=True):
    """`python -m dse ARGS` in a new process (the real CLI, Hydra and all)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "dse", *args], cwd=cwd, capture_output=True, text=True, env=env,
                       timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"dse {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def read_json(path):
    return json.loads(Path(path).read_text())
