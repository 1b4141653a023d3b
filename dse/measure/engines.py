"""Engine profiles (``conf/engine/<name>.yaml``): the software terms of a serving engine, fitted by
``task=calibrate`` to the published measurements of that engine (per-kernel launch and per-step
overheads, the memory it reserves), and the writer that puts every calibrated value into the
catalog with its source (the hardware terms per device family, transferred to every device of the
same vendor and generation).
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

from omegaconf import OmegaConf

from dse.core.design import DesignError

#: the software terms an engine file may set (Hardware fields)
ENGINE_KEYS = ("kernel_overhead_s", "link_latency", "step_overhead_s", "mem_reserve_bytes", "act_buffer_factor",
               "dequant_ops_per_weight")

#: how each engine launches its kernels (collectives included), from its own documentation and code
#: (not fitted): "host" — a C++ runtime enqueues every kernel from the CPU (FasterTransformer;
#: TensorRT-LLM <= 0.9, whose published benchmarks run gptSessionBenchmark without CUDA graphs);
#: "eager" — PyTorch eager mode, each operator dispatched from Python (Megatron-LM);
#: "graph" — the decode step is captured once and replayed as a CUDA graph (gpt-fast:
#: ``torch.compile(mode="reduce-overhead", fullgraph=True)`` of ``decode_one_token``). The fixed
#: cost of a kernel and of a collective is mostly this launch path (driver and runtime calls, Python
#: dispatch, or none on replay), so those two terms are shared by the engines of one path and an
#: engine without measurements takes its path's values.
LAUNCH = {"FasterTransformer": "host", "TensorRT-LLM": "host", "Megatron-LM": "eager", "gpt-fast": "graph"}


def load_engine(conf_dir: Path, name: str) -> dict:
    """{Hardware field: value} of an engine profile (``conf_dir``: the catalog's conf/ folder)."""
    path = Path(conf_dir) / "engine" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise DesignError(f"engine={name!r}: unknown engine; available: {known}")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    return {k: float(v) for k, v in raw.items() if k in ENGINE_KEYS}


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def write_engine(conf_dir: Path, name: str, label: str, values: dict, note: str) -> Path:
    path = Path(conf_dir) / "engine" / f"{name}.yaml"
    lines = ["# @package hardware",
             f"# {label}: software terms calibrated by `python -m dse task=calibrate` ({note}).",
             f"# `+engine={name}` puts them on the selected hardware (whose catalog values are TensorRT-LLM's)."]
    units = {"kernel_overhead_s": "s per kernel launch", "link_latency": "s fixed per collective (launch, sync)",
             "step_overhead_s": "s per forward step",
             "mem_reserve_bytes": "bytes held besides weights, KV cache, activations",
             "act_buffer_factor": "activation buffers, multiples of the peak activation",
             "dequant_ops_per_weight": "vector ops per weight to unpack weight-only quantized weights"}
    lines += [f"{k}: {_fmt(values[k])}  # {units[k]}" for k in ENGINE_KEYS if k in values]
    _atomic_write(path, "\n".join(lines) + "\n")
    return path


def update_hardware_yaml(path: Path, values: dict, comment: list[str]) -> None:
    """Set ``values`` in a catalog YAML in place (other keys and comments untouched), replacing the
    earlier calibration comment block with ``comment``."""
    text = path.read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("# Calibration:")]
    out, seen = [], set()
    # drop the previous "Efficiency and overheads" comment block (superseded by this calibration)
    skip = False
    for ln in lines:
        if ln.startswith("# Efficiency and overheads"):
            skip = True
            continue
        if skip and ln.startswith("#"):
            continue
        skip = False
        m = re.match(r"^([a-z_0-9]+):", ln)
        if m and m.group(1) in values:
            out.append(f"{m.group(1)}: {_fmt(values[m.group(1)])}")
            seen.add(m.group(1))
        else:
            out.append(ln)
    out += ["# Calibration: " + c for c in comment]
    out += [f"{k}: {_fmt(v)}" for k, v in values.items() if k not in seen]
    _atomic_write(path, "\n".join(out) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def stamp() -> str:
    return str(datetime.date.today())
