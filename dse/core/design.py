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
    return jax.tree_util.register_dataclass(float_leaves(cls, data), data_fields=data, meta_fields=list(static))


def float_leaves(cls, fields):
    """Make ``cls(...)`` store integer leaves (Python ints, integer arrays) as floats, so the Python API
    takes plain numbers everywhere: ``Quant(w_bits=4)`` is differentiable (issue 16: ``jax.grad``
    rejected the int). Bools and non-numeric leaves (tracers of floats, None, sentinels) pass through."""
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for name in fields:
            v = getattr(self, name)
            if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                object.__setattr__(self, name, float(v))
            elif isinstance(getattr(v, "dtype", None), np.dtype) and np.issubdtype(v.dtype, np.integer):
                object.__setattr__(self, name, v.astype(np.float64 if isinstance(v, np.ndarray) else jnp.result_type(float)))

    __init__.__wrapped__ = init
    cls.__init__ = __init__
    return cls


#: the optional parts of the cost model (``Arch.features``)
FEATURES = ("gqa", "mla", "moe", "window", "chunk")


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
    # --- mixture of experts (Shazeer et al. 2017; Fedus et al. 2022; DeepSeek-V3 2024)
    n_experts: Array = 0.0  # routed experts per MoE layer; 0: every MLP is dense
    top_k: Array = 0.0  # routed experts per token
    d_ff_expert: Array = 0.0  # width of each routed expert
    n_shared_experts: Array = 0.0  # always-active experts per MoE layer (DeepSeek, Llama 4)
    d_ff_shared: Array = 0.0  # width of each shared expert; 0: d_ff_expert
    n_dense_layers: Array = 0.0  # leading layers with a dense MLP of width d_ff (DeepSeek first_k_dense_replace)
    moe_every: Array = 1.0  # after those, every k-th layer is MoE, the others dense (Llama 4 Maverick: 2)
    moe_imbalance: Array = 1.0  # busiest expert shard's load over the mean (>= 1; 1 = uniform routing)
    # --- multi-head latent attention (DeepSeek-V2, arXiv 2405.04434 §2.1)
    kv_lora_rank: Array = 0.0  # latent KV width; 0: ordinary (grouped) K and V heads
    q_lora_rank: Array = 0.0  # latent query width; 0: a plain query projection
    qk_rope_head_dim: Array = 0.0  # decoupled rotary key/query width (shared rotary key per token)
    qk_nope_head_dim: Array = 0.0  # per-head non-rotary query/key width
    v_head_dim: Array = 0.0  # per-head value width
    # --- local attention (Beltagy et al. 2020; Mistral 2023; Gemma 2/3; gpt-oss; Llama 4)
    window: Array = 0.0  # sliding window in tokens (keys attended and cached) of the local layers; 0: none
    attn_chunk: Array = 0.0  # chunked local attention: a token sees its own chunk of this many tokens; 0: none
    global_every: Array = 0.0  # with a window or chunk: every k-th layer is global; 0: all layers are local
    max_context: Array = 0.0  # the model's maximum context in tokens (a warning past it); 0: unknown
    gated_mlp: bool = field(default=True)
    causal: bool = field(default=True)
    tied_embeddings: bool = field(default=False)
    bias: bool = field(default=False)  # biases on every linear layer (GPT-2, OPT, BERT, gpt-oss)
    norm: str = field(default="rmsnorm")  # "rmsnorm" or "layernorm"
    parallel_block: bool = field(default=False)  # attention and MLP read one norm (GPT-J, Falcon, PaLM)
    qkv_bias: bool = field(default=False)  # biases on q, k and v only (Qwen2)
    router_bias: bool = field(default=False)  # a bias per expert in each router (gpt-oss; DeepSeek's correction bias)
    attn_sinks: bool = field(default=False)  # a learned sink logit per head (gpt-oss)
    qk_norm: bool = field(default=False)  # RMSNorm on each head's query and key (Qwen3, Gemma 3)
    sandwich_norm: bool = field(default=False)  # norms before and after attention and MLP (Gemma 2/3): 4 per layer
    features: tuple = field(default=FEATURES)  # the parts of the cost model traced (see ARCH_META)


