"""Structured-config schemas (the user-facing keys of DESIGN.md), registered in Hydra's ConfigStore.

``conf/config.yaml`` extends ``DseConfig`` (``defaults: [dse_schema, ...]``), so a typo in a key
or a string where a number belongs fails at composition with OmegaConf's message; the catalog
loader of the Python API merges each YAML onto its section's schema the same way.
Range rules (positive sizes, bits in [1, 32], divisibility) are checked in :mod:`dse.app.build`.
"""
from __future__ import annotations

import dataclasses
import pkgutil
import typing
from dataclasses import dataclass, field
from typing import Optional

from dse.core.accuracy import AccuracyParams
from dse.core.conventions import Conventions
from dse.core.design import ARCH_META, ARCH_REAL_FIELDS, ARCH_STATIC, Arch


def _model_schema():
    """``model.*`` keys generated from the Arch pytree (one source of truth for names and defaults).

    Static Arch fields keep their Python type; numeric leaves are integer counts except the ones in
    ``ARCH_REAL_FIELDS``; ``n_kv_heads``, ``d_head`` and ``d_ff`` may be left out (null) to take their
    usual defaults (see :func:`dse.core.design.make_arch`); ``hf_config`` reads a Hugging Face config.json.
    """
    hints = typing.get_type_hints(Arch)
    optional = {"n_kv_heads", "d_head", "d_ff"}
    fields_ = [("name", str, "custom")]
    for f in dataclasses.fields(Arch):
        if f.name in ARCH_META:  # not a model property
            continue
        if f.name in ARCH_STATIC:
            fields_.append((f.name, hints[f.name], f.default))
        elif f.name in optional:
            fields_.append((f.name, Optional[int], None))
        else:
            kind = float if f.name in ARCH_REAL_FIELDS else int
            default = f.default if f.default is not dataclasses.MISSING else MODEL_REQUIRED_DEFAULTS[f.name]
            fields_.append((f.name, kind, kind(default)))
    fields_.append(("hf_config", Optional[str], None))
    return dataclasses.make_dataclass("ModelConfig", fields_)


#: defaults of the Arch fields that have none there (a Llama-2-7B-sized decoder)
MODEL_REQUIRED_DEFAULTS = {"n_layers": 32, "d_model": 4096, "n_heads": 32, "vocab": 32000}
ModelConfig = _model_schema()


@dataclass
class PeakFlopsConfig:  # FLOP/s, dense; 0 = no such unit
    fp32: float = 0.0
    bf16: float = 0.0
    fp16: float = 0.0
    fp8: float = 0.0
    int8: float = 0.0
    int4: float = 0.0


def _hardware_schema():
    """``hardware.*`` keys generated from the Hardware pytree (one source of truth): every numeric
    field as a float (``node_size`` an int), the per-precision peaks grouped under ``peak_flops``
    (bf16 and fp16 share one unit), plus ``name``, ``year`` and ``ideal``."""
    from dse.core.hardware import Hardware

    required = {"mem_bw": 1e12, "mem_capacity": 80e9}  # the Hardware fields without a default
    fields_ = [("name", str, "custom"), ("year", Optional[int], None)]  # year: release year (trend plots)
    for f in dataclasses.fields(Hardware):
        if f.name.startswith("peak_"):
            if f.name == "peak_fp32":
                fields_.append(("peak_flops", PeakFlopsConfig, field(default_factory=PeakFlopsConfig)))
            continue
        kind = int if f.name == "node_size" else float
        default = required[f.name] if f.default is dataclasses.MISSING else f.default
        fields_.append((f.name, kind, kind(default)))
    fields_.append(("ideal", bool, False))  # true: efficiency 1 and no overhead (the ideal roofline)
    return dataclasses.make_dataclass("HardwareConfig", fields_)


HardwareConfig = _hardware_schema()


def _quant_schema():
    """``quant.*`` keys generated from the Quant pytree (bits per element, real numbers)."""
    from dse.core.design import Quant

    return dataclasses.make_dataclass("QuantConfig", [(f.name, float, float(f.default))
                                                      for f in dataclasses.fields(Quant)])


QuantConfig = _quant_schema()


