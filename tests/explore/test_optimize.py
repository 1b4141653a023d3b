"""Co-design against exhaustive enumeration: within 1% of the grid's optimum with <= 2% of its evaluations."""
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dse
from dse.core.design import specialize
from dse.explore.optimize import Constraints, Settings, exact_batch, optimize
from dse.explore.space import parse_knob

KNOBS = [("model.n_kv_heads", [1, 2, 4, 8, 16, 32]), ("quant.w_bits", {"low": 3, "high": 16, "integer": True}),
         ("quant.kv_bits", {"low": 2, "high": 16, "integer": True}),
         ("workload.batch", {"low": 1, "high": 256, "integer": True, "log": True})]


def exhaustive(design, hw, acc, knobs, objective, constraints):
    grid = np.array(list(itertools.product(*[k.values for k in knobs])), float)
    best, n = np.inf, len(grid)
    for s in range(0, n, 65536):
        part = grid[s:s + 65536]
        rows = len(part)
        part = np.concatenate([part, np.repeat(part[-1:], 65536 - rows, 0)])  # one shape: one compile
        out = exact_batch(jnp.asarray(part), design, hw, acc, conv=dse.DEFAULT,
                          keys=tuple(k.key for k in knobs), objective=objective, constraints=constraints)
        out = jax.tree.map(lambda x: np.asarray(x)[:rows], out)
        viol = np.asarray(out["violation"]).sum(-1)
        ok = np.asarray(out["valid"]) & (viol <= 0)
        if ok.any():
            best = min(best, np.asarray(out["objective"])[ok].min())
    return best, n


# Problems of 322,560 legal points (6 KV-head counts x 14 weight widths x 15 KV widths x 256
# batches); the 16 GB TPU v5e couples batch, bits and heads through memory (the hardest).
@pytest.mark.parametrize("hw_name,objective,delta,slo", [
    ("h100_sxm", "neg_decode_tokens_per_s", 0.02, 0.03),
    ("a100_80gb", "cost_per_token", 0.05, 0.05),
    ("tpu_v5e", "neg_decode_tokens_per_s", 0.02, 0.03),
    ("tpu_v5e", "neg_decode_tokens_per_s", 0.01, 0.03),
])
def test_legal_result_within_one_percent_of_exhaustive(hw_name, objective, delta, slo):
    # the dense model's traced parts only, as optimize() traces it (the enumeration compiles faster)
    d = dse.Design(specialize(dse.load_model("llama2_7b")), dse.Quant(), dse.Workload(batch=1, prompt_len=2048, gen_len=256))
    hw, acc = dse.load_hardware(hw_name), dse.load_accuracy()
    knobs = [parse_knob(k, v) for k, v in KNOBS]
    base = dse.evaluate(d, hw, dse.DEFAULT, acc)
    c = Constraints(loss_max=float(base["loss_proxy"]) + delta, fits_memory=True, max_tpot_s=slo)
    r = optimize(d, hw, acc, dse.DEFAULT, knobs, objective, c, Settings())
    best, n = exhaustive(d, hw, acc, knobs, objective, c)
    assert r.feasible
    found = float(exact_batch(jnp.asarray(np.repeat(r.legal[None], 65536, 0)), d, hw, acc, conv=dse.DEFAULT,
                              keys=tuple(k.key for k in knobs), objective=objective,
                              constraints=c)["objective"][0])  # the enumeration's batch shape: compiled already
    assert abs(found - best) <= 0.01 * abs(best), (found, best)
    assert r.evaluations <= 0.02 * n, (r.evaluations, n)
    # the legal design satisfies every constraint when re-evaluated exactly
    m = r.legal_metrics
    assert m["loss_proxy"] <= c.loss_max and m["memory_bytes"] <= m["mem_capacity_bytes"] and m["tpot_s"] <= slo


def test_infeasible_problem_returns_least_violating_design():
    d = dse.Design(dse.load_model("llama2_7b"), dse.Quant(), dse.Workload(batch=1, prompt_len=2048, gen_len=256))
    hw, acc = dse.load_hardware("h100_sxm"), dse.load_accuracy()
    knobs = [parse_knob(k, v) for k, v in KNOBS]
    c = Constraints(loss_max=1.0, fits_memory=True)  # below the scaling law's floor E = 1.69
    r = optimize(d, hw, acc, dse.DEFAULT, knobs, "tpot_s", c, Settings(steps=50, starts=4))
    assert not r.feasible
    assert np.isfinite(r.legal).all() and np.isfinite(r.legal_metrics["loss_proxy"])
    # least violating: the loss cannot go below its 16-bit MHA value
    assert r.legal_metrics["loss_proxy"] == pytest.approx(float(dse.evaluate(d, hw, dse.DEFAULT, acc)["loss_proxy"]), rel=1e-9)


def test_hardware_knobs_co_design():
    # Hardware resources are knobs too: with bandwidth free in [1, 8] TB/s and nothing pushing
    # back, a decode-bound objective takes the most bandwidth; the legal value is on the grid.
    d = dse.Design(dse.load_model("llama2_7b"), dse.Quant(), dse.Workload(batch=1, prompt_len=2048, gen_len=64))
    hw, acc = dse.load_hardware("h100_sxm"), dse.load_accuracy()
    knobs = [parse_knob("hardware.mem_bw", {"low": 1e12, "high": 8e12, "num": 8, "log": True}),
             parse_knob("quant.w_bits", [4, 8, 16])]
    r = optimize(d, hw, acc, dse.DEFAULT, knobs, "tpot_s", Constraints(loss_max=None), Settings(steps=40, starts=2))
    assert r.feasible and r.legal[0] == pytest.approx(8e12) and r.legal[1] == 4


