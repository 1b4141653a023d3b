"""One description of a design space, read by the grid sweep, the optimizer and the rounding.

A space maps knobs (config keys such as ``model.n_kv_heads``, ``quant.w_bits``,
``workload.batch``, ``hardware.mem_bw``, ``hardware.peak_flops.fp16``) to either a list of
values or a range ``{low, high, num, log, integer, multiple_of}``. A knob's legal values are
its grid values; the optimizer relaxes a knob to the interval [min, max] (in log space when
``log``) and rounds back to the nearest legal values.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from dse.core.design import ARCH_META, ARCH_STATIC, Design, DesignError, specialize
from dse.core.hardware import ENGINE_FIELDS, SYSTEM_FIELDS, Hardware

SECTIONS = {"model": "arch", "quant": "quant", "workload": "workload"}
HARDWARE_KNOBS = {"mem_bw", "mem_capacity", "link_bw", "link_latency", "flops_efficiency", "mem_efficiency",
                  "kernel_overhead_s", "gemm_half_tokens", "attn_efficiency", *ENGINE_FIELDS, *SYSTEM_FIELDS}


@dataclass(frozen=True)
class Knob:
    key: str  # config key, e.g. "quant.w_bits"
    values: np.ndarray  # legal values, sorted
    log: bool = False

    @property
    def low(self) -> float:
        return float(self.values[0])

    @property
    def high(self) -> float:
        return float(self.values[-1])


def _knob_target(key: str) -> tuple[str, str]:
    """(pytree, field) of a config key; raises DesignError for keys that cannot be swept numerically."""
    parts = key.split(".")
    if parts[0] in SECTIONS and len(parts) == 2:
        from dse.core.design import Arch, Quant, Workload
        cls = {"model": Arch, "quant": Quant, "workload": Workload}[parts[0]]
        numeric = {f.name for f in dataclasses.fields(cls)} - set(ARCH_STATIC) - set(ARCH_META)
        if parts[1] in numeric:
            return SECTIONS[parts[0]], parts[1]
    if parts[0] == "hardware":
        if len(parts) == 2 and parts[1] in HARDWARE_KNOBS:
            return "hardware", parts[1]
        if len(parts) == 3 and parts[1] == "peak_flops" and parts[2] in ("fp32", "fp16", "bf16", "fp8", "int8", "int4"):
            return "hardware", "peak_" + ("fp16" if parts[2] == "bf16" else parts[2])
    raise DesignError(f"space.{key}: not a numeric knob; sweep numeric model/quant/workload/hardware fields, "
                      "and use a Hydra multirun (-m model=a,b hardware=c,d) for names and structure")


def parse_knob(key: str, spec: Any) -> Knob:
    _knob_target(key)
    if isinstance(spec, Mapping) and "values" in spec:
        spec = list(spec["values"])
    if isinstance(spec, (list, tuple)):
        values = np.asarray(spec, dtype=float)
        log = bool(len(values) > 2 and (values > 0).all() and values.max() / values.min() >= 16)
    elif isinstance(spec, Mapping):
        extra = set(spec) - {"low", "high", "num", "log", "integer", "multiple_of"}
        if extra or "low" not in spec or "high" not in spec:
            raise DesignError(f"space.{key}={dict(spec)}: a range needs low and high (and optional num, log, "
                              f"integer, multiple_of); unknown: {sorted(extra)}")
        lo, hi, log = float(spec["low"]), float(spec["high"]), bool(spec.get("log", False))
        if not (hi >= lo) or (log and lo <= 0):
            raise DesignError(f"space.{key}: low={lo}, high={hi}: need low <= high (and low > 0 for log)")
        step = spec.get("multiple_of")
        num = spec.get("num")
        if num is None and (spec.get("integer") or step):
            step = step or 1
            values = np.arange(np.ceil(lo / step) * step, hi + 1e-9, step)
        else:
            num = int(num or 10)
            values = np.geomspace(lo, hi, num) if log else np.linspace(lo, hi, num)
            if step:
                values = np.round(values / step) * step
            elif spec.get("integer"):
                values = np.round(values)
        log = log
    else:
        raise DesignError(f"space.{key}={spec!r}: give a list of values or a range {{low, high, num, log}}")
    values = np.unique(values)
    if values.size == 0 or not np.isfinite(values).all():
        raise DesignError(f"space.{key}: no finite values")
    return Knob(key, values, log)


def parse_space(space: Mapping[str, Any]) -> list[Knob]:
    return [parse_knob(str(k), v) for k, v in space.items()]


def set_knob(design: Design, hw: Hardware, key: str, value):
    """Design and Hardware with one knob replaced (traceable: ``value`` may be a tracer)."""
    tree, name = _knob_target(key)
    if tree == "hardware":
        return design, dataclasses.replace(hw, **{name: value})
    part = getattr(design, tree)
    return dataclasses.replace(design, **{tree: dataclasses.replace(part, **{name: value})}), hw


def specialize_design(design: Design, knobs) -> Design:
    """``design`` tracing only the cost-model parts (``Arch.features``) that its own values and every
    value of ``knobs`` (or the interval between them, which the optimizer's relaxation visits) need:
    a dense space does not pay for experts, latent or local attention (one compile per structure)."""
    values = {k.key.split(".", 1)[1]: k.values for k in knobs if k.key.startswith("model.")}
    return dataclasses.replace(design, arch=specialize(design.arch, **values))


def get_knob(design: Design, hw: Hardware, key: str):
    """The current value of one knob."""
    tree, name = _knob_target(key)
    return getattr(hw if tree == "hardware" else getattr(design, tree), name)


def validate_knobs(knobs: list[Knob], design: Design, hw: Hardware) -> None:
    """Each knob's values must be legal one at a time on the base design (clear error before compute).

    Combinations (say n_kv_heads that does not divide a swept n_heads) are masked point by point.
    """
    from dse.core.design import validate_design
    from dse.core.hardware import validate_hardware
    coupled = {"model.n_kv_heads", "workload.tp", "model.n_heads", "model.d_ff", "model.d_model", "workload.ep",
               "workload.attn_dp", "model.n_experts"}
    n_coupled = len(coupled.intersection(k.key for k in knobs))
    for k in knobs:
        tree, _ = _knob_target(k.key)
        # all of a knob's values at once (the rules are array code, naming the first bad value): a
        # 100,000-value knob took ~20 s one value at a time (issue 16), 0.05 s now
        v = np.asarray(k.values, dtype=float)
        d, h = set_knob(design, hw, k.key, v)
        if tree == "hardware":
            validate_hardware(h)
        elif k.key not in coupled or n_coupled <= 1:
            validate_design(d, prefix="space: ")
        else:
            bad = (v < 1) | (v != np.round(v))
            if bad.any():
                raise DesignError(f"space: {k.key}={v[bad][0]:g}: must be a positive integer")

