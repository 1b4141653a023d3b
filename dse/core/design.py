"""Design pytrees: the architecture, quantization and workload of one design point.

Every knob a user may sweep or optimize is a numeric leaf (a float array), so one compiled
function serves every design point and ``jax.vmap`` batches them; only true structure (gated MLP,
causal or encoder, norm type, parallel block, tied embeddings, biases) is static metadata, which
JAX keeps in the tree definition, so a change of structure is a new compile and nothing else is.

Validation (``validate_*``) runs on concrete numbers before any tracing and raises
:class:`DesignError` naming the field, the value and the rule.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # a jax or numpy array, or a Python number


class DesignError(ValueError):
    """An invalid design or hardware field: the message names the field, the value and the rule."""


def _register(cls, static: tuple[str, ...] = ()):
    names = [f.name for f in dataclasses.fields(cls)]
    data = [n for n in names if n not in static]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(static))


@dataclass(frozen=True)
class Arch:
    """A Transformer's shape (numeric leaves) and structure (static flags).

    ``n_kv_heads``: ``n_heads`` is multi-head attention, 1 is multi-query (Shazeer 2019), values
    between are grouped-query attention (Ainslie et al. 2023). ``d_head`` is usually
    ``d_model / n_heads`` but is its own knob (PaLM: 256 with d_model 18432 and 48 heads).
    ``n_positions`` is the size of a learned position table (GPT-2, BERT, OPT), 0 for rotary.
    """

    n_layers: Array
    d_model: Array
    n_heads: Array
    n_kv_heads: Array
    d_head: Array
    d_ff: Array
    vocab: Array
    n_positions: Array = 0.0
    gated_mlp: bool = field(default=True)
    causal: bool = field(default=True)
    tied_embeddings: bool = field(default=False)
    bias: bool = field(default=False)
    norm: str = field(default="rmsnorm")  # "rmsnorm" or "layernorm"
    parallel_block: bool = field(default=False)  # attention and MLP read one norm (GPT-J, Falcon, PaLM)


Arch = _register(Arch, ("gated_mlp", "causal", "tied_embeddings", "bias", "norm", "parallel_block"))


@dataclass(frozen=True)
class Quant:
    """Bits per element of weights, activations and the KV cache (real numbers in [1, 32])."""

    w_bits: Array = 16.0
    a_bits: Array = 16.0
    kv_bits: Array = 16.0


Quant = _register(Quant)


@dataclass(frozen=True)
class Workload:
    """Serving workload: sequences per batch, prompt and generated tokens, tensor-parallel degree."""

    batch: Array = 1.0
    prompt_len: Array = 512.0
    gen_len: Array = 128.0
    tp: Array = 1.0


Workload = _register(Workload)


@dataclass(frozen=True)
class Design:
    """One design point: architecture, quantization and workload."""

    arch: Arch
    quant: Quant = Quant()
    workload: Workload = Workload()


Design = _register(Design)


def as_arrays(tree, dtype=None):
    """Every numeric leaf as a jnp array of ``dtype`` (float64 when x64 is on, else float32)."""
    dtype = dtype or jnp.result_type(float)
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=dtype), tree)


# ----------------------------------------------------------------------------- validation

def _fail(field_name: str, value, rule: str):
    raise DesignError(f"{field_name}={_fmt(value)}: {rule}")


def _fmt(v):
    """A value as the user wrote it: 5 rather than 5.0, a list for arrays."""
    v = np.asarray(v)
    if v.size != 1:
        return v.tolist()
    x = v.item()
    return int(x) if isinstance(x, float) and x.is_integer() else x


def _check(field_name: str, value, ok, rule: str):
    v = np.asarray(value, dtype=float)
    bad = ~np.asarray(ok(v), dtype=bool)
    if bad.any():
        _fail(field_name, v[bad].flat[0] if v.ndim else v, rule)


def _rules(design: Design, xp):
    """(field, ok, rule) for every rule a design must satisfy; ``ok`` is a boolean array.

    Written once for numpy (validation with messages) and jax.numpy (a mask inside a sweep).
    """
    a, q, w = design.arch, design.quant, design.workload

    def pos_int(x):
        return (x >= 1) & (x == xp.round(x))

    def nonneg_int(x):
        return (x >= 0) & (x == xp.round(x))

    h, kv, tp = a.n_heads, a.n_kv_heads, w.tp
    rules = [(f"model.{n}", pos_int(getattr(a, n)), "must be a positive integer")
             for n in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_ff", "vocab")]
    rules += [
        ("model.n_positions", nonneg_int(a.n_positions), "must be a non-negative integer (0: no learned position table)"),
        ("model.n_kv_heads", kv <= h, "must not exceed model.n_heads={h}"),
        ("model.n_kv_heads", xp.mod(h, kv) == 0, "must divide model.n_heads={h} (each KV head serves a whole group of query heads)"),
    ]
    rules += [(f"quant.{n}", (getattr(q, n) >= 1) & (getattr(q, n) <= 32), "must be a number of bits in [1, 32]")
              for n in ("w_bits", "a_bits", "kv_bits")]
    rules += [
        ("workload.batch", pos_int(w.batch), "must be a positive integer"),
        ("workload.prompt_len", nonneg_int(w.prompt_len), "must be a non-negative integer"),
        ("workload.gen_len", nonneg_int(w.gen_len), "must be a non-negative integer"),
        ("workload.tp", pos_int(tp), "must be a positive integer"),
        ("workload.tp", xp.mod(h, tp) == 0, "must divide model.n_heads={h} (tensor parallelism splits whole heads)"),
        ("workload.tp", (xp.mod(kv, tp) == 0) | (xp.mod(tp, kv) == 0),
         "must divide model.n_kv_heads={kv} or be a multiple of it (KV heads are split or replicated)"),
        ("workload.tp", xp.mod(a.d_ff, tp) == 0, "must divide model.d_ff={ff}"),
    ]
    return rules


def is_valid(design: Design):
    """Traceable: True where a design point satisfies every rule of :func:`validate_design`."""
    ok = True
    for _, good, _ in _rules(design, jnp):
        ok = ok & good
    return ok


def validate_design(design: Design, prefix: str = "") -> Design:
    """Check a concrete design (scalars or arrays of points); raise DesignError or return it."""
    a = design.arch
    if a.norm not in ("rmsnorm", "layernorm"):
        _fail(prefix + "model.norm", a.norm, "must be one of ['layernorm', 'rmsnorm']")
    concrete = jax.tree.map(lambda x: np.asarray(x, dtype=float), design)
    ctx = {"h": _fmt(concrete.arch.n_heads), "kv": _fmt(concrete.arch.n_kv_heads), "ff": _fmt(concrete.arch.d_ff)}
    with np.errstate(divide="ignore", invalid="ignore"):
        for field_name, good, rule in _rules(concrete, np):
            bad = ~np.asarray(good, dtype=bool)
            if bad.any():
                value = _field_value(concrete, field_name)
                value = np.broadcast_to(value, bad.shape)[bad].flat[0] if bad.ndim else value
                _fail(prefix + field_name, value, rule.format(**ctx))
    return design


def _field_value(design: Design, dotted: str):
    section, name = dotted.split(".")
    return getattr({"model": design.arch, "quant": design.quant, "workload": design.workload}[section], name)


def make_arch(*, n_layers, d_model, n_heads, n_kv_heads=None, d_head=None, d_ff=None, vocab,
              n_positions=0, gated_mlp=True, causal=True, tied_embeddings=False, bias=False,
              norm="rmsnorm", parallel_block=False) -> Arch:
    """Build an Arch from Python numbers with the usual defaults, checking the defaults' rules.

    ``n_kv_heads`` defaults to ``n_heads`` (MHA); ``d_head`` to ``d_model / n_heads`` (which must
    then divide exactly); ``d_ff`` to ``4 d_model`` (Vaswani et al. 2017).
    """
    if d_head is None:
        if d_model % n_heads:
            _fail("model.d_model", d_model, f"must be divisible by model.n_heads={n_heads} when model.d_head is not given")
        d_head = d_model // n_heads
    return Arch(n_layers=float(n_layers), d_model=float(d_model), n_heads=float(n_heads),
                n_kv_heads=float(n_heads if n_kv_heads is None else n_kv_heads), d_head=float(d_head),
                d_ff=float(4 * d_model if d_ff is None else d_ff), vocab=float(vocab),
                n_positions=float(n_positions), gated_mlp=bool(gated_mlp), causal=bool(causal),
                tied_embeddings=bool(tied_embeddings), bias=bool(bias), norm=str(norm),
                parallel_block=bool(parallel_block))