def _workload_schema():
    """``workload.*`` keys generated from the Workload pytree: integer counts, except the fractions."""
    from dse.core.design import Workload

    real = {"mem_fraction", "prefix_hit", "spec_alpha"}
    return dataclasses.make_dataclass("WorkloadConfig", [
        (f.name, float if f.name in real else int, (float if f.name in real else int)(f.default))
        for f in dataclasses.fields(Workload)])


WorkloadConfig = _workload_schema()


def _conventions_schema():
    hints = typing.get_type_hints(Conventions)
    return dataclasses.make_dataclass(
        "ConventionsConfig", [(f.name, hints[f.name], f.default) for f in dataclasses.fields(Conventions)])


ConventionsConfig = _conventions_schema()


@dataclass
class AccuracyConfig:
    """Published points the proxies are fitted to (sources in conf/accuracy/*.yaml)."""
    fit: str = "hoffmann2022"
    E: float = AccuracyParams.E
    A: float = AccuracyParams.A
    B: float = AccuracyParams.B
    alpha: float = AccuracyParams.alpha
    beta: float = AccuracyParams.beta
    train_tokens: float = AccuracyParams.train_tokens
    w_method: str = "rtn"
    w_ppl: dict = field(default_factory=dict)  # {fp16: 5.47, rtn: {4: 5.73, 3: 6.66}, ...}
    a_ppl: dict = field(default_factory=dict)  # {16: ..., 8: ..., 4: ...} or empty
    kv_delta_ppl: float = 0.1
    kv_delta_bits: float = 3.0
    gqa_scores: dict = field(default_factory=dict)  # {mha: 47.2, gqa: 47.1, mqa: 46.6, n_heads: 64, gqa_groups: 8}
    # issue 11 architecture terms (sources in conf/accuracy/*.yaml; fits in dse/app/build.py _arch_accuracy)
    moe_points: list = field(default_factory=list)  # [{total, active, dense}, ...] iso-data MoE vs dense comparisons
    mla_scores: dict = field(default_factory=dict)  # {points: [{kv_mha, kv_mla, mha: [...], mla: [...]}, 2 of them]}
    window_ppl: dict = field(default_factory=dict)  # {context, local_fraction, ref_window, p, ppl: {window: ppl}}


@dataclass
class ObjectiveConfig:
    key: str = "decode_tokens_per_s"
    dir: str = "max"  # max or min


@dataclass
class SweepConfig:
    chunk_size: int = 262144
    shard: int = 0
    num_shards: int = 1
    dtype: str = "float32"
    keep_results: str = "auto"  # all, none, auto (all when the shard has <= max_rows points)
    max_rows: int = 2_000_000
    csv: str = "auto"  # write results.csv: always, never, auto (when <= csv_max_rows)
    csv_max_rows: int = 200_000
    pareto_fits_only: bool = True
    filter: Optional[str] = None  # pandas query kept per chunk, e.g. "abs(params / 6.74e9 - 1) < 0.05"
    objectives: list = field(default_factory=lambda: [
        {"key": "decode_tokens_per_s", "dir": "max"}, {"key": "loss_proxy", "dir": "min"},
        {"key": "memory_bytes", "dir": "min"}])
    show: int = 15  # rows of the Pareto table printed
    scenarios: list = field(default_factory=list)  # knobs that are conditions (context, batch): one front per value
    columns: list = field(default_factory=list)  # result columns added to the printed table and pareto.md
    progress: bool = True


@dataclass
class ConstraintsConfig:
    """``optimize.constraints``: each a limit the legal design must satisfy (None: no such constraint).
    The fields of ``dse.explore.optimize.Constraints``, plus ``loss_delta`` (a test keeps them equal)."""
    loss_delta: Optional[float] = 0.02  # loss_proxy <= baseline loss_proxy + loss_delta (nats, >= 0)
    loss_max: Optional[float] = None  # or an absolute loss target (nats)
    fits_memory: bool = True
    max_params: Optional[float] = None
    max_tpot_s: Optional[float] = 0.05
    max_ttft_s: Optional[float] = None
    max_area_mm2: Optional[float] = None
    max_power_w: Optional[float] = None
    max_price_usd: Optional[float] = None
    max_serve_tpot_s: Optional[float] = None
    max_serve_ttft_s: Optional[float] = None


