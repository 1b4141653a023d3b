"""Issue 12 must-shows, each against a hand derivation or a second method (never the code's own output)."""
import dataclasses
import math

import numpy as np
import pytest

from dse import DEFAULT, Design, DesignError, Quant, Workload, evaluate, make_hardware, validate_design
from dse.app.build import load_hardware, load_model
from dse.core import interconnect
from dse.core.metrics import phase_tables
from dse.core.pipeline import ONCE_OPS
from dse.core.serving import check_budget, check_draft, serve, spec_tokens_per_step


def test_collectives_one_node_and_two_nodes_by_hand():
    # H100 catalog: NVLink 450 GB/s, node of 8; NDR 50 GB/s per GPU between nodes; α = 10.2 µs,
    # λ_link = 3.4 µs, λ_net = 9.6 µs (conf/hardware/h100_sxm.yaml, NCCL's tuning table).
    # the catalog's calibrated latencies (dse.measure fits them); the formulas below are by hand
    hw = dataclasses.replace(load_hardware("h100_sxm"), link_bw=450e9, net_bw=50e9, node_size=8.0)
    a, ll, ln = float(hw.link_latency), float(hw.link_hop_latency), float(hw.net_latency)
    for n in (16e3, 16e6, 256e6):  # decode-, prefill- and gradient-sized all-reduces
        # 8 devices, one node: ring 2·7 link steps, tree (a chain in the node) the same steps, 2n/β
        ring8 = a + 14 * ll + 2 * 7 / 8 * n / 450e9
        tree8 = a + 2 * 7 * ll + 2 * n / 450e9
        assert math.isclose(float(interconnect.all_reduce_time(n, 8.0, hw)), min(ring8, tree8), rel_tol=1e-9)
        # 16 devices, two nodes: 2·(16−2) link steps + 2 network steps; per-device bandwidth
        # min(450, 8 NICs × 50) = 400 GB/s; tree: 2·(7 link steps + 1 network level)
        ring16 = a + 28 * ll + 2 * ln + 2 * 15 / 16 * n / 400e9
        tree16 = a + 2 * (7 * ll + 1 * ln) + 2 * n / 400e9
        assert math.isclose(float(interconnect.all_reduce_time(n, 16.0, hw)), min(ring16, tree16), rel_tol=1e-9)
    # small messages: the tree's log-depth wins across nodes; very large ones: the ring's bandwidth
    assert float(interconnect.all_reduce_time(16e3, 16.0, hw)) == pytest.approx(a + 2 * (7 * ll + ln) + 2 * 16e3 / 400e9)
    assert float(interconnect.all_reduce_time(256e6, 16.0, hw)) == pytest.approx(a + 28 * ll + 2 * ln + 30 / 16 * 256e6 / 400e9)
    # all-gather of 16 MB over 16 devices (ring) and an all-to-all (15/16 leaves, 8/16 over the NIC)
    assert float(interconnect.all_gather_time(16e6, 16.0, hw)) == pytest.approx(a + 14 * ll + ln + 15 / 16 * 16e6 / 400e9)
    assert float(interconnect.all_to_all_time(16e6, 16.0, hw)) == pytest.approx(a + ln + max(7 / 16 * 16e6 / 450e9, 8 / 16 * 16e6 / 50e9))


