"""Sweeps on existing distributed engines through Hydra's plugins (real multiruns, new processes):

- a 3-shard grid on hydra-submitit-launcher's local executor (the code path of its SLURM executor)
  and on hydra-ray-launcher against a Ray cluster this test starts and stops on 127.0.0.1, each
  merged by the multirun callback into exactly the front of the unsharded sweep;
- hydra-optuna-sweeper (``hydra/sweeper=optuna_dse``) as another search over the same objectives.
(joblib: tests/app/test_cli.py; 4 shards merged in-process: tests/app/test_compose.py.)
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dse.explore.pareto import pareto_front
from tests.app.conftest import ROOT, run_cli

SPACE = ("task=sweep", "sweep.progress=false", "space=none", "+space.model.n_kv_heads=[32,8,4,1]",
         "+space.quant.w_bits=[16,8,4]", "+space.workload.batch={low: 1, high: 512, num: 10, log: true, integer: true}",
         "sweep.chunk_size=37")
SHARDS = ("sweep.num_shards=3", "sweep.shard=range(0,3)")


@pytest.fixture(scope="module", autouse=True)
def jax_cache(tmp_path_factory):
    """One persistent JAX compilation cache for this module's processes (launcher jobs, Ray workers):
    the unsharded run compiles the sweep once, every shard job loads it (same chunk shapes)."""
    old = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    if old is None:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory):
    d = tmp_path_factory.mktemp("whole")
    run_cli(*SPACE, "hydra.run.dir=.", cwd=d)
    front = pd.read_csv(d / "pareto.csv")
    assert len(front) > 3
    return sorted(front.grid_index)


def _merged(root: Path, n_jobs=3):
    assert len(list(root.glob("*/pareto.parquet"))) == n_jobs  # one front per shard, written by its job
    assert (root / "report.html").exists()  # the explorer at the multirun root
    return sorted(pd.read_csv(root / "pareto.csv").grid_index)


def test_submitit_local_shards_merge_to_the_unsharded_front(tmp_path, unsharded):
    run_cli("-m", *SPACE, *SHARDS, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20",
            "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={tmp_path}/mr", cwd=tmp_path)
    assert list((tmp_path / "mr" / ".submitit").glob("*/*_result.pkl"))  # the jobs ran under submitit
    assert _merged(tmp_path / "mr") == unsharded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path):
    """`ray start --head` on 127.0.0.1 in its own process group; stopped (that group only) afterwards."""
    port, client = _free_port(), _free_port()
    log = open(tmp_path / "ray_head.log", "w")
    short = tempfile.mkdtemp(prefix="dse-ray-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             f"--ray-client-server-port={client}", "--num-cpus=3", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={short}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while "Ray runtime started" not in (tmp_path / "ray_head.log").read_text():
            assert head.poll() is None and time.time() < deadline, (tmp_path / "ray_head.log").read_text()[-3000:]
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        # the head's group is the whole cluster; Ray's graceful stop on SIGTERM took 33 s of the suite, a
        # throwaway test cluster needs none: 5 s to exit, then SIGKILL
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
                head.wait(timeout=wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        log.close()
        shutil.rmtree(short, ignore_errors=True)


def test_ray_shards_merge_to_the_unsharded_front(tmp_path, unsharded, ray_cluster):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "dse", "-m", *SPACE, *SHARDS, "hydra/launcher=ray_dse",
                        f"hydra.sweep.dir={tmp_path}/mr"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Connecting to existing Ray cluster at address" in p.stderr + p.stdout
    assert _merged(tmp_path / "mr") == unsharded


OBJECTIVES = [{"key": "decode_tokens_per_s", "dir": "max"}, {"key": "loss_proxy", "dir": "min"},
              {"key": "memory_bytes", "dir": "min"}]
KNOBS = ["model.n_kv_heads", "quant.w_bits", "quant.kv_bits", "workload.batch", "workload.prompt_len"]


def test_optuna_sweeper_searches_the_same_objectives(tmp_path):
    run_cli("-m", "task=evaluate", "hydra/sweeper=optuna_dse", "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=4",
            f"hydra.sweep.dir={tmp_path}/mr", cwd=tmp_path)
    root = tmp_path / "mr"
    results = pd.read_csv(root / "results.csv")
    assert len(results) == 8 and (root / "report.html").exists()
    # Optuna's own front of the trials (from the values the jobs returned) is dse's front of the same
    # trials under the same objectives (all trials, fitting or not), design for design
    solutions = yaml.safe_load((root / "optimization_results.yaml").read_text())["solutions"]
    theirs = sorted(tuple(float(s["params"][k]) for k in KNOBS) for s in solutions)
    ours = pareto_front(results, OBJECTIVES, fits_only=False)
    assert theirs == sorted(set(map(tuple, ours[KNOBS].astype(float).to_numpy())))
    for s in solutions:  # the returned values are the result.json metrics
        row = results[(results[KNOBS].astype(float) == [float(s["params"][k]) for k in KNOBS]).all(axis=1)].iloc[0]
        assert [row[o["key"]] for o in OBJECTIVES] == pytest.approx(s["values"], rel=1e-12)
    # dse's pareto.csv at the root: the fitting trials only, the grid sweep's rule (per scenario if any)
    job_cfg = yaml.safe_load((root / "0" / ".hydra" / "config.yaml").read_text())
    scenarios = (job_cfg.get("sweep") or {}).get("scenarios") or []
    front = pd.read_csv(root / "pareto.csv")
    expected = pareto_front(results, OBJECTIVES, fits_only=True, **({"scenarios": scenarios} if scenarios else {}))
    assert front.fits_memory.all() and len(front) == len(expected)


def test_optuna_sweeper_needs_task_evaluate(tmp_path):
    p = run_cli("-m", "task=sweep", "hydra/sweeper=optuna_dse", "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1",
                f"hydra.sweep.dir={tmp_path}/mr", cwd=tmp_path, check=False)
    assert p.returncode != 0 and "the Optuna sweeper needs task=evaluate" in p.stderr, p.stderr[-2000:]
