"""Config → pytrees: validation with clear errors, then Design, Hardware, Conventions, AccuracyParams.

Works on any mapping (a Hydra DictConfig, a dict, or catalog YAML loaded without Hydra), so the
Python API, the CLI and the tests share one path. Every failure raises ``DesignError`` whose
message names the field, the value and the rule, before anything is traced.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from dse.app.schema import SCHEMAS
from dse.core.accuracy import (AccuracyParams, fit_bits_penalty, fit_gqa_penalty, fit_mla_gain, fit_moe_phi,
                               fit_window_penalty)
from dse.core.conventions import Conventions
from dse.core.design import Design, DesignError, Quant, Workload, make_arch, validate_design
from dse.core.hardware import ENGINE_FIELDS, SYSTEM_FIELDS, Hardware, ideal, make_hardware, validate_hardware


def resource_dir(name: str) -> Path:
    """``conf`` or ``sweeps``: the source checkout's folder, else the copy inside the installed package."""
    import dse

    pkg = Path(dse.__file__).resolve().parent
    for candidate in (pkg.parent / name, pkg / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"dse's {name}/ folder is neither beside nor inside {pkg}")


def available(group: str) -> list[str]:
    return sorted(p.stem for p in (resource_dir("conf") / group).glob("*.yaml"))


def load_group(group: str, name: str) -> DictConfig:
    """One catalog entry (``conf/<group>/<name>.yaml``) merged onto its schema, without Hydra."""
    path = resource_dir("conf") / group / f"{name}.yaml"
    if not path.is_file():
        raise DesignError(f"{group}={name!r}: unknown {group}; available: {available(group)}")
    raw = OmegaConf.load(path)
    raw.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(SCHEMAS[group]), raw)


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_arch(model: Mapping[str, Any], explicit: frozenset = frozenset()):
    """Arch from a ``model`` config section; ``hf_config`` (a Hugging Face config.json or a folder
    holding one) fills every field it describes from the file (see dse/app/hf_config.py), except
    the ``explicit`` fields the user set on the command line (``model.window=0``), which win."""
    m = _plain(model)
    m.pop("name", None)
    path = m.pop("hf_config", None)
    if path:
        from dse.app.hf_config import hf_model_fields
        m.update({k: v for k, v in hf_model_fields(path).items() if k not in explicit})
    for key in ("n_layers", "d_model", "n_heads", "vocab"):
        v = m.get(key)
        if not isinstance(v, (int, float)) or v < 1 or v != int(v):
            raise DesignError(f"model.{key}={v}: must be a positive integer")
    if m.get("n_kv_heads") is not None and (m["n_kv_heads"] < 1):
        raise DesignError(f"model.n_kv_heads={m['n_kv_heads']}: must be a positive integer")
    return make_arch(**m)


def build_design(cfg: Mapping[str, Any], explicit_model: frozenset = frozenset()) -> Design:
    """Design from a config with ``model``, ``quant`` and ``workload`` sections (validated);
    ``explicit_model``: model fields set on the command line (they win over ``model.hf_config``)."""
    q, w = _plain(cfg.get("quant", {})), _plain(cfg.get("workload", {}))
    design = Design(build_arch(cfg["model"], explicit_model),
                    Quant(**{k: float(v) for k, v in q.items()}),
                    Workload(**{k: float(v) for k, v in w.items()}))
    return validate_design(design)


def build_hardware(hw: Mapping[str, Any]) -> Hardware:
    h = _plain(hw)
    h.pop("name", None)
    h.pop("year", None)
    use_ideal = h.pop("ideal", False)
    for key in ("mem_bw", "mem_capacity", "link_bw", "link_latency", "flops_efficiency",
                "mem_efficiency", "kernel_overhead_s", "gemm_half_tokens", "attn_efficiency", *ENGINE_FIELDS, *SYSTEM_FIELDS):
        if key in h and not isinstance(h[key], (int, float)):
            raise DesignError(f"hardware.{key}={h[key]!r}: must be a number")
    out = validate_hardware(make_hardware(**h))
    return ideal(out) if use_ideal else out


def build_conventions(conv: Mapping[str, Any] | str) -> Conventions:
    from dse.core.conventions import conventions
    if isinstance(conv, str):
        return conventions(conv)
    c = _plain(conv)
    out = Conventions(**c)
    if out.peak_rule not in ("operands", "all_le_8"):
        raise DesignError(f"conventions.peak_rule={out.peak_rule!r}: must be 'operands' or 'all_le_8'")
    if out.overlap not in ("max", "sum"):
        raise DesignError(f"conventions.overlap={out.overlap!r}: must be 'max' or 'sum'")
    return out