def test_pipeline_bubble_and_schedule_by_hand():
    arch = load_model("llama2_7b")
    hw = dataclasses.replace(load_hardware("a100_80gb"), link_bw=300e9, node_size=8.0)
    b, P, m, pp = 8.0, 512.0, 4.0, 4.0
    d = Design(arch, Quant(), Workload(batch=b, prompt_len=P, gen_len=16, tp=2, pp=pp, microbatches=m))
    out = evaluate(d, hw)
    assert float(out["pipeline_bubble"]) == pytest.approx((pp - 1) / (m + pp - 1))  # GPipe: 3/7
    # the slowest stage: 1/pp of the per-layer operators + the once-per-step ones, on b/m sequences
    ops, times = phase_tables(dataclasses.replace(d, workload=dataclasses.replace(d.workload, pp=1.0)), hw)["prefill"]
    layers = sum(float(o.count * times[k].time_s) for k, o in ops.items() if k not in ONCE_OPS)
    once = sum(float(o.count * times[k].time_s) for k, o in ops.items() if k in ONCE_OPS)
    # activations to the next stage: b/m · P tokens · 4096 · 2 bytes over NVLink (8 devices, one node)
    send = float(hw.link_latency + hw.link_hop_latency) + (b / m) * P * 4096 * 2 / 300e9
    stage = layers / pp + once + send
    step = float(hw.step_overhead_s)  # the engine's per-step cost (calibrated by dse.measure), once per pass
    assert float(out["prefill.time_s"]) == pytest.approx((m + pp - 1) * stage + step, rel=1e-9)
    assert float(out["n_devices"]) == 8
    # memory: a stage holds a quarter of the weights
    full = evaluate(dataclasses.replace(d, workload=dataclasses.replace(d.workload, pp=1.0, microbatches=1.0)), hw)
    assert float(out["memory_bytes"]) < float(full["memory_bytes"]) / 2


def test_kv_capacity_llama31_70b_on_two_h100_by_hand():
    # Llama-3.1-70B (HF config): 80 layers, d 8192, 64 heads, 8 KV heads × 128, d_ff 28672, vocab 128256.
    L, h, H, Hkv, dh, ff, V = 80, 8192, 64, 8, 128, 28672, 128256
    matrices = L * (h * dh * (2 * H + 2 * Hkv) + 3 * h * ff) + 2 * V * h  # untied embedding and head
    vectors = (2 * L + 1) * h  # RMSNorm weights
    assert matrices + vectors == 70_553_706_496  # Meta: "70.6B"
    tp, frac, isl, osl = 2, 0.9, 2048, 256
    weights_dev = matrices * 2 / tp + vectors * 2  # fp16; norm weights replicated
    act = 3 * isl * (ff / tp) * 2  # largest activation of a 2048-token step: the SwiGLU's 2 reads + 1 write
    # vLLM's rule alone: no extra engine reserve (the calibrated catalog adds one, which leaves no room here)
    hw = dataclasses.replace(load_hardware("h100_sxm"), mem_reserve_bytes=0.0)
    free = frac * 80e9 - weights_dev - act
    kv_token_dev = 2 * L * (Hkv / tp) * dh * 2  # K and V, 4 KV heads per device, fp16 = 163,840 bytes
    per_request = math.ceil((isl + osl) / 16) * 16 * kv_token_dev
    expect = math.floor(free / per_request)
    assert expect == 3
    d = Design(load_model("llama3_70b"), Quant(), Workload(prompt_len=isl, gen_len=osl, tp=tp, mem_fraction=frac))
    m = serve(d, hw)
    assert float(m["kv_capacity_requests"]) == expect
    assert float(m["kv_free_bytes"]) == pytest.approx(free, rel=1e-9)


def test_speculative_expectation_matches_a_simulation():
    rng = np.random.default_rng(0)
    for k, alpha in ((1, 0.5), (3, 0.7), (5, 0.9)):
        draws = rng.random((200_000, k)) < alpha
        accepted = np.where(draws.all(1), k, np.argmin(draws, axis=1))  # accepted prefix length
        tokens = accepted + 1  # plus the target's own token
        se = tokens.std() / math.sqrt(len(tokens))
        assert abs(tokens.mean() - float(spec_tokens_per_step(float(k), alpha))) < 4 * se
        assert float(spec_tokens_per_step(float(k), alpha)) == pytest.approx((1 - alpha ** (k + 1)) / (1 - alpha))


def test_disaggregated_throughput_is_the_slower_pools():
    hw, arch = load_hardware("h100_sxm"), load_model("llama3_70b")
    seen = set()
    for pdp, dp in ((1, 1), (6, 1), (2, 1)):
        w = Workload(prompt_len=2048, gen_len=256, tp=4, dp=dp, disagg=1, prefill_tp=1 if pdp > 2 else 4,
                     prefill_dp=pdp, concurrency=64)
        m = serve(Design(arch, Quant(8, 16, 8), w), hw)
        pre, dec = float(m["prefill_rps"]), float(m["decode_rps"])
        assert float(m["requests_per_s"]) == pytest.approx(min(pre, dec))
        assert float(m["tokens_per_s"]) == pytest.approx(256 * min(pre, dec))
        seen.add("prefill" if pre < dec else "decode")
    assert seen == {"prefill", "decode"}  # both regimes exercised


