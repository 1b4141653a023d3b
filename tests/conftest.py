"""Shared fixtures. Importing dse turns on float64, so counts are exact to the digit."""
import pathlib

import pytest

import dse  # noqa: F401  (x64 before anything is traced)
from dse.app.build import load_hardware, load_model

#: reference data shipped inside the package, with their original sources (see dse/data/README.md)
DATA = pathlib.Path(__file__).resolve().parents[1] / "dse" / "data"


@pytest.fixture(scope="session")
def llama7b():
    return load_model("llama2_7b")


@pytest.fixture(scope="session")
def h100():
    return load_hardware("h100_sxm")


@pytest.fixture(scope="session", autouse=True)
def _hydra_store():
    from dse.app.main import register_studies
    from dse.app.schema import register_configs
    register_configs()
    register_studies()


@pytest.fixture
def make_cfg():
    from hydra import compose, initialize_config_dir

    from dse.app.build import resource_dir

    def _make(*overrides):
        with initialize_config_dir(config_dir=str(resource_dir("conf")), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    return _make