#: structure (static) fields of Arch: a change is a new compile
ARCH_STATIC = ("gated_mlp", "causal", "tied_embeddings", "bias", "norm", "parallel_block", "qkv_bias",
               "router_bias", "attn_sinks", "qk_norm", "sandwich_norm")
#: Arch metadata that is not a model property: ``features``, the optional parts of the cost model a design
#: (or every point of a batch) may use — ``gqa``/``mla`` attention, ``moe`` layers, ``window``/``chunk``
#: local layers. Parts not listed are left out of the traced computation, so a dense model does not pay
#: for experts it has not got (one compile per structure). The default lists all, which is right for any
#: values; :func:`specialize` narrows it from the concrete values a run can take, and validation checks it.
ARCH_META = ("features",)
Arch = _register(Arch, ARCH_STATIC + ARCH_META)


def uses(arch: Arch, feature: str) -> bool:
    """Static: whether the cost model traces ``feature`` (one of FEATURES) for ``arch``."""
    return feature in arch.features


def needed_features(arch: Arch, **values) -> tuple[str, ...]:
    """The FEATURES that concrete values need: ``arch``'s leaves, each possibly an array of points,
    plus ``values`` (field name -> every value a sweep or search may give that field)."""
    def vals(name):
        own = np.ravel(np.asarray(getattr(arch, name), dtype=float))
        return np.concatenate([own, np.ravel(np.asarray(values[name], dtype=float))]) if name in values else own

    rank, experts, window, chunk = vals("kv_lora_rank"), vals("n_experts"), vals("window"), vals("attn_chunk")
    need = {"gqa": (rank <= 0).any(), "mla": (rank > 0).any(), "moe": (experts > 0).any(),
            "window": (window > 0).any(), "chunk": (chunk > 0).any()}
    return tuple(f for f in FEATURES if need[f])


def specialize(arch: Arch, **values) -> Arch:
    """``arch`` tracing only the FEATURES its concrete values (and ``values``, see
    :func:`needed_features`) need; unchanged if a leaf is traced (then nothing can be left out)."""
    try:
        features = needed_features(arch, **values)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return arch
    return dataclasses.replace(arch, features=features)


#: numeric Arch fields that are real numbers (all others are integer counts)
ARCH_REAL_FIELDS = frozenset({"moe_imbalance"})


@dataclass(frozen=True)
class Quant:
    """Bits per element of weights, activations and the KV cache (real numbers in [1, 32])."""

    w_bits: Array = 16.0
    a_bits: Array = 16.0
    kv_bits: Array = 16.0


Quant = _register(Quant)


