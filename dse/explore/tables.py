"""Per-operator tables as DataFrames (the ``ops.csv`` rows) and metrics as flat rows."""
from __future__ import annotations

import jax
import numpy as np
import pandas as pd

from dse.core.conventions import DEFAULT, Conventions
from dse.core.design import Design
from dse.core.hardware import Hardware
from dse.core.metrics import phase_tables

OPS_COLUMNS = ["phase", "op", "count", "flops", "bytes", "weight_bytes", "act_read", "act_write",
               "kv_read", "kv_write", "comm_bytes", "compute_s", "memory_s", "comm_s", "time_s", "bound",
               "time_compute_s", "time_memory_s", "time_collective_s", "time_overhead_s"]


def ops_frame(design: Design, hw: Hardware, conv: Conventions = DEFAULT, *, tables=None) -> pd.DataFrame:
    """One row per operator and phase, per occurrence on one device (``count`` occurrences per step).

    ``tables``: the output of ``phase_tables`` if already computed (for example under jit).
    """
    rows = []
    tables = jax.device_get(tables or phase_tables(design, hw, conv))  # one transfer, then numpy
    for phase, (ops, times) in tables.items():
        phase_name = phase if (phase != "prefill" or design.arch.causal) else "encode"
        for name, op in ops.items():
            if float(op.count) == 0:  # an operator this model does not have (dense: no experts; GQA: no latent)
                continue
            t = times[name]
            compute, memory, comm = float(t.compute_s), float(t.memory_s), float(t.comm_s)
            if comm > 0:
                bound = "comm"
            elif compute == 0 and memory == 0:
                bound = "none"
            else:
                bound = "compute" if compute > memory else "memory"
            rows.append({"phase": phase_name, "op": name, "count": float(op.count), "flops": float(op.flops),
                         "bytes": float(op.bytes), "weight_bytes": float(op.weight_bytes),
                         "act_read": float(op.act_read), "act_write": float(op.act_write),
                         "kv_read": float(op.kv_read), "kv_write": float(op.kv_write),
                         "comm_bytes": float(op.comm_bytes), "compute_s": compute, "memory_s": memory,
                         "comm_s": comm, "time_s": float(t.time_s), "bound": bound,
                         # time_s split (roofline.OpTime): compute or memory (the bound), collective, launch
                         "time_compute_s": float(t.busy_compute_s),
                         "time_memory_s": float(t.time_s) - float(t.busy_compute_s) - comm - float(t.overhead_s),
                         "time_collective_s": comm, "time_overhead_s": float(t.overhead_s)})
    return pd.DataFrame(rows, columns=OPS_COLUMNS)


def flat_metrics(metrics: dict) -> dict:
    """Metrics as plain Python numbers (bools stay bools), for JSON and DataFrames."""
    out = {}
    for k, v in metrics.items():
        a = np.asarray(v)
        out[k] = bool(a) if a.dtype == bool else float(a)
    return out
