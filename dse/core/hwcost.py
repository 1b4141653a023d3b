"""Hardware cost model: die area, power and price of an accelerator as functions of its resources.

Differentiable in every resource a co-design may change (``hardware.peak_flops.*``,
``hardware.mem_bw``, ``hardware.mem_capacity``, ``hardware.link_bw``), so ``hardware.*`` knobs
can be optimized under an area, power or price budget, and a cost per token can include what
the hardware costs. One process class (TSMC N5/N4, the Hopper/Blackwell/CDNA3 generation).

**Area** (LLMCompass's component model, Zhang et al., ISCA 2024, ``cost_model/cost_model.py`` of
github.com/PrincetonUniversity/LLMCompass): a fixed part, the tensor units, one HBM PHY and
controller per stack, one PHY and controller per link::

    area = other + mm2_per_tflops·F16 + stacks·(hbm_phy + hbm_ctrl/density) + links·(link_phy + link_ctrl/density)

with ``F16 = max(peak_fp16, peak_fp8/2, peak_int8/2, peak_int4/4)`` (an 8-bit unit does twice the
operations of a 16-bit one in the same tensor core: H100, B200, MI300X), ``stacks = max(mem_bw /
stack_bw, mem_capacity / stack_capacity)`` (enough stacks for the bandwidth and the capacity) and
``links = link_bw / link_unit_bw``. The PHY areas (HBM2e 10.45 mm², NVLink4 0.965 mm²; PHYs do not
shrink) and controller transistor counts (552.7 M per HBM stack, 86.6 M per NVLink4 link) are
LLMCompass's; logic density 138.2 MTr/mm² at 5 nm is from Khan & Mann, "AI Chips" (CSET 2020), as
LLMCompass uses it; ``other`` = 70 mm² is LLMCompass's linear-model default ("area except SRAM,
compute units, HBM PHY & controller, and I/Os"). ``mm2_per_tflops`` is the one calibrated
constant: the GH100 die (814 mm², TSMC 4N; NVIDIA Hopper whitepaper) at the H100 SXM's resources.

**Price** (manufacturing cost, LLMCompass's supply-chain model, from Moonwalk and Khan & Mann):
the logic area is split into ``ceil``-free ``max(1, area / max_die)`` equal dies (a die cannot
exceed the reticle, 26 × 33 mm = 858 mm²); each die costs ``wafer / (dies_per_wafer · yield)``
with the 300 mm wafer's gross die count ``π r² / A − π d / √(2A)`` and the negative-binomial
yield ``(1 + A·D0/α)^−α`` (5 nm wafer $16,988, D0 = 0.002 /mm², α = 3); memory costs $7 per GB
of HBM (LLMCompass, DRAMeXchange average, Oct 2023). ``price = markup · (silicon + memory +
package)``: ``markup = 1`` (the default) prices a design at cost, as LLMCompass compares designs.

**Power** (thermal design power): ``tdp = static + j_per_flop·F16 + j_per_byte·mem_bw +
j_per_link_byte·link_bw``. HBM access energy 3.9 pJ/bit (O'Connor et al., "Fine-grained DRAM",
MICRO 2017, for HBM2); SerDes link energy 5.5 pJ/bit in each direction (NVLink-C2C vs SerDes
comparison, besthub.dev); ``static`` = 92.6 W and 0.338 pJ per 16-bit FLOP are a least-squares
fit (relative errors) to the TDPs of seven N5/N4-class HBM accelerators (``TDP_ANCHORS``).

Anchors and stated tolerances (tests/core/test_hwcost.py): die area within 15 % of GH100
(calibration), the H200 (the same GH100 die) and the B200 (two reticle-limited dies, 208 B
transistors: ≈ 1,600–1,716 mm²); TDP within 25 % of each of the seven anchors (a TDP is a product
decision: the same GH100 ships at 700 W and 350 W); the silicon cost reproduces the hand-computed
dies per wafer and yield of the formulas above. Out of scope: older nodes (A100 at 7 nm spends
2.6× the area per FLOP/s), chiplets with separate I/O dies (MI300X), graphics dies (Ada).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from dse.core.design import Array
from dse.core.hardware import Hardware

#: seconds in a year (365.25 days)
YEAR_S = 365.25 * 24 * 3600.0


@dataclass(frozen=True)
class HwCostParams:
    """Constants of the area, price and power model (SI units except mm² and USD; sources above)."""

    other_mm2: Array = 70.0  # LLMCompass linear area model: everything but cores, SRAM, PHYs/controllers
    mm2_per_tflops: Array = 0.6635  # tensor-unit area per dense 16-bit TFLOP/s, calibrated on GH100 (814 mm²)
    density_mtr_per_mm2: Array = 138.2  # logic density at 5 nm, million transistors per mm² (Khan & Mann 2020)
    hbm_phy_mm2: Array = 10.45  # one 1024-bit HBM PHY (LLMCompass; PHYs do not scale with the node)
    hbm_ctrl_mtr: Array = 552.743  # one HBM controller, million transistors (LLMCompass)
    stack_bw: Array = 819.2e9  # bytes/s per HBM3 stack (JEDEC JESD238: 6.4 Gb/s × 1024 pins)
    stack_capacity: Array = 24e9  # bytes per HBM3 stack (12-high of 16 Gb dies)
    link_phy_mm2: Array = 0.965  # one NVLink4 link's PHY (LLMCompass)
    link_ctrl_mtr: Array = 86.628  # one NVLink4 link's controller, million transistors (LLMCompass)
    link_unit_bw: Array = 25e9  # bytes/s per direction of one NVLink4 link (18 links = 450 GB/s)
    max_die_mm2: Array = 858.0  # reticle limit, 26 mm × 33 mm
    wafer_usd: Array = 16988.0  # 300 mm wafer at 5 nm (Khan & Mann 2020, via LLMCompass)
    wafer_mm: Array = 300.0
    defect_per_mm2: Array = 0.002  # D0 at 5 nm (LLMCompass supply-chain model)
    yield_cluster: Array = 3.0  # negative-binomial clustering α (LLMCompass)
    hbm_usd_per_gb: Array = 7.0  # HBM, USD per GB (10⁹ bytes) (LLMCompass, Oct 2023)
    package_usd: Array = 0.0  # substrate, interposer, assembly, board (not modelled: 0)
    markup: Array = 1.0  # price / manufacturing cost (1: at cost)
    static_w: Array = 92.6  # fitted to TDP_ANCHORS
    j_per_flop: Array = 0.338e-12  # per dense 16-bit FLOP, fitted to TDP_ANCHORS
    j_per_byte: Array = 31.2e-12  # HBM, 3.9 pJ/bit (O'Connor et al. 2017)
    j_per_link_byte: Array = 88e-12  # 5.5 pJ/bit each way, per byte/s of one direction
    lifetime_s: Array = 4 * YEAR_S  # amortization period of the purchase price
    usd_per_kwh: Array = 0.10  # electricity
    utilization: Array = 1.0  # share of the lifetime the device serves (its cost is paid either way)


HwCostParams = jax.tree_util.register_dataclass(
    HwCostParams, data_fields=[f for f in HwCostParams.__dataclass_fields__], meta_fields=[])

#: (device, TDP W, dense 16-bit TFLOP/s, HBM TB/s, HBM GB, link GB/s per direction): datasheets
#: (hardware.csv) and the TDPs the vendors publish: H100 SXM 700 W, H100 PCIe 350 W, H200 700 W,
#: B200 1000 W, MI300X 750 W, MI325X 1000 W, Gaudi 3 OAM 900 W.
TDP_ANCHORS = [("h100_sxm", 700, 989, 3.35, 80, 450), ("h100_pcie", 350, 756, 2.0, 80, 64),
               ("h200", 700, 989, 4.8, 141, 450), ("b200", 1000, 2250, 8.0, 180, 900),
               ("mi300x", 750, 1307.4, 5.3, 192, 448), ("mi325x", 1000, 1307.4, 6.0, 256, 448),
               ("gaudi3", 900, 1835, 3.7, 128, 600)]
#: (device, die area mm² (all logic dies), ... as above): GH100 814 mm² (H100 SXM and H200 share it);
#: B200: two reticle-limited dies (≤ 2 × 858 mm²; 1,600–1,716 mm² as reported), midpoint 1,658.
AREA_ANCHORS = [("h100_sxm", 814, 989, 3.35, 80, 450), ("h200", 814, 989, 4.8, 141, 450),
                ("b200", 1658, 2250, 8.0, 180, 900)]


def tensor_flops16(hw: Hardware):
    """Dense 16-bit-equivalent tensor FLOP/s: what the tensor units' area and energy scale with."""
    return jnp.maximum(jnp.maximum(hw.peak_fp16, hw.peak_fp8 / 2), jnp.maximum(hw.peak_int8 / 2, hw.peak_int4 / 4))