@dataclass(frozen=True)
class Workload:
    """Serving workload: sequences per batch, prompt and generated tokens, parallel layout.

    One model replica runs on ``tp · attn_dp`` devices: attention is tensor-parallel over ``tp`` and
    data-parallel over ``attn_dp`` (each attention replica holds ``batch / attn_dp`` sequences); the
    routed experts of an MoE layer are split into ``ep`` shards, each shard's experts tensor-parallel
    over the remaining ``tp · attn_dp / ep`` devices (the layout of AIConfigurator and vLLM/SGLang:
    tp·dp = moe_tp·moe_ep). ``batch`` counts the sequences of the whole replica.
    """

    batch: Array = 1.0
    prompt_len: Array = 512.0
    gen_len: Array = 128.0
    tp: Array = 1.0
    ep: Array = 1.0  # expert parallelism: routed experts split over ep shards of the MoE group
    attn_dp: Array = 1.0  # attention data parallelism inside the MoE group (tp·attn_dp devices; DeepSeek-V3 serving)
    # --- deployment (dse.core.serving; README "Serving"): pipeline, replicas, the serving engine
    pp: Array = 1.0  # pipeline stages (layers split evenly; GPipe, Huang et al. 2019)
    microbatches: Array = 1.0  # micro-batches the batch is split into on the pipeline
    prefill_microbatches: Array = 0.0  # micro-batches of the prefill pass; 0: as microbatches (FasterTransformer splits them apart)
    dp: Array = 1.0  # model replicas (data parallelism)
    concurrency: Array = 0.0  # running requests per replica under continuous batching; 0: as many as the KV cache holds
    chunk_tokens: Array = 0.0  # prefill tokens per mixed step (chunked prefill); 0: a whole prompt per step
    mem_fraction: Array = 0.9  # fraction of device memory the engine may use (vLLM gpu_memory_utilization)
    kv_block: Array = 16.0  # tokens per KV-cache block (paged attention; vLLM's default 16)
    prefix_hit: Array = 0.0  # fraction of prompt tokens served from a prefix cache
    spec_k: Array = 0.0  # speculative decoding: draft tokens per verify step; 0: off
    spec_alpha: Array = 0.0  # probability that the target accepts a draft token
    spec_mtp: Array = 0.0  # 1: the draft is the model's own MTP head (one layer); 0: a separate draft model
    disagg: Array = 0.0  # 1: prefill and decode run on separate pools (the decode pool is tp·pp·dp)
    prefill_tp: Array = 1.0  # disaggregated: tensor parallelism of one prefill replica
    prefill_dp: Array = 1.0  # disaggregated: prefill replicas
    prefill_batch: Array = 1.0  # disaggregated: prompts per prefill step
    prefill_w_bits: Array = 0.0  # disaggregated: weight bits of the prefill pool; 0: quant.w_bits
    prefill_a_bits: Array = 0.0  # disaggregated: activation bits of the prefill pool; 0: quant.a_bits


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
    rules += _moe_rules(a, w, xp, pos_int, nonneg_int) + _attention_rules(a, xp, nonneg_int)
    rules += _deploy_rules(a, w, xp, pos_int, nonneg_int)
    return rules


def _deploy_rules(a: Arch, w: Workload, xp, pos_int, nonneg_int):
    """Rules of the deployment knobs (pipeline, replicas, serving engine, speculation, pools)."""
    def flag(x):
        return (x == 0) | (x == 1)

    h, kv = a.n_heads, a.n_kv_heads
    rules = [(f"workload.{n}", pos_int(getattr(w, n)), "must be a positive integer")
             for n in ("pp", "microbatches", "dp", "kv_block", "prefill_tp", "prefill_dp", "prefill_batch")]
    rules += [(f"workload.{n}", nonneg_int(getattr(w, n)), "must be a non-negative integer")
              for n in ("concurrency", "chunk_tokens", "spec_k", "prefill_microbatches")]
    rules += [
        ("workload.pp", w.pp <= a.n_layers, "must not exceed model.n_layers={L} (each stage holds whole layers)"),
        ("workload.mem_fraction", (w.mem_fraction > 0) & (w.mem_fraction <= 1), "must be in (0, 1]"),
        ("workload.prefill_w_bits", (w.prefill_w_bits == 0) | ((w.prefill_w_bits >= 1) & (w.prefill_w_bits <= 32)),
         "must be 0 (as quant.w_bits) or a number of bits in [1, 32]"),
        ("workload.prefill_a_bits", (w.prefill_a_bits == 0) | ((w.prefill_a_bits >= 1) & (w.prefill_a_bits <= 32)),
         "must be 0 (as quant.a_bits) or a number of bits in [1, 32]"),
        ("workload.prefix_hit", (w.prefix_hit >= 0) & (w.prefix_hit < 1), "must be in [0, 1)"),
        ("workload.spec_alpha", (w.spec_alpha >= 0) & (w.spec_alpha < 1), "must be in [0, 1)"),
        ("workload.spec_mtp", flag(w.spec_mtp), "must be 0 (a draft model) or 1 (the model's MTP head)"),
        ("workload.disagg", flag(w.disagg), "must be 0 (aggregated) or 1 (disaggregated prefill and decode pools)"),
        ("workload.prefill_tp", xp.mod(h, w.prefill_tp) == 0, "must divide model.n_heads={h}"),
        ("workload.prefill_tp", (xp.mod(kv, w.prefill_tp) == 0) | (xp.mod(w.prefill_tp, kv) == 0),
         "must divide model.n_kv_heads={kv} or be a multiple of it"),
        ("workload.prefill_tp", xp.mod(a.d_ff, w.prefill_tp) == 0, "must divide model.d_ff={ff}"),
    ]
    return rules


