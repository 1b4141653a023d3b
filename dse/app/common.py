"""What every task shares: config → pytrees, the input columns of a result row, run metadata."""
from __future__ import annotations

import dataclasses
import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
from omegaconf import DictConfig, OmegaConf

import dse
from dse.app.build import build_accuracy, build_conventions, build_design, build_hardware
from dse.core.accuracy import AccuracyParams
from dse.core.conventions import Conventions
from dse.core.design import ARCH_META, ARCH_STATIC, Design
from dse.core.hardware import ENGINE_FIELDS, SYSTEM_FIELDS, Hardware
from dse.core.metrics import evaluate, phase_tables

#: module-level jits: every job of a process (a basic-launcher multirun) reuses their compilations
evaluate_jit = jax.jit(evaluate, static_argnames=("conv", "smooth"))
phase_tables_jit = jax.jit(phase_tables, static_argnames=("conv", "smooth"))


@dataclass
class Setup:
    design: Design
    hw: Hardware
    conv: Conventions
    acc: AccuracyParams
    cfg: DictConfig

    def inputs(self) -> dict[str, Any]:
        """Every input under its config key (model.*, quant.*, workload.*, hardware.*, ...)."""
        c = OmegaConf.to_container(self.cfg, resolve=True)
        out: dict[str, Any] = {}
        a = self.design.arch
        hf = c["model"].get("hf_config")
        out["model.name"] = f"hf:{Path(hf).name}" if hf else c["model"].get("name")
        out["model.hf_config"] = hf
        for f in dataclasses.fields(a):  # every Arch field as built (a Hugging Face config fills them all)
            if f.name in ARCH_META:
                continue
            v = getattr(a, f.name)
            out[f"model.{f.name}"] = v if f.name in ARCH_STATIC else as_number(v)
        for section in ("quant", "workload"):
            for k, v in c[section].items():
                out[f"{section}.{k}"] = as_number(v)
        hw = c["hardware"]
        out["hardware.name"] = hw["name"]
        out["hardware.year"] = hw.get("year")
        for k in ("mem_bw", "mem_capacity", "link_bw", "link_latency", "flops_efficiency", "mem_efficiency",
                  "kernel_overhead_s", "gemm_half_tokens", "attn_efficiency", *ENGINE_FIELDS, *SYSTEM_FIELDS):
            out[f"hardware.{k}"] = float(hw[k])
        for k, v in hw["peak_flops"].items():
            out[f"hardware.peak_flops.{k}"] = float(v)
        out["hardware.ideal"] = bool(hw.get("ideal", False))
        out["conventions.name"] = c["conventions"]["name"]
        out["accuracy.fit"] = c["accuracy"]["fit"]
        return out


def as_number(v):
    """A count as the user wrote it: 16 rather than 16.0 (issue 16: integers printed as integers)."""
    x = float(v)
    return int(x) if x.is_integer() and abs(x) < 2 ** 53 else x


def setup(cfg: DictConfig) -> Setup:
    """Validate and build all pytrees from a composed config (raises DesignError on bad input)."""
    explicit = frozenset(o.split("=", 1)[0].lstrip("+~").removeprefix("model.") for o in hydra_overrides()
                         if o.lstrip("+~").startswith("model."))
    return Setup(build_design(cfg, explicit), build_hardware(cfg.hardware), build_conventions(cfg.conventions),
                 build_accuracy(cfg.accuracy), cfg)


@functools.lru_cache(maxsize=1)
def _git_revision() -> str:
    root = Path(dse.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def meta(overrides: list[str] | None = None) -> dict[str, str]:
    dev = jax.devices()[0]
    return {"meta.dse_version": dse.__version__, "meta.jax_version": jax.__version__,
            "meta.device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}", "meta.git_revision": _git_revision(),
            "meta.overrides": " ".join(overrides or [])}


def hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig
        return list(HydraConfig.get().overrides.task)
    except Exception:  # not under Hydra (Python API, tests)
        return []


def output_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig
        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return Path.cwd()


def fmt_si(x: float, unit: str = "") -> str:
    """1.23e9 → '1.23 G' (engineering prefixes), for printed summaries."""
    for scale, p in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {p}{unit}"
    return f"{x:.3g} {unit}"
