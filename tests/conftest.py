"""Shared fixtures. Importing dse turns on float64, so counts are exact to the digit."""
import pathlib

import pytest

import dse  # noqa: F401  (x64 before anything is traced)
from dse.app.build import load_hardware, load_model

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def llama7b():
    return load_model("llama2_7b")


@pytest.fixture(scope="session")
def h100():
    return load_hardware("h100_sxm")
