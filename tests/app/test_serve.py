"""task=serve end to end (issue 12): Llama-3.1-70B on 8 H100s, ISL 2048, OSL 256, TTFT <= 2 s, TPOT <= 50 ms."""
import json

import pandas as pd
import pytest

from dse.app.common import setup
from dse.app.serve_task import run_serve
from dse.core.design import DesignError

COLUMNS = ["tokens_per_s_per_gpu", "tokens_per_s_per_user", "ttft_s", "tpot_s", "j_per_token", "usd_per_mtok", "mode",
           "workload.tp", "workload.pp", "workload.dp", "workload.concurrency", "workload.chunk_tokens", "quant.w_bits",
           "quant.kv_bits", "workload.spec_k", "workload.disagg", "workload.prefill_tp", "workload.prefill_dp"]


def test_serve_llama31_70b_on_eight_h100(make_cfg, tmp_path):
    cfg = make_cfg("task=serve", "model=llama3_70b", "hardware=h100_sxm", "serve.target_rps=5")
    summary = run_serve(setup(cfg), tmp_path, quiet=True)
    assert summary["deployments"] >= 100_000
    assert summary["modes"]["aggregated"] > 0 and summary["modes"]["disaggregated"] > 0
    assert summary["search_s"] < 1.0  # after compilation (the benchmark line serve_search_s measures the same)
    front = pd.read_csv(tmp_path / "serve_pareto.csv")
    assert set(COLUMNS) <= set(front.columns) and len(front) > 0
    assert (front.ttft_s <= 2.0).all() and (front.tpot_s <= 0.05).all()  # every Pareto row meets both SLOs
    # a front: no row is beaten on both axes by another
    for r in front.itertuples():
        better = (front.tokens_per_s_per_gpu >= r.tokens_per_s_per_gpu) & (front.tokens_per_s_per_user > r.tokens_per_s_per_user)
        better |= (front.tokens_per_s_per_gpu > r.tokens_per_s_per_gpu) & (front.tokens_per_s_per_user >= r.tokens_per_s_per_user)
        assert not better.any()
    # every layout uses exactly the 8 devices
    assert (front.n_devices == 8).all()
    saved = json.loads((tmp_path / "serve.json").read_text())
    assert saved["fewest_devices"] >= 1 and (tmp_path / "serve_pareto.md").exists() and (tmp_path / "serve_pareto.png").exists()


def test_serve_rejects_a_draft_with_another_vocabulary(make_cfg, tmp_path):
    cfg = make_cfg("task=serve", "model=llama3_70b", "serve.draft_model=llama2_7b")
    with pytest.raises(DesignError, match=r"serve\.draft_model.*vocabulary"):
        run_serve(setup(cfg), tmp_path, quiet=True)


def test_serve_rejects_a_budget_no_layout_uses(make_cfg, tmp_path):
    cfg = make_cfg("task=serve", "model=llama3_70b", "serve.gpus=3", "serve.tp=[2]", "serve.pp=[1]",
                   "serve.modes=[aggregated]")
    with pytest.raises(DesignError, match=r"serve\.gpus=3: no layout"):
        run_serve(setup(cfg), tmp_path, quiet=True)


def test_serving_knobs_sweep_with_serve_columns(make_cfg, tmp_path):
    from dse.app.sweep_task import run_sweep_task
    cfg = make_cfg("task=sweep", "space=none", "model=llama2_7b", "+space.workload.chunk_tokens=[0,256]",
                   "+space.workload.pp=[1,2]", "workload.prompt_len=2048", "workload.gen_len=256",
                   "sweep.objectives=[{key: serve.tokens_per_s_per_gpu, dir: max}, {key: serve.tokens_per_s_per_user, dir: max}]")
    run_sweep_task(setup(cfg), tmp_path, quiet=True)
    rows = pd.read_csv(tmp_path / "results.csv")
    assert len(rows) == 4 and {"serve.ttft_s", "serve.tpot_s", "serve.j_per_token", "pipeline_bubble"} <= set(rows.columns)
    # a chunk budget trades throughput per GPU for tokens/s per user (Sarathi-Serve's point)
    one = rows[rows["workload.pp"] == 1].set_index("workload.chunk_tokens")
    assert one.loc[256, "serve.tokens_per_s_per_user"] > one.loc[0, "serve.tokens_per_s_per_user"]