def hbm_stacks(hw: Hardware, p: HwCostParams = HwCostParams()):
    """Stacks needed for both the bandwidth and the capacity (continuous: a relaxation of the count)."""
    return jnp.maximum(hw.mem_bw / p.stack_bw, hw.mem_capacity / p.stack_capacity)


def die_area_mm2(hw: Hardware, p: HwCostParams = HwCostParams()):
    """Logic die area (mm², all dies together) of a device with these resources."""
    links = hw.link_bw / p.link_unit_bw
    return (p.other_mm2 + p.mm2_per_tflops * tensor_flops16(hw) / 1e12
            + hbm_stacks(hw, p) * (p.hbm_phy_mm2 + p.hbm_ctrl_mtr / p.density_mtr_per_mm2)
            + links * (p.link_phy_mm2 + p.link_ctrl_mtr / p.density_mtr_per_mm2))


def dies_per_wafer(area_mm2, p: HwCostParams = HwCostParams()):
    """Gross dies of ``area_mm2`` on a round wafer: π r²/A − π d/√(2A) (edge loss)."""
    d = p.wafer_mm
    return jnp.pi * (d / 2) ** 2 / area_mm2 - jnp.pi * d / jnp.sqrt(2 * area_mm2)


def die_yield(area_mm2, p: HwCostParams = HwCostParams()):
    """Negative-binomial yield (1 + A·D0/α)^−α."""
    return (1 + area_mm2 * p.defect_per_mm2 / p.yield_cluster) ** (-p.yield_cluster)


