"""Validation on the machine at hand: microbenchmarks against numpy, prediction against the reference."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dse.measure.reference import RefConfig, decode, init_params, prefill
from dse.measure.roofline import matmul_flops, matvec_bandwidth, numpy_check


def test_measured_roofline_agrees_with_numpy():
    # A second method on the same machine: numpy's BLAS. FLOP/s within 40%, matrix-vector
    # bandwidth within 40% (two different BLAS kernels on a shared, noisy 2-core VM).
    # Alternate the two methods and keep each one's best, so a burst of load hits both alike.
    jax_flops = jax_bw = np_flops = np_bw = 0.0
    for _ in range(3):
        jax_flops = max(jax_flops, matmul_flops(shapes=((2048, 2048, 2048),), repeats=3)[0]["flops_per_s"])
        jax_bw = max(jax_bw, matvec_bandwidth(8192, 8192, repeats=5)["bytes_per_s"])
        ref = numpy_check()
        np_flops, np_bw = max(np_flops, ref["numpy_flops_per_s"]), max(np_bw, ref["numpy_matvec_bytes_per_s"])
    assert abs(jax_flops / np_flops - 1) < 0.40, (jax_flops, np_flops)
    assert abs(jax_bw / np_bw - 1) < 0.40, (jax_bw, np_bw)


def test_reference_decode_matches_prefill():
    # The reference decoder is a real model: decoding the last token against the cache of the
    # others gives the same logits as a prefill of the whole sequence.
    import jax.numpy as jnp
    cfg = RefConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab=50)
    p = init_params(cfg)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 50, (2, 9)))
    full, _ = prefill(cfg, p, tokens)
    _, cache = prefill(cfg, p, tokens[:, :-1])
    step = decode(cfg, p, cache, tokens[:, -1])
    np.testing.assert_allclose(np.asarray(step), np.asarray(full), rtol=2e-4, atol=2e-4)


def test_reference_computes_in_float32():
    # The cost model is told the weights, activations and cache are 32-bit; dse enables x64, so
    # one float64 constant would silently promote a whole layer (2x the bytes, slower math).
    import jax
    import jax.numpy as jnp
    cfg = RefConfig(n_layers=1, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab=50)
    p = init_params(cfg)
    assert {str(x.dtype) for x in jax.tree.leaves(p)} == {"float32"}
    tokens = jnp.zeros((1, 4), jnp.int32)
    _, cache = prefill(cfg, p, tokens)
    for fn, args in ((lambda p, t: prefill(cfg, p, t)[0], (p, tokens)),
                     (lambda p, c, t: decode(cfg, p, c, t), (p, cache, tokens[:, 0]))):
        hlo = jax.jit(fn).lower(*args).compile().as_text()
        assert "f64[" not in hlo


def test_gemm_fit_recovers_known_parameters():
    # Synthetic chain timings from known (bandwidth, efficiency, half-rows) through the formula
    # the cost model uses; the grid fit must find them again (to its grid spacing).
    from dse.measure.validate import fit_gemm
    peak, ovh, bw, eff, half, B, n = 2e11, 6e-6, 3e10, 0.8, 20.0, 2.7e8, 30
    chain = []
    for m in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        F = 2 * m * B / 4
        t = max(F / (peak * eff * (m / (m + half) if m > 1 else 1.0)), B / bw) + n * ovh
        chain.append({"rows": m, "flops": F, "bytes": B, "matmuls": n, "seconds": t})
    hw = {"name": "x", "mem_bw": 1.0, "mem_capacity": 1e10, "peak_flops": {"fp32": peak}, "kernel_overhead_s": ovh}
    got_bw, got_eff, got_half = fit_gemm(chain, hw)
    assert got_bw == pytest.approx(bw, rel=0.04)
    assert got_eff == pytest.approx(eff, abs=0.011)
    assert got_half == pytest.approx(half, rel=0.05)


def test_small_validation_does_not_rot(make_cfg, tmp_path, monkeypatch):
    # The quick validation (4 cases). A looser bound than the full run's 15%: CI machines are
    # noisy (this VM's bandwidth varies between runs; see README, Validation). Three quick runs in a
    # row on the 2-core VM gave medians of 24.7%, 13.7% and 11.2%, and one CI run 30.9%, so a
    # second run is allowed when the first misses; a cost model that rots misses both.
    from dse.app.main import run
    misses = []
    for attempt in range(2):
        out = tmp_path / f"run{attempt}"
        out.mkdir()
        monkeypatch.chdir(out)
        run(make_cfg("task=validate", "task.params.quick=true", "task.params.install_hardware=false"))
        df = pd.read_csv(out / "validation.csv")
        assert {"case", "phase", "predicted_s", "measured_s"} <= set(df.columns) and len(df) == 4
        assert (out / "measured_hardware.yaml").exists() and (out / "validation.png").exists()
        assert (out / "roofline.png").exists()
        median, worst, worst_before = df.error.abs().median(), df.error.abs().max(), df.error_before.abs().max()
        if median < 0.3 and worst < worst_before:  # the shape terms must help the worst case
            return
        misses.append((median, worst, worst_before))
    pytest.fail(f"quick validation missed twice (median |error|, worst, worst of the plain roofline): {misses}")


def test_h200_record_replays():
    # The recorded GPU run (dse/data/device_validation/h200, measured on an H200 through JAX): the current cost model
    # on the hardware fitted to that run's microbenchmarks must predict its measured float32 decoder
    # steps and prefills as it did (median 12.6%); the bound leaves room for small model changes.
    from dse.measure.validate import predict
    root = Path(__file__).resolve().parents[2] / "dse" / "data" / "device_validation" / "h200" / "float32"
    hw = yaml.safe_load((root / "measured_hardware.yaml").read_text())
    hw.pop("year")
    cases = pd.read_csv(root / "validation.csv")
    cfg = RefConfig(dtype="float32")
    pred = np.array([predict(cfg, hw, r.phase, r.batch, r.length, r.n_kv_heads, r.gated_mlp)
                     for r in cases.itertuples()])
    err = np.abs(pred / cases.measured_s.to_numpy() - 1)
    assert len(cases) == 14 and np.median(err) < 0.15


def test_unknown_dtype_is_refused_before_measuring(make_cfg, tmp_path, monkeypatch):
    from dse.app.main import run
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="task.params.dtype: 'int8' is not one of"):
        run(make_cfg("task=validate", "task.params.dtype=int8", "task.params.install_hardware=false"))
    assert not (tmp_path / "validation.csv").exists()