def _optimize_schema():
    """``optimize.*`` (conf/optimize/default.yaml; README "optimize"): the objective, the knobs and the
    constraints, plus the fields of ``dse.explore.optimize.Settings`` generated from it (one source of truth)."""
    from dse.explore.optimize import Settings

    hints = typing.get_type_hints(Settings)
    fields_ = [("objective", str, "neg_decode_tokens_per_s"),
               ("knobs", dict, field(default_factory=dict)),  # knob -> legal values (same forms as `space`)
               ("constraints", ConstraintsConfig, field(default_factory=ConstraintsConfig))]
    for f in dataclasses.fields(Settings):
        kind = Optional[int] if f.default is None else hints[f.name]
        fields_.append((f.name, kind, f.default))
    return dataclasses.make_dataclass("OptimizeConfig", fields_)


OptimizeConfig = _optimize_schema()


@dataclass
class TaskConfig:
    name: str = "sweep"
    params: dict = field(default_factory=dict)  # task-specific options


@dataclass
class ServeConfig:
    """task=serve (README "Serving"): the device budget, request lengths, SLOs and the searched values."""
    gpus: Optional[int] = None  # device budget (task=serve: 8 when unset; task=evaluate: the layout must use exactly this many)
    isl: int = 2048  # input tokens per request
    osl: int = 256  # output tokens per request
    ttft_max_s: float = 2.0
    tpot_max_s: float = 0.05
    target_rps: float = 0.0  # > 0: report the fewest devices that serve this many requests/s within the SLOs
    draft_model: Optional[str] = None  # a catalog model as the speculative draft (else the model's MTP head)
    spec_alpha: float = 0.7  # acceptance rate of a draft token
    top: int = 10  # rows of the printed table
    tp: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    pp: list = field(default_factory=lambda: [1, 2, 4, 8])
    concurrency: list = field(default_factory=lambda: [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    chunk_tokens: list = field(default_factory=lambda: [0, 256, 512, 1024, 2048, 4096, 8192])
    w_bits: list = field(default_factory=lambda: [16, 8, 4])
    kv_bits: list = field(default_factory=lambda: [16, 8, 4])
    spec_k: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    prefill_batch: list = field(default_factory=lambda: [1, 2, 4, 8])
    prefill_w_bits: list = field(default_factory=lambda: [0])  # prefill pool weight bits (0: as the decode pool)
    modes: list = field(default_factory=lambda: ["aggregated", "disaggregated"])


@dataclass
class DseConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    conventions: ConventionsConfig = field(default_factory=ConventionsConfig)
    accuracy: AccuracyConfig = field(default_factory=AccuracyConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    space: dict = field(default_factory=dict)  # knob (config key) -> list of values or a range
    sweep: SweepConfig = field(default_factory=SweepConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)  # task=optimize options (conf/optimize)
    smooth: bool = False
    serve: ServeConfig = field(default_factory=ServeConfig)


SCHEMAS = {"model": ModelConfig, "hardware": HardwareConfig, "quant": QuantConfig,
           "workload": WorkloadConfig, "conventions": ConventionsConfig, "accuracy": AccuracyConfig}


def register_configs() -> None:
    """Put the schema in Hydra's ConfigStore as ``dse_schema``: the primary config extends it, so
    every group's YAML is merged onto its typed section (one structured merge per composition)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="dse_schema", node=DseConfig)
    # the basic sweeper without its repeated composition of every job (dse/app/hydra_plugin)
    ConfigStore.instance().store(group="hydra/sweeper", name="dse", provider="dse",
                                 node={"_target_": _sweeper_target(), "max_batch_size": None, "params": None})


def _sweeper_target() -> str:
    """dse's sweeper plugin where Hydra's plugin scan finds it (``pip install .``), else Hydra's basic
    sweeper: an editable install or a bare checkout does not put it in the hydra_plugins namespace."""
    try:
        import hydra_plugins
    except ImportError:
        return BASIC_SWEEPER
    found = any(m.name == "dse_sweeper" for m in pkgutil.iter_modules(list(hydra_plugins.__path__)))
    return "hydra_plugins.dse_sweeper.DseSweeper" if found else BASIC_SWEEPER


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
