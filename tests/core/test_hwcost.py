"""Hardware cost model against its published anchors (dse/core/hwcost.py states the sources and tolerances)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dse.core.hardware import Hardware
from dse.core.hwcost import AREA_ANCHORS, TDP_ANCHORS, HwCostParams, die_yield, dies_per_wafer, hardware_cost


def device(tflops, tbps, gb, link_gbps):
    return Hardware(mem_bw=tbps * 1e12, mem_capacity=gb * 1e9, peak_fp32=0.0, peak_fp16=tflops * 1e12,
                    peak_fp8=2 * tflops * 1e12, link_bw=link_gbps * 1e9)


@pytest.mark.parametrize("name,area,tflops,tbps,gb,link", AREA_ANCHORS)
def test_die_area_within_15_percent(name, area, tflops, tbps, gb, link):
    got = float(hardware_cost(device(tflops, tbps, gb, link))["hw.die_area_mm2"])
    assert abs(got / area - 1) <= 0.15, (name, got, area)


@pytest.mark.parametrize("name,tdp,tflops,tbps,gb,link", TDP_ANCHORS)
def test_tdp_within_25_percent(name, tdp, tflops, tbps, gb, link):
    got = float(hardware_cost(device(tflops, tbps, gb, link))["hw.power_w"])
    assert abs(got / tdp - 1) <= 0.25, (name, got, tdp)


def test_silicon_cost_by_hand():
    # GH100-sized die (814 mm²) on a 300 mm wafer: 70,686 / 814 − π·300/√1628 = 63.5 gross dies;
    # yield (1 + 814·0.002/3)^−3 = 0.272; $16,988 / (63.5 · 0.272) = $983 per good die.
    p = HwCostParams()
    assert float(dies_per_wafer(814.0, p)) == pytest.approx(math.pi * 150 ** 2 / 814 - math.pi * 300 / math.sqrt(1628), rel=1e-9)
    assert float(dies_per_wafer(814.0, p)) == pytest.approx(63.48, abs=0.01)
    assert float(die_yield(814.0, p)) == pytest.approx((1 + 814 * 0.002 / 3) ** -3, rel=1e-12)
    c = hardware_cost(device(989, 3.35, 80, 450))
    assert float(c["hw.silicon_usd"]) == pytest.approx(16988 / (63.48 * 0.2722), rel=0.01)
    assert float(c["hw.memory_usd"]) == pytest.approx(80 * 7.0)  # LLMCompass: $7 per GB of HBM


def test_reticle_split_and_monotone():
    # a design larger than the reticle is split into equal dies: cost grows smoothly, never falls
    costs = [float(hardware_cost(device(f, 4, 96, 450))["hw.cost_usd"]) for f in np.linspace(200, 4000, 40)]
    assert np.all(np.diff(costs) > 0)
    big = hardware_cost(device(3000, 8, 192, 900))
    assert float(big["hw.n_dies"]) > 2 and float(big["hw.die_area_mm2"]) / float(big["hw.n_dies"]) == pytest.approx(858.0)


def test_capacity_needs_stacks():
    # more capacity than the bandwidth's stacks hold needs more stacks (area), and costs per GB
    lo, hi = hardware_cost(device(989, 3.35, 80, 450)), hardware_cost(device(989, 3.35, 240, 450))
    assert float(hi["hw.hbm_stacks"]) == pytest.approx(10.0) and float(lo["hw.hbm_stacks"]) == pytest.approx(3.35e12 / 819.2e9)
    assert float(hi["hw.die_area_mm2"]) > float(lo["hw.die_area_mm2"])


def test_differentiable_in_every_resource():
    def price(x):
        return hardware_cost(Hardware(mem_bw=x[0], mem_capacity=x[1], peak_fp32=0.0, peak_fp16=x[2], link_bw=x[3]))
    x = jnp.asarray([3.35e12, 80e9, 989e12, 450e9])
    for key in ("hw.price_usd", "hw.power_w", "hw.die_area_mm2", "hw.usd_per_s"):
        g = jax.jit(jax.grad(lambda v: price(v)[key]))(x)
        assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g)[[0, 2, 3]] > 0), (key, g)
