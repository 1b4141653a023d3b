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


def _positive_int(name, v):
    _check(name, v, lambda x: np.isfinite(x) & (x >= 1) & (x == np.round(x)), "must be a positive integer")


def validate_design(design: Design, prefix: str = "") -> Design:
    """Check a concrete design (scalars or arrays of design points); raise DesignError or return it."""
    a, q, w = design.arch, design.quant, design.workload
    m = f"{prefix}model."
    for name in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_ff", "vocab"):
        _positive_int(m + name, getattr(a, name))
    _check(m + "n_positions", a.n_positions, lambda x: (x >= 0) & (x == np.round(x)),
           "must be a non-negative integer (0: no learned position table)")
    if a.norm not in ("rmsnorm", "layernorm"):
        _fail(m + "norm", a.norm, "must be one of ['layernorm', 'rmsnorm']")
    h, kv = np.asarray(a.n_heads, float), np.asarray(a.n_kv_heads, float)
    _check(m + "n_kv_heads", kv * np.ones_like(h), lambda x: x <= h, f"must not exceed model.n_heads={_fmt(h)}")
    _check(m + "n_kv_heads", kv * np.ones_like(h), lambda x: np.mod(h, x) == 0,
           f"must divide model.n_heads={_fmt(h)} (each KV head serves a whole group of query heads)")
    for name in ("w_bits", "a_bits", "kv_bits"):
        _check(f"{prefix}quant.{name}", getattr(q, name), lambda x: np.isfinite(x) & (x >= 1) & (x <= 32),
               "must be a number of bits in [1, 32]")
    wl = f"{prefix}workload."
    _positive_int(wl + "batch", w.batch)
    _check(wl + "prompt_len", w.prompt_len, lambda x: (x >= 0) & (x == np.round(x)), "must be a non-negative integer")
    _check(wl + "gen_len", w.gen_len, lambda x: (x >= 0) & (x == np.round(x)), "must be a non-negative integer")
    _positive_int(wl + "tp", w.tp)
    tp = np.asarray(w.tp, float)
    _check(wl + "tp", tp * np.ones_like(h), lambda x: np.mod(h, x) == 0,
           f"must divide model.n_heads={_fmt(h)} (tensor parallelism splits whole heads)")
    _check(wl + "tp", tp * np.ones_like(kv), lambda x: (np.mod(kv, x) == 0) | (np.mod(x, kv) == 0),
           f"must divide model.n_kv_heads={_fmt(kv)} or be a multiple of it (KV heads are split or replicated)")
    _check(wl + "tp", tp * np.ones_like(np.asarray(a.d_ff, float)), lambda x: np.mod(np.asarray(a.d_ff, float), x) == 0,
           f"must divide model.d_ff={_fmt(a.d_ff)}")
    return design


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