def _moe_rules(a: Arch, w: Workload, xp, pos_int, nonneg_int):
    E, k, ep, group = a.n_experts, a.top_k, w.ep, w.tp * w.attn_dp
    moe = E > 0
    rules = [(f"model.{n}", nonneg_int(getattr(a, n)), "must be a non-negative integer")
             for n in ("n_experts", "top_k", "d_ff_expert", "n_shared_experts", "d_ff_shared", "n_dense_layers")]
    rules += [
        ("model.top_k", ~moe | ((k >= 1) & (k <= E)), "must be in [1, model.n_experts={E}] for an MoE model"),
        ("model.d_ff_expert", ~moe | (a.d_ff_expert >= 1), "must be a positive width when model.n_experts > 0"),
        ("model.moe_every", pos_int(a.moe_every), "must be a positive integer (1: every layer after the dense ones is MoE)"),
        ("model.n_dense_layers", a.n_dense_layers <= a.n_layers, "must not exceed model.n_layers"),
        ("model.moe_imbalance", xp.isfinite(a.moe_imbalance) & (a.moe_imbalance >= 1),
         "must be >= 1 (the busiest expert shard's load over the mean)"),
        ("workload.ep", pos_int(ep), "must be a positive integer"),
        ("workload.attn_dp", pos_int(w.attn_dp), "must be a positive integer"),
        ("workload.ep", ~moe | (xp.mod(E, ep) == 0), "must divide model.n_experts={E} (each shard holds whole experts)"),
        ("workload.ep", moe | (ep == 1), "must be 1 for a dense model (there are no experts to split)"),
        ("workload.ep", xp.mod(group, ep) == 0,
         "must divide workload.tp·workload.attn_dp={group} (the MoE group's devices form ep shards)"),
        ("workload.attn_dp", xp.mod(w.batch, w.attn_dp) == 0,
         "must divide workload.batch (each attention replica holds whole sequences)"),
    ]
    return rules


def _attention_rules(a: Arch, xp, nonneg_int):
    mla = a.kv_lora_rank > 0
    rules = [(f"model.{n}", nonneg_int(getattr(a, n)), "must be a non-negative integer")
             for n in ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
                       "window", "attn_chunk", "global_every", "max_context")]
    rules += [
        ("model.qk_nope_head_dim", ~mla | (a.qk_nope_head_dim >= 1), "must be positive for latent attention (model.kv_lora_rank > 0)"),
        ("model.v_head_dim", ~mla | (a.v_head_dim >= 1), "must be positive for latent attention (model.kv_lora_rank > 0)"),
        ("model.d_head", ~mla | (a.d_head == a.qk_nope_head_dim + a.qk_rope_head_dim),
         "must equal model.qk_nope_head_dim + model.qk_rope_head_dim for latent attention"),
        ("model.q_lora_rank", mla | (a.q_lora_rank == 0), "needs latent attention (model.kv_lora_rank > 0)"),
        ("model.attn_chunk", (a.window == 0) | (a.attn_chunk == 0), "cannot be combined with model.window (pick one)"),
        ("model.window", (a.window == 0) | a.causal, "needs a causal model"),
    ]
    return rules


