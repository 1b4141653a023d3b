"""Properties over the valid domain (hypothesis), gradients, smooth-vs-exact, vmap, one compilation."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from dse import Design, Quant, Workload, evaluate, make_arch, make_hardware
from dse.core.design import as_arrays, specialize

HEADS = [1, 2, 4, 8, 16, 32]


@st.composite
def designs(draw):
    H = draw(st.sampled_from(HEADS[1:]))
    kv = draw(st.sampled_from([k for k in HEADS if H % k == 0]))
    tp = draw(st.sampled_from([t for t in (1, 2, 4) if H % t == 0]))
    arch = make_arch(n_layers=draw(st.integers(1, 96)), d_model=H * draw(st.sampled_from([32, 64, 128])),
                     n_heads=H, n_kv_heads=kv, d_ff=tp * draw(st.integers(16, 4096)), vocab=draw(st.integers(100, 200_000)),
                     gated_mlp=draw(st.booleans()), parallel_block=draw(st.booleans()))
    arch = specialize(arch)  # dense, grouped KV: as a sweep traces it (the general path: tests/core/test_moe.py)
    q = Quant(*(draw(st.floats(1.0, 32.0)) for _ in range(3)))
    w = Workload(batch=float(draw(st.integers(1, 1024))), prompt_len=float(draw(st.integers(1, 32768))),
                 gen_len=float(draw(st.integers(1, 4096))), tp=float(tp))
    return Design(arch, q, w)


HW = make_hardware(mem_bw=3.35e12, mem_capacity=8e10, peak_flops={"fp32": 6.7e13, "fp16": 9.89e14, "fp8": 1.979e15},
                   link_bw=4.5e11, link_latency=8.5e-6, flops_efficiency=0.73, mem_efficiency=0.85, kernel_overhead_s=4.5e-6)
ev = jax.jit(evaluate, static_argnames=("conv", "smooth"))


def _loss(design, hw):
    return ev(design, hw, smooth=True)["e2e_s"]


grad_jit = jax.jit(jax.grad(_loss, argnums=(0, 1)))  # compiled once per structure (not per example)


@settings(max_examples=40, deadline=None)
@given(designs())
def test_outputs_and_gradients_finite(d):
    d = as_arrays(d)
    m = ev(d, HW)
    for k, v in m.items():
        assert np.isfinite(np.asarray(v, dtype=float)).all(), k
    g = grad_jit(d, HW)
    for leaf in jax.tree.leaves(g):
        assert np.isfinite(np.asarray(leaf)).all()


@settings(max_examples=30, deadline=None)
@given(designs())
def test_kv_bytes_proportional_to_kv_heads(d):
    a = d.arch
    if a.n_kv_heads * 2 > a.n_heads or d.workload.tp > a.n_kv_heads:
        return
    d2 = dataclasses.replace(d, arch=dataclasses.replace(a, n_kv_heads=a.n_kv_heads * 2))
    m1, m2 = ev(as_arrays(d), HW), ev(as_arrays(d2), HW)
    assert np.isclose(float(m2["kv_cache_bytes"]), 2 * float(m1["kv_cache_bytes"]), rtol=1e-12)
    from dse.core.metrics import phase_tables
    k1 = phase_tables(as_arrays(d), HW)["decode"][0]["attention"].kv_read
    k2 = phase_tables(as_arrays(d2), HW)["decode"][0]["attention"].kv_read
    assert np.isclose(float(k2), 2 * float(k1), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(designs(), st.floats(0.25, 4.0))
def test_bytes_linear_in_bits(d, scale):
    # Every byte count is Σ elements·bits/8, so scaling all bits scales all bytes.
    q = d.quant
    lo = Quant(q.w_bits / 4, q.a_bits / 4, q.kv_bits / 4)
    d_lo, d_hi = dataclasses.replace(d, quant=lo), dataclasses.replace(d, quant=Quant(lo.w_bits * scale, lo.a_bits * scale, lo.kv_bits * scale))
    for key in ("prefill.bytes", "decode.bytes", "generate.bytes", "weight_bytes", "kv_cache_bytes"):
        assert np.isclose(float(ev(as_arrays(d_hi), HW)[key]), scale * float(ev(as_arrays(d_lo), HW)[key]), rtol=1e-12), key


@settings(max_examples=30, deadline=None)
@given(designs(), st.floats(1.0, 8.0), st.sampled_from(["mem_bw", "peak_fp16", "peak_fp8", "peak_fp32", "link_bw"]))
def test_more_resources_never_slower(d, factor, field):
    faster = dataclasses.replace(HW, **{field: getattr(HW, field) * factor})
    m0, m1 = ev(as_arrays(d), HW), ev(as_arrays(d), faster)
    for key in ("ttft_s", "tpot_s", "e2e_s", "decode.time_s"):
        assert float(m1[key]) <= float(m0[key]) * (1 + 1e-12), key


@settings(max_examples=30, deadline=None)
@given(designs(), st.integers(2, 64))
def test_larger_batch_never_fewer_flops(d, factor):
    big = dataclasses.replace(d, workload=dataclasses.replace(d.workload, batch=d.workload.batch * factor))
    m0, m1 = ev(as_arrays(d), HW), ev(as_arrays(big), HW)
    for key in ("prefill.flops", "decode.flops", "generate.flops"):
        assert float(m1[key]) >= float(m0[key])


@settings(max_examples=30, deadline=None)
@given(designs())
def test_smooth_close_to_exact(d):
    # smax(a, b) − max(a, b) <= SMOOTH_TEMP·ln2·(a + b) <= 1.4% of max; the precision steps are
    # sharp away from 4/8/16 bits. Bound the reported difference at 3%.
    d = as_arrays(d)
    q = d.quant
    if any(abs(float(b) - w) < 1.5 for b in (q.w_bits, q.a_bits, q.kv_bits) for w in (4.5, 8.5, 16.5)):
        return
    exact, smooth = ev(d, HW), ev(d, HW, smooth=True)
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert float(smooth[key]) >= float(exact[key]) * (1 - 1e-3)  # the smooth peak steps leak <0.1%
        assert float(smooth[key]) <= 1.03 * float(exact[key]), key


ev_batched = jax.jit(jax.vmap(evaluate, in_axes=(0, None)))  # compiled once per structure


def _stack(ds):
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, dtype=jnp.float64) for x in xs]), *ds)


@settings(max_examples=5, deadline=None)
@given(st.lists(designs(), min_size=3, max_size=3))
def test_vmap_equals_python_loop(ds):
    # vmap needs one structure: copy the first design's structure onto the others.
    a0 = ds[0].arch
    ds = [dataclasses.replace(d, arch=dataclasses.replace(d.arch, gated_mlp=a0.gated_mlp, parallel_block=a0.parallel_block)) for d in ds]
    batched = ev_batched(_stack(ds), HW)
    for i, d in enumerate(ds):
        single = ev(as_arrays(d), HW)
        for k in single:
            np.testing.assert_allclose(np.asarray(batched[k][i], dtype=float), np.asarray(single[k], dtype=float), rtol=1e-12, err_msg=k)


def test_one_compilation_serves_a_sweep():
    traces = []

    def counted(design, hw):
        traces.append(1)
        return evaluate(design, hw)

    f = jax.jit(counted)
    arch = make_arch(n_layers=32, d_model=4096, n_heads=32, d_ff=11008, vocab=32000)
    for kv in (32, 8, 1):
        for bits in (16, 8, 4):
            for batch in (1, 64):
                d = as_arrays(Design(dataclasses.replace(arch, n_kv_heads=float(kv)), Quant(bits, 16, bits), Workload(batch=batch)))
                f(d, HW)
    assert len(traces) == 1
    # a different structure is a new compile, as it must be
    f(as_arrays(Design(dataclasses.replace(arch, gated_mlp=False))), HW)
    assert len(traces) == 2