def build_accuracy(acc: Mapping[str, Any]) -> AccuracyParams:
    """Fit each penalty through the published points in the config (see core/accuracy.py)."""
    a = _plain(acc)
    for key in ("E", "A", "B", "alpha", "beta", "train_tokens"):
        if not (isinstance(a.get(key), (int, float)) and a[key] > 0 and math.isfinite(a[key])):
            raise DesignError(f"accuracy.{key}={a.get(key)}: must be a positive number")
    kw = {k: float(a[k]) for k in ("E", "A", "B", "alpha", "beta", "train_tokens")}
    ppl = a.get("w_ppl") or {}
    if ppl:
        method = a.get("w_method", "rtn")
        if method not in ppl:
            raise DesignError(f"accuracy.w_method={method!r}: no perplexities for it; available: "
                              f"{sorted(k for k in ppl if k != 'fp16')}")
        pts = sorted(((float(b), float(p)) for b, p in ppl[method].items()), reverse=True)
        (b_hi, p_hi), (b_lo, p_lo) = pts[0], pts[-1]
        kw["w_c"], kw["w_k"] = fit_bits_penalty(b_hi, p_hi, b_lo, p_lo, float(ppl["fp16"]))
        ref = float(ppl["fp16"])
        # KV cache: one published bound (KVQuant: < +0.1 ppl at 3 bits) with the weights' decay rate.
        dkv = math.log((ref + float(a.get("kv_delta_ppl", 0.1))) / ref)
        kw["kv_k"] = kw["w_k"]
        kw["kv_c"] = dkv * 2.0 ** (kw["kv_k"] * float(a.get("kv_delta_bits", 3.0)))
    aq = a.get("a_ppl") or {}
    if aq:
        pts = sorted(((float(b), float(p)) for b, p in aq.items() if b != "ref"), reverse=True)
        kw["a_c"], kw["a_k"] = fit_bits_penalty(pts[0][0], pts[0][1], pts[-1][0], pts[-1][1], float(aq["ref"]))
    g = a.get("gqa_scores") or {}
    if g:
        heads = float(g["n_heads"])
        kw["gqa_c"], kw["gqa_p"] = fit_gqa_penalty(heads / float(g["gqa_groups"]), float(g["gqa"]),
                                                   heads, float(g["mqa"]), float(g["mha"]))
        kw["gqa_score_ref"] = float(g["mha"])
    kw.update(_arch_accuracy(a))
    return AccuracyParams(**kw)


def _arch_accuracy(a: Mapping[str, Any]) -> dict:
    """φ of the MoE term, (c, p, x_max) of the MLA gain, c of the window penalty (core/accuracy.py)."""
    kw = {}

    def num(where, v):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)):
            raise DesignError(f"accuracy.{where}={v}: must be a positive number")
        return float(v)

    pts = a.get("moe_points") or []
    if pts:
        rows = [(num(f"moe_points[{i}].total", r.get("total")), num(f"moe_points[{i}].active", r.get("active")),
                 num(f"moe_points[{i}].dense", r.get("dense"))) for i, r in enumerate(pts)]
        for i, (t, act, _) in enumerate(rows):
            if not act < t:
                raise DesignError(f"accuracy.moe_points[{i}].active={act}: must be below total={t}")
        kw["moe_phi"] = min(max(fit_moe_phi(rows), 0.0), 1.0)
    m = a.get("mla_scores") or {}
    if m:
        gains = []
        for i, r in enumerate(m.get("points") or []):
            ratio = num(f"mla_scores.points[{i}].kv_mha", r.get("kv_mha")) / num(
                f"mla_scores.points[{i}].kv_mla", r.get("kv_mla"))
            mha = [num(f"mla_scores.points[{i}].mha", v) for v in r.get("mha") or []]
            mla = [num(f"mla_scores.points[{i}].mla", v) for v in r.get("mla") or []]
            if not mha or len(mha) != len(mla):
                raise DesignError(f"accuracy.mla_scores.points[{i}]: needs as many mla as mha scores (and some)")
            s_mha, s_mla = sum(mha) / len(mha), sum(mla) / len(mla)
            gains.append((ratio, (s_mla - s_mha) / s_mha))
        if len(gains) != 2:
            raise DesignError(f"accuracy.mla_scores.points: {len(gains)} points; the fit needs exactly 2")
        (r1, g1), (r2, g2) = sorted(gains)
        kw["mla_c"], kw["mla_p"] = fit_mla_gain(r1, g1, r2, g2)
        kw["mla_x_max"] = math.log2(r2)
    w = a.get("window_ppl") or {}
    if w:
        context = num("window_ppl.context", w.get("context"))
        p = num("window_ppl.p", w.get("p", 2.0))
        ppl = {float(k): num(f"window_ppl.ppl[{k}]", v) for k, v in (w.get("ppl") or {}).items()}
        ref = num("window_ppl.ref_window", w.get("ref_window"))
        if ref not in ppl or len(ppl) < 2:
            raise DesignError(f"accuracy.window_ppl.ref_window={ref}: needs its perplexity and a smaller window's")
        kw["window_c"] = fit_window_penalty(ppl, ref, num("window_ppl.local_fraction", w.get("local_fraction")),
                                            context, p)
        kw["window_p"], kw["window_context"] = p, context
    return kw


def load_model(name: str):
    """The Arch of a catalog model (``conf/model/<name>.yaml``)."""
    return build_arch(load_group("model", name))


def load_hardware(name: str) -> Hardware:
    """The Hardware of a catalog device (``conf/hardware/<name>.yaml``)."""
    return build_hardware(load_group("hardware", name))


def load_accuracy(name: str = "hoffmann2022") -> AccuracyParams:
    return build_accuracy(load_group("accuracy", name))
