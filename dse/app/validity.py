"""The physical-validity pass (issue 16): inputs that are legal one by one but describe no real run.

Before computing: a collective with no link to run on is an error (tensor parallelism on a device
whose catalog link bandwidth is 0 used to print "TTFT 2.35e+24 Ps"); a context longer than the
model's maximum is a warning with the numbers (the cost model extrapolates, the model would not
run as trained). After computing: any non-finite metric is an error naming it (never a printed
NaN or inf). Warnings go to stderr as ``dse: warning: ...`` and into ``meta.warnings``.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from dse.core.design import DesignError

#: parallel degrees whose devices exchange data (collectives or stage sends), and what they do
PARALLEL = {"tp": "tensor parallelism (an all-reduce per layer)", "ep": "expert parallelism (an all-to-all)",
            "pp": "pipeline parallelism (activations sent between stages)",
            "attn_dp": "data-parallel attention (an all-gather)"}


def _value(tree, name, default=1.0):
    v = getattr(tree, name, default)
    return np.asarray(v, dtype=float)


def check_links(design, hw, label: str = "", values: dict | None = None) -> None:
    """Every parallel degree > 1 needs a link: ``hardware.link_bw`` inside a node of ``node_size``
    devices, also ``hardware.net_bw`` beyond. ``values``: {degree: largest value} (a sweep's knobs)."""
    w = design.workload
    link, net = float(np.max(hw.link_bw)), float(np.max(getattr(hw, "net_bw", 0.0)))
    node = float(np.max(getattr(hw, "node_size", np.inf)))
    for name, what in PARALLEL.items():
        if not hasattr(w, name):
            continue
        g = max(float(np.max(_value(w, name))), float((values or {}).get(f"workload.{name}", 0.0)))
        if g <= 1:
            continue
        if link <= 0 and not (g > node and net > 0):
            raise DesignError(f"workload.{name}={g:g}: {what} needs a link between devices, but "
                              f"hardware.link_bw=0{label} (no interconnect figure); set hardware.link_bw "
                              f"(bytes/s per device, one direction) or use workload.{name}=1")
        if g > node and net <= 0:
            raise DesignError(f"workload.{name}={g:g}: more devices than a node of hardware.node_size={node:g}, "
                              f"but hardware.net_bw=0{label} (no network between nodes); set hardware.net_bw "
                              f"or keep workload.{name} <= {node:g}")


def context_warning(design, name: str = "the model", prompt_max=None) -> str | None:
    """A warning when prompt + generated tokens exceed ``model.max_context`` (when the catalog gives it)."""
    a, w = design.arch, design.workload
    max_ctx = float(np.max(getattr(a, "max_context", 0.0)))
    if max_ctx <= 0:  # a learned position table has no entries past its size
        max_ctx = float(np.max(getattr(a, "n_positions", 0.0)))
    if max_ctx <= 0:
        return None
    prompt = float(np.max(w.prompt_len)) if prompt_max is None else float(prompt_max)
    ctx = prompt + float(np.max(w.gen_len))
    if ctx <= max_ctx:
        return None
    return (f"context {ctx:,.0f} tokens (workload.prompt_len {prompt:,.0f} + workload.gen_len "
            f"{float(np.max(w.gen_len)):,.0f}) exceeds {name}'s maximum context of {max_ctx:,.0f} tokens "
            f"(model.max_context): the figures extrapolate past what the model was trained for")


def check_physical(s, knob_max: dict | None = None) -> list[str]:
    """Errors (DesignError) and warnings (returned, and printed) of a Setup before computing.

    ``knob_max``: {knob key: largest swept value} for a sweep, so its extremes are checked too."""
    label = f" for {s.cfg.hardware.name}" if s.cfg.get("hardware") is not None else ""
    check_links(s.design, s.hw, label, knob_max)
    if not s.design.arch.causal and float(np.min(s.design.workload.prompt_len)) <= 0:
        raise DesignError("workload.prompt_len=0: an encoder has nothing to compute without input tokens")
    warnings = []
    name = str(s.cfg.model.get("name", "the model")) if s.cfg.get("model") is not None else "the model"
    msg = context_warning(s.design, name, (knob_max or {}).get("workload.prompt_len"))
    if msg:
        warnings.append(msg)
    for msg in warnings:
        print(f"dse: warning: {msg}", file=sys.stderr)
    return warnings


def check_finite_metrics(metrics: dict, what: str = "this design") -> None:
    """Every numeric metric finite, else one error naming the first bad one and its value."""
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise DesignError(f"{k}={v}: the cost model gave a non-finite value for {what}; check the inputs "
                              "it depends on (a zero bandwidth, peak or efficiency, or an empty model part)")