def hardware_cost(hw: Hardware, p: HwCostParams = HwCostParams()) -> dict:
    """Area, manufacturing cost, price and power of one device (``hw.*`` keys), traceable and differentiable."""
    area = die_area_mm2(hw, p)
    n_dies = jnp.maximum(1.0, area / p.max_die_mm2)
    a = area / n_dies
    silicon = n_dies * p.wafer_usd / (dies_per_wafer(a, p) * die_yield(a, p))
    memory = p.hbm_usd_per_gb * hw.mem_capacity / 1e9
    cost = silicon + memory + p.package_usd
    f16 = tensor_flops16(hw)
    power = p.static_w + p.j_per_flop * f16 + p.j_per_byte * hw.mem_bw + p.j_per_link_byte * hw.link_bw
    price = p.markup * cost
    # USD per device-second of service: the price amortized over the served lifetime plus energy at TDP
    usd_per_s = price / (p.lifetime_s * p.utilization) + power * p.usd_per_kwh / 3.6e6
    return {"hw.die_area_mm2": area, "hw.n_dies": n_dies, "hw.hbm_stacks": hbm_stacks(hw, p),
            "hw.silicon_usd": silicon, "hw.memory_usd": memory, "hw.cost_usd": cost, "hw.price_usd": price,
            "hw.power_w": power, "hw.usd_per_s": usd_per_s,
            "hw.flops_per_byte": f16 / hw.mem_bw}