def order_slack(design: Design):
    """Smooth relative violations (``lhs / rhs − 1``, clipped at 0) of the order relations that
    :func:`is_valid`'s divisibility rules imply, for the optimizer's relaxation, where the rules themselves
    are flat: a divisor is at most what it divides. ep ≤ tp·attn_dp (ep divides the MoE group) and
    ep ≤ n_experts, top_k ≤ n_experts (MoE models), n_kv_heads ≤ n_heads, tp ≤ n_heads, pp ≤ n_layers,
    attn_dp ≤ batch. Without them a knob the smooth model is flat in drifts where no legal design is:
    moe_serve's descent left ep at 3–8 after tp fell to 1 (every rounded design invalid)."""
    a, w = design.arch, design.workload
    moe = jnp.where(a.n_experts > 0, 1.0, 0.0)
    pairs = [(w.ep, w.tp * w.attn_dp), (moe * w.ep, jnp.maximum(a.n_experts, 1.0)), (moe * a.top_k, jnp.maximum(a.n_experts, 1.0)),
             (a.n_kv_heads, a.n_heads), (w.tp, a.n_heads), (w.pp, a.n_layers), (w.attn_dp, w.batch)]
    return jnp.stack([jnp.maximum(lhs / rhs - 1.0, 0.0) for lhs, rhs in pairs], -1)


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
    missing = [f for f in needed_features(concrete.arch) if f not in a.features]
    if missing:
        field_name = {"gqa": "kv_lora_rank", "mla": "kv_lora_rank", "moe": "n_experts", "window": "window",
                      "chunk": "attn_chunk"}[missing[0]]
        _fail(prefix + "model." + field_name, getattr(concrete.arch, field_name),
              f"needs the cost model's '{missing[0]}' part, left out of this design's features={a.features} "
              "(build it with dse.core.design.specialize over every value it takes)")
    w = concrete.workload
    ctx = {"L": _fmt(concrete.arch.n_layers), "h": _fmt(concrete.arch.n_heads), "kv": _fmt(concrete.arch.n_kv_heads), "ff": _fmt(concrete.arch.d_ff),
           "E": _fmt(concrete.arch.n_experts), "group": _fmt(np.asarray(w.tp) * np.asarray(w.attn_dp))}
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


def make_arch(*, n_layers, d_model, n_heads, n_kv_heads=None, d_head=None, d_ff=None, vocab, **fields) -> Arch:
    """Build an Arch from Python numbers with the usual defaults, checking the defaults' rules.

    ``n_kv_heads`` defaults to ``n_heads`` (MHA); ``d_head`` to ``d_model / n_heads`` (which must
    then divide exactly), or for latent attention to ``qk_nope_head_dim + qk_rope_head_dim``;
    ``d_ff`` to ``4 d_model`` (Vaswani et al. 2017); every other field (``fields``, any Arch field
    by name; None = its default) to its default above.
    """
    known = {f.name: f for f in dataclasses.fields(Arch) if f.name not in ARCH_META}
    for key in fields:
        if key not in known:
            _fail(f"model.{key}", fields[key], f"unknown model field; known: {sorted(known)}")
    fields = {k: v for k, v in fields.items() if v is not None}
    if d_head is None:
        if fields.get("kv_lora_rank", 0):
            d_head = fields.get("qk_nope_head_dim", 0) + fields.get("qk_rope_head_dim", 0)
        elif d_model % n_heads:
            _fail("model.d_model", d_model, f"must be divisible by model.n_heads={n_heads} when model.d_head is not given")
        else:
            d_head = d_model // n_heads
    kw = {k: (v if k in ARCH_STATIC else float(v)) for k, v in fields.items()}
    for k in ARCH_STATIC:
        if k in kw:
            kw[k] = str(kw[k]) if k == "norm" else bool(kw[k])
    return Arch(n_layers=float(n_layers), d_model=float(d_model), n_heads=float(n_heads),
                n_kv_heads=float(n_heads if n_kv_heads is None else n_kv_heads), d_head=float(d_head),
                d_ff=float(4 * d_model if d_ff is None else d_ff), vocab=float(vocab), **kw)