def test_invalid_deployments_name_the_field():
    arch = load_model("llama2_7b")
    with pytest.raises(DesignError, match=r"workload\.pp=64: must not exceed model\.n_layers=32"):
        validate_design(Design(arch, Quant(), Workload(pp=64)))
    with pytest.raises(DesignError, match=r"serve\.draft_model.*vocabulary"):
        check_draft(load_model("llama3_70b"), load_model("llama2_7b"))
    with pytest.raises(DesignError, match=r"workload\.dp=1: .* = 4 devices; must equal serve\.gpus=8"):
        check_budget(Design(arch, Quant(), Workload(tp=4)), 8)
    with pytest.raises(DesignError, match=r"workload\.spec_alpha=1: must be in \[0, 1\)"):
        validate_design(Design(arch, Quant(), Workload(spec_alpha=1.0)))


def test_energy_and_price_per_token_by_hand():
    hw = make_hardware(mem_bw=2e12, mem_capacity=8e10, peak_flops={"fp16": 3e14}, power_idle_w=100.0,
                       power_busy_w=500.0, usd_per_hour=3.6)
    d = Design(load_model("llama2_7b"), Quant(), Workload(batch=4, prompt_len=128, gen_len=32))
    m = evaluate(d, hw, DEFAULT)
    per_token_s = float(m["e2e_s"]) / (4 * 32)  # one device, no pipeline: busy all the time
    assert float(m["j_per_token"]) == pytest.approx(500.0 * per_token_s)
    assert float(m["usd_per_mtok"]) == pytest.approx(3.6 / 3600 * per_token_s * 1e6)


def test_disaggregated_pools_have_their_own_precision():
    # fp8 weights and activations in the prefill pool run its compute-bound prefill on the H100's fp8 units
    hw, arch = load_hardware("h100_sxm"), load_model("llama3_70b")
    base = Workload(prompt_len=2048, gen_len=256, tp=4, disagg=1, prefill_tp=4, prefill_dp=1, concurrency=32)
    m16 = serve(Design(arch, Quant(), base), hw)
    m8 = serve(Design(arch, Quant(), dataclasses.replace(base, prefill_w_bits=8.0, prefill_a_bits=8.0)), hw)
    assert float(m8["prefill_rps"]) > 1.5 * float(m16["prefill_rps"])
    assert float(m8["decode_rps"]) == pytest.approx(float(m16["decode_rps"]))  # the decode pool is unchanged


def test_speculation_with_a_draft_model_and_with_mtp():
    hw, arch, draft = load_hardware("h100_sxm"), load_model("llama3_70b"), load_model("llama3_8b")
    w = Workload(prompt_len=2048, gen_len=256, tp=8, concurrency=4, chunk_tokens=512)
    plain = serve(Design(arch, Quant(), w), hw)
    spec = dataclasses.replace(w, spec_k=4.0, spec_alpha=0.8)
    with_draft = serve(Design(arch, Quant(), spec), hw, draft=draft)
    with_mtp = serve(Design(arch, Quant(), dataclasses.replace(spec, spec_mtp=1.0)), hw, draft=draft)
    e = (1 - 0.8 ** 5) / (1 - 0.8)
    assert float(with_draft["spec_tokens_per_step"]) == pytest.approx(e)
    # memory-bound decode at 4 requests: a 5-token verify step costs about one plain step, so both win
    assert float(with_draft["tpot_s"]) < float(plain["tpot_s"]) and float(with_mtp["tpot_s"]) < float(with_draft["tpot_s"])
    # the draft's 4 steps are in the cycle: the cycle is longer than a plain step
    assert float(with_draft["step_s"]) > float(plain["step_s"])