def test_cost_per_token_counts_every_device_of_the_replica():
    """cost_per_token is device-seconds per token: a replica of tp · attn_dp · pp devices makes
    tokens_per_s tokens a second (README, Objectives). Was tp / tokens_per_s: pipeline stages and
    attention data-parallel ranks were free, so an optimizer given `workload.pp` could stack them."""
    from dse.explore.optimize import objective_of
    m = {"tokens_per_s": 500.0, "hw.usd_per_s": 2e-3}
    w = dse.Workload(batch=8, prompt_len=128, gen_len=16, tp=2, attn_dp=2, pp=4)
    assert objective_of(m, "cost_per_token", w) == pytest.approx(2 * 2 * 4 / 500.0)
    assert objective_of(m, "tco_usd_per_mtok", w) == pytest.approx(1e6 * 16 * 2e-3 / 500.0)
    assert objective_of(m, "neg_tokens_per_s", w) == -500.0


def test_serving_knobs_are_refused_without_a_serving_objective_or_constraint():
    """A serving knob (speculative drafts, concurrency, ...) moves only the serve.* metrics: with an
    objective and constraints that do not read them its 'optimum' was whatever value the search
    happened to hold (the objective did not depend on it)."""
    from dse.core.design import DesignError
    d = dse.Design(dse.load_model("llama2_7b"), dse.Quant(), dse.Workload(batch=8, prompt_len=512, gen_len=64))
    knobs = [parse_knob("workload.spec_k", [0, 2, 4]), parse_knob("workload.batch", [1, 8, 64])]
    with pytest.raises(DesignError, match=r"workload.spec_k.*serving knobs.*serve_cost_per_token"):
        optimize(d, dse.load_hardware("h100_sxm"), dse.load_accuracy(), dse.DEFAULT, knobs, "tpot_s", Constraints())


def test_serving_knobs_optimized_to_the_enumerated_optimum():
    """Concurrency, speculative draft length and bits of a served 8B model (continuous batching,
    dse.core.serving) under a steady-state TPOT SLO and the loss budget: the budgeted search's legal
    design is the optimum of the whole grid (9,996 points), enumerated through ``serve`` and
    ``evaluate`` directly; the objective is device-seconds per generated token of the deployment."""
    from dse.core.serving import serve
    from dse.explore.optimize import Settings
    d = dse.Design(specialize(dse.load_model("llama3_8b")), dse.Quant(),
                   dse.Workload(batch=1, prompt_len=2048, gen_len=256, spec_alpha=0.7, chunk_tokens=2048))
    hw, acc = dse.load_hardware("h100_sxm"), dse.load_accuracy()
    space = {"workload.concurrency": {"low": 1, "high": 512, "num": 40, "log": True, "integer": True},
             "workload.spec_k": [0, 1, 2, 3, 4, 5, 6], "quant.w_bits": {"low": 3, "high": 16, "integer": True},
             "quant.kv_bits": [4, 8, 16]}
    knobs = [parse_knob(k, v) for k, v in space.items()]
    loss_max = float(dse.evaluate(d, hw, dse.DEFAULT, acc)["loss_proxy"]) + 0.02
    slo = 0.018
    cons = Constraints(loss_max=loss_max, max_tpot_s=None, max_serve_tpot_s=slo)
    r = optimize(d, hw, acc, dse.DEFAULT, knobs, "serve_cost_per_token", cons, Settings(budget=2000))

    grid = np.array(list(itertools.product(*[k.values for k in knobs])), float)

    @jax.jit
    def enumerate_(rows):
        def one(x):
            w = dataclasses.replace(d.workload, concurrency=x[0], spec_k=x[1])
            q = dataclasses.replace(d.quant, w_bits=x[2], kv_bits=x[3])
            design = dataclasses.replace(d, quant=q, workload=w)
            s, m = serve(design, hw, dse.DEFAULT), dse.evaluate(design, hw, dse.DEFAULT, acc)
            ok = s["fits_memory"] & (m["loss_proxy"] <= loss_max) & (m["memory_bytes"] <= m["mem_capacity_bytes"])
            return jnp.where(ok, s["n_devices"] / s["tokens_per_s"], jnp.inf), s["tpot_s"]
        return jax.lax.map(one, rows, batch_size=1024)
    costs, tpot = map(np.asarray, enumerate_(jnp.asarray(grid)))
    best = np.where(tpot <= slo, costs, np.inf).min()
    assert np.isfinite(best) and r.feasible
    assert r.legal_metrics["serve.tpot_s"] <= slo
    found = r.legal_metrics["serve.n_devices"] / r.legal_metrics["serve.tokens_per_s"]
    assert found == pytest.approx(best, rel=1e-6), (dict(zip(space, r.legal)), dict(zip(space, grid[costs.argmin()])))
    # the SLO binds: without it the cheapest design runs more requests at a slower TPOT
    assert costs.min() < 0.95 * best and tpot[costs.argmin()] > slo
