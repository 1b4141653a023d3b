"""Read a Hugging Face ``config.json`` into dse's ``model.*`` fields (``model.hf_config=PATH``).

``hf_model_fields(path)`` returns every Arch field (so nothing of another catalog model leaks in)
and ``from_hf_config(path)`` the Arch (``dse.from_hf_config``). ``path`` is a config.json, a folder
holding one, or the name of a bundled config (``openai/gpt-oss-120b``: ``dse/data/hf_configs/``).

Field names are those of the ``transformers`` configuration classes of each ``model_type``; where a
file leaves a key out, the class default applies (named in ``_DEFAULTS`` below). Layer layouts (which
MLPs are MoE, which attention layers are local) are reduced to dse's two counts per kind:
``n_dense_layers``/``moe_every`` and ``global_every`` reproduce the file's positions exactly for every
supported model (a warning says so where they only reproduce the counts). Parts dse does not model
(a vision tower, DeepSeek's multi-token-prediction module, OPT's embedding projections) get a
one-line warning naming them; an unsupported ``model_type`` or a missing key is a ``DesignError``.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Callable

from dse.core.design import Arch, DesignError, make_arch

#: folder of the bundled verbatim config.json files (their source: dse/data/README.md)
BUNDLED = Path(__file__).resolve().parents[1] / "data" / "hf_configs"


class HFConfigWarning(UserWarning):
    """A part of a Hugging Face model that dse does not model (named in the message)."""


class _Cfg:
    """A config dict with its file name, for errors that name the file and the key."""

    def __init__(self, data: dict, file: Path, model_type: str, defaults: dict | None = None):
        self.data, self.file, self.model_type, self.defaults = data, file, model_type, defaults or {}

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get(self, key: str, default: Any = None, *alts: str) -> Any:
        for k in (key, *alts):
            if self.data.get(k) is not None:
                return self.data[k]
        return self.defaults.get(key, default)

    def req(self, key: str, *alts: str) -> Any:
        v = self.get(key, None, *alts)
        if v is None:
            names = " or ".join(repr(k) for k in (key, *alts))
            raise DesignError(f"model.hf_config={self.file}: missing required key {names} "
                              f"(model_type {self.model_type!r})")
        return v

    def int(self, key: str, *alts: str, default: Any = None) -> int:
        v = self.req(key, *alts) if default is None else self.get(key, default, *alts)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
            raise DesignError(f"model.hf_config={self.file}: key {key!r}={v!r} must be a non-negative integer")
        return int(v)


def _warn(cfg: _Cfg, what: str) -> None:
    warnings.warn(f"{cfg.file.name} ({cfg.model_type}): {what}", HFConfigWarning, stacklevel=4)


# ----------------------------------------------------------------------------- layer layouts

def _moe_layout(is_moe: list[bool], cfg: _Cfg) -> tuple[int, int]:
    """(n_dense_layers, moe_every) whose layout (layer i is MoE iff i >= n and (i - n + 1) % k == 0)
    equals ``is_moe``; else the pair with the same MoE count, and a warning."""
    L, n_moe = len(is_moe), sum(is_moe)
    if n_moe == 0:
        return 0, 1
    first = is_moe.index(True)
    for n in range(first, -1, -1):
        k = first - n + 1
        if all(m == (i >= n and (i - n + 1) % k == 0) for i, m in enumerate(is_moe)):
            return n, k
    for k in range(1, L + 1):
        for n in range(L + 1):
            if (L - n) // k == n_moe:
                _warn(cfg, f"MoE layers at {[i for i, m in enumerate(is_moe) if m]} are not a leading-dense/"
                           f"every-k pattern; modelled as {n} dense then every {k}-th MoE (same count {n_moe})")
                return n, k
    raise AssertionError("unreachable: k=1, n=L-n_moe always matches")


def _global_layout(is_global: list[bool], cfg: _Cfg) -> int:
    """``global_every`` k (every k-th layer global, the others local; 0 = all local) for the layout."""
    L, n_global = len(is_global), sum(is_global)
    if n_global == 0:
        return 0
    k = is_global.index(True) + 1
    if all(g == ((i + 1) % k == 0) for i, g in enumerate(is_global)):
        return k
    for k in range(1, L + 1):
        if L // k == n_global:
            _warn(cfg, f"global attention layers at {[i for i, g in enumerate(is_global) if g]} modelled as every "
                       f"{k}-th layer (same count {n_global})")
            return k
    best = min(range(1, L + 1), key=lambda k: abs(L // k - n_global))
    _warn(cfg, f"{n_global} global attention layers of {L} cannot be written as every k-th layer; "
               f"modelled as every {best}-th ({L // best} global)")
    return best


def _windows(cfg: _Cfg, L: int, local: list[bool] | None, window: int) -> dict:
    """window / global_every from a per-layer local flag list (None: every layer local)."""
    if window <= 0:
        return {"window": 0, "global_every": 0}
    if local is None:
        local = [True] * L
    if not any(local):
        return {"window": 0, "global_every": 0}
    return {"window": window, "global_every": _global_layout([not x for x in local], cfg)}


def _layer_types(cfg: _Cfg, L: int) -> list[bool] | None:
    """Per-layer local flags from ``layer_types`` (transformers >= 4.53), or None when absent."""
    types = cfg.get("layer_types")
    if types is None:
        return None
    if len(types) != L:
        raise DesignError(f"model.hf_config={cfg.file}: key 'layer_types' has {len(types)} entries, "
                          f"num_hidden_layers is {L}")
    unknown = sorted({t for t in types if t not in ("full_attention", "sliding_attention", "chunked_attention")})
    if unknown:
        raise DesignError(f"model.hf_config={cfg.file}: key 'layer_types' has {unknown}; dse models "
                          "'full_attention', 'sliding_attention' and 'chunked_attention'")
    return [t != "full_attention" for t in types]


# ----------------------------------------------------------------------------- model types

def _attn_biases(cfg: _Cfg, key: str = "attention_bias") -> dict:
    """``attention_bias`` of Llama/Mistral/Qwen3: biases on q, k, v and o."""
    if not cfg.get(key, False):
        return {}
    _warn(cfg, f"{key}: the o-projection bias (hidden_size per layer) is not counted; q/k/v biases are")
    return {"qkv_bias": True}


def _decoder(cfg: _Cfg) -> dict:
    """The keys every Llama-style decoder shares (LlamaConfig names)."""
    h, H = cfg.int("hidden_size"), cfg.int("num_attention_heads")
    return {
        "n_layers": cfg.int("num_hidden_layers"), "d_model": h, "n_heads": H,
        "n_kv_heads": cfg.int("num_key_value_heads", default=H),
        "d_head": cfg.int("head_dim", default=h // H if H and h % H == 0 else 0) or _need_head_dim(cfg),
        "d_ff": cfg.int("intermediate_size"), "vocab": cfg.int("vocab_size"),
        "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "max_context": cfg.int("max_position_embeddings", default=0),
    }


def _need_head_dim(cfg: _Cfg) -> int:
    raise DesignError(f"model.hf_config={cfg.file}: missing required key 'head_dim' (hidden_size is not a "
                      "multiple of num_attention_heads)")


def _sliding(cfg: _Cfg, L: int) -> dict:
    """Mistral/Qwen sliding windows: ``layer_types`` if present; else Qwen's ``use_sliding_window`` and
    ``max_window_layers`` (layers at or past it are local, transformers' Qwen2Attention), else every layer."""
    window = cfg.int("sliding_window", default=0)
    qwen = cfg.model_type in ("qwen2", "qwen3", "qwen3_moe")  # their windows need use_sliding_window: true
    if cfg.data.get("use_sliding_window") is False or (qwen and not cfg.get("use_sliding_window", False)):
        return {"window": 0, "global_every": 0}
    local = _layer_types(cfg, L)
    if local is None and cfg.has("max_window_layers") and cfg.model_type.startswith("qwen"):
        m = cfg.int("max_window_layers")
        local = [i >= m for i in range(L)]
        if 0 < m < L:
            _warn(cfg, f"sliding window on layers {m}..{L - 1} only; dse models every k-th layer global")
    return _windows(cfg, L, local, window)


def _llama(cfg: _Cfg) -> dict:
    out = _decoder(cfg)
    out |= _sliding(cfg, out["n_layers"]) if cfg.model_type != "llama" else {}
    if cfg.model_type == "llama" and cfg.get("attention_bias", False) and cfg.get("mlp_bias", False):
        out["bias"] = True
    else:
        out |= _attn_biases(cfg)
        if cfg.get("mlp_bias", False):
            _warn(cfg, "mlp_bias without attention_bias: the MLP biases are not counted")
    if cfg.model_type == "qwen2":
        out["qkv_bias"] = True  # Qwen2Attention: q/k/v projections with bias, o without
    if cfg.model_type in ("qwen3", "qwen3_moe"):
        out["qk_norm"] = True  # Qwen3Attention: RMSNorm of head_dim on each query and key head
    if cfg.model_type == "mixtral":
        out |= {"n_experts": cfg.int("num_local_experts"), "top_k": cfg.int("num_experts_per_tok"),
                "d_ff_expert": out["d_ff"]}
    if cfg.model_type == "qwen3_moe":
        L, step = out["n_layers"], max(cfg.int("decoder_sparse_step", default=1), 1)
        dense = set(cfg.get("mlp_only_layers", []) or [])
        E = cfg.int("num_experts")
        is_moe = [E > 0 and i not in dense and (i + 1) % step == 0 for i in range(L)]
        n, k = _moe_layout(is_moe, cfg)
        out |= {"n_experts": E if any(is_moe) else 0, "top_k": cfg.int("num_experts_per_tok") if any(is_moe) else 0,
                "d_ff_expert": cfg.int("moe_intermediate_size"), "n_dense_layers": n, "moe_every": k}
        if cfg.get("shared_expert_intermediate_size"):
            _warn(cfg, "shared_expert_intermediate_size: the gated shared expert is not modelled")
    return out


def _deepseek(cfg: _Cfg) -> dict:
    """DeepSeek-V2/V3 and Kimi K2 (DeepseekV3ForCausalLM): latent attention, shared and routed experts."""
    h, H = cfg.int("hidden_size"), cfg.int("num_attention_heads")
    L = cfg.int("num_hidden_layers")
    kv_rank = cfg.int("kv_lora_rank")
    rope, nope = cfg.int("qk_rope_head_dim"), cfg.int("qk_nope_head_dim")
    out = {"n_layers": L, "d_model": h, "n_heads": H, "n_kv_heads": cfg.int("num_key_value_heads", default=H),
           "d_head": nope + rope, "d_ff": cfg.int("intermediate_size"), "vocab": cfg.int("vocab_size"),
           "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
           "max_context": cfg.int("max_position_embeddings", default=0),
           "kv_lora_rank": kv_rank, "q_lora_rank": cfg.int("q_lora_rank", default=0),
           "qk_rope_head_dim": rope, "qk_nope_head_dim": nope, "v_head_dim": cfg.int("v_head_dim")}
    out |= _attn_biases(cfg)
    E = cfg.int("n_routed_experts", default=0)
    if E:
        first, freq = cfg.int("first_k_dense_replace", default=0), max(cfg.int("moe_layer_freq", default=1), 1)
        # transformers' DeepseekV2/V3DecoderLayer: MoE iff layer >= first_k_dense_replace and layer % freq == 0
        n, k = _moe_layout([i >= first and i % freq == 0 for i in range(L)], cfg)
        out |= {"n_experts": E, "top_k": cfg.int("num_experts_per_tok"),
                "d_ff_expert": cfg.int("moe_intermediate_size"),
                "n_shared_experts": cfg.int("n_shared_experts", default=0), "n_dense_layers": n, "moe_every": k,
                # e_score_correction_bias (E per MoE layer) exists with the aux-loss-free "noaux_tc" routing
                "router_bias": cfg.get("topk_method", "greedy" if cfg.model_type == "deepseek_v2" else "noaux_tc")
                == "noaux_tc"}
    mtp = cfg.int("num_nextn_predict_layers", default=0)
    if mtp:
        _warn(cfg, f"num_nextn_predict_layers={mtp}: the multi-token-prediction module is not modelled "
                   "(the main model only, as in the vendor's 671B)")
    return out


def _gpt_oss(cfg: _Cfg) -> dict:
    out = _decoder(cfg)
    L = out["n_layers"]
    # GptOssConfig default layer_types: sliding on even layers, full on odd ones
    local = _layer_types(cfg, L) or [bool((i + 1) % 2) for i in range(L)]
    out |= _windows(cfg, L, local, cfg.int("sliding_window", default=0))
    out |= {"n_experts": cfg.int("num_local_experts"), "top_k": cfg.int("num_experts_per_tok", "experts_per_token"),
            "d_ff_expert": out["d_ff"], "bias": bool(cfg.get("attention_bias", True)), "router_bias": True,
            "attn_sinks": True}
    return out


def _llama4(cfg: _Cfg) -> dict:
    out = _decoder(cfg)
    L = out["n_layers"]
    out["d_ff"] = cfg.int("intermediate_size_mlp")  # dense layers (Llama4TextMLP)
    E = cfg.int("num_local_experts")
    step = max(cfg.int("interleave_moe_layer_step", default=1), 1)
    moe_layers = cfg.get("moe_layers")
    moe_layers = set(moe_layers if moe_layers is not None else range(step - 1, L, step))
    n, k = _moe_layout([i in moe_layers for i in range(L)], cfg)
    out |= {"n_experts": E, "top_k": cfg.int("num_experts_per_tok"), "d_ff_expert": cfg.int("intermediate_size"),
            "n_shared_experts": 1,  # Llama4TextMoe: one shared expert of the routed experts' width
            "n_dense_layers": n, "moe_every": k}
    chunk = cfg.int("attention_chunk_size", default=0)
    if chunk:
        # no_rope_layers[i] == 0: a global NoPE layer; default every 4th (Llama4TextConfig)
        nope = cfg.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(L)]
        out |= {"attn_chunk": chunk, "global_every": _global_layout([not x for x in nope], cfg)}
    # use_qk_norm is an L2 norm without weights (Llama4TextL2Norm): nothing to count, qk_norm stays False
    out |= _attn_biases(cfg)
    return out


def _gemma3(cfg: _Cfg) -> dict:
    """Gemma 3 and Gemma 2: 4 RMSNorms per layer, tied embeddings, local layers with a few global ones."""
    out = _decoder(cfg)
    L = out["n_layers"]
    local = _layer_types(cfg, L)
    if local is None and cfg.model_type == "gemma2":
        local = [not bool(i % 2) for i in range(L)]  # Gemma2DecoderLayer: even layers sliding, odd global
    if local is None:
        p = cfg.int("sliding_window_pattern", "_sliding_window_pattern", default=6)
        local = [bool((i + 1) % p) for i in range(L)]  # Gemma3: every p-th layer global
    out |= _windows(cfg, L, local, cfg.int("sliding_window", default=4096))
    out |= {"qk_norm": cfg.model_type != "gemma2", "sandwich_norm": True}
    out |= _attn_biases(cfg)
    return out


def _gpt2(cfg: _Cfg) -> dict:
    h = cfg.int("n_embd")
    pos = cfg.int("n_positions", "n_ctx")
    return {"n_layers": cfg.int("n_layer"), "d_model": h, "n_heads": cfg.int("n_head"),
            "n_kv_heads": cfg.int("n_head"), "d_head": h // cfg.int("n_head"),
            "d_ff": cfg.int("n_inner", default=4 * h),
            "vocab": cfg.int("vocab_size"), "n_positions": pos, "max_context": pos, "gated_mlp": False,
            "tied_embeddings": True, "bias": True, "norm": "layernorm"}


def _opt(cfg: _Cfg) -> dict:
    h, H = cfg.int("hidden_size"), cfg.int("num_attention_heads")
    ctx = cfg.int("max_position_embeddings")
    w = cfg.int("word_embed_proj_dim", default=h)
    if w != h:
        _warn(cfg, f"word_embed_proj_dim={w} != hidden_size={h}: embeddings of width {w} and the project_in/"
                   f"project_out matrices are not modelled (counted as width {h})")
    if not cfg.get("do_layer_norm_before", True):
        _warn(cfg, "do_layer_norm_before=false (post-LayerNorm, no final LayerNorm): counted with one")
    if not cfg.get("layer_norm_elementwise_affine", True):
        _warn(cfg, "layer_norm_elementwise_affine=false: LayerNorm parameters are still counted")
    return {"n_layers": cfg.int("num_hidden_layers"), "d_model": h, "n_heads": H, "n_kv_heads": H, "d_head": h // H,
            "d_ff": cfg.int("ffn_dim"), "vocab": cfg.int("vocab_size"),
            "n_positions": ctx + 2,  # OPTLearnedPositionalEmbedding: 2 offset rows
            "max_context": ctx, "gated_mlp": False, "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)),
            "bias": bool(cfg.get("enable_bias", True)), "norm": "layernorm"}


def _falcon(cfg: _Cfg) -> dict:
    h, H = cfg.int("hidden_size"), cfg.int("num_attention_heads", "n_head")
    new = bool(cfg.get("new_decoder_architecture", False))
    if new:
        kv = cfg.int("num_kv_heads", "n_head_kv", default=H)
    else:
        kv = 1 if cfg.get("multi_query", True) else H
    parallel = bool(cfg.get("parallel_attn", True))
    if new and cfg.get("num_ln_in_parallel_attn", 2) == 2:
        _warn(cfg, "new_decoder_architecture: two LayerNorms per layer (ln_attn, ln_mlp); dse's parallel block "
                   f"counts one ({2 * h} parameters per layer fewer)")
        parallel = True
    if cfg.get("alibi", False):
        _warn(cfg, "alibi: the ALiBi bias adds no parameters; its FLOPs are not modelled")
    return {"n_layers": cfg.int("num_hidden_layers", "n_layer"), "d_model": h, "n_heads": H, "n_kv_heads": kv,
            "d_head": h // H, "d_ff": cfg.int("ffn_hidden_size", default=4 * h), "vocab": cfg.int("vocab_size"),
            "max_context": cfg.int("max_position_embeddings", default=2048), "gated_mlp": False,
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)), "bias": bool(cfg.get("bias", False)),
            "norm": "layernorm", "parallel_block": parallel}


#: model_type -> reader; text_config of multimodal wrappers is read as its own model_type
_READERS: dict[str, Callable[[_Cfg], dict]] = {
    "llama": _llama, "mistral": _llama, "mixtral": _llama, "qwen2": _llama, "qwen3": _llama, "qwen3_moe": _llama,
    "deepseek_v2": _deepseek, "deepseek_v3": _deepseek, "kimi_k2": _deepseek, "gpt_oss": _gpt_oss, "llama4": _llama4,
    "llama4_text": _llama4, "gemma2": _gemma3, "gemma3": _gemma3, "gemma3_text": _gemma3, "gpt2": _gpt2, "opt": _opt,
    "falcon": _falcon, "RefinedWeb": _falcon, "RefinedWebModel": _falcon,
}
SUPPORTED = tuple(sorted(_READERS))

#: class defaults of transformers' configuration classes for keys published configs leave out
_DEFAULTS = {
    "gemma3_text": {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131072, "tie_word_embeddings": True, "sliding_window": 4096},
    "llama4_text": {"tie_word_embeddings": False},
    "gemma2": {"tie_word_embeddings": True},  # Gemma2Config
}
#: parts of multimodal configs dse does not model
_UNMODELLED = {"vision_config": "vision tower", "audio_config": "audio tower", "vision_tower": "vision tower",
               "mm_projector_type": "multimodal projector"}


def resolve(path) -> Path:
    """The config.json a ``model.hf_config`` value names (a file, a folder, or a bundled name)."""
    p = Path(str(path)).expanduser()
    if p.is_dir():
        p = p / "config.json"
    if p.is_file():
        return p
    bundled = BUNDLED / (str(path).replace("/", "--").removesuffix(".json") + ".json")
    if bundled.is_file():
        return bundled
    known = sorted(f.stem.replace("--", "/") for f in BUNDLED.glob("*.json"))
    raise DesignError(f"model.hf_config={path}: no such file or folder with a config.json; bundled: {known}")


def read_config(path) -> tuple[dict, Path]:
    """The parsed config.json and its path (DesignError naming the file for unreadable JSON)."""
    file = resolve(path)
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DesignError(f"model.hf_config={file}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise DesignError(f"model.hf_config={file}: must hold a JSON object, not {type(data).__name__}")
    return data, file


def hf_model_fields(path) -> dict:
    """Every ``model.*`` field of a Hugging Face config.json: all Arch fields but ``NOT_IN_FILE`` (and ``name``)."""
    data, file = read_config(path)
    mt = data.get("model_type")
    if mt is None:
        raise DesignError(f"model.hf_config={file}: missing required key 'model_type'; supported: {list(SUPPORTED)}")
    if mt not in _READERS:
        raise DesignError(f"model.hf_config={file}: model_type {mt!r} is not supported; supported: {list(SUPPORTED)}")
    top = _Cfg(data, file, mt)
    parts = [f"the {part} ({key})" for key, part in _UNMODELLED.items() if data.get(key) is not None]
    if mt in ("llama4", "gemma3") and "vision_config" not in data:
        parts.insert(0, "the vision tower of this multimodal checkpoint")
    if parts:
        _warn(top, f"{', '.join(parts)} not modelled (text model only)")
    if mt in ("llama4", "gemma3"):
        text = data.get("text_config")
        if text is None and mt == "llama4":
            raise DesignError(f"model.hf_config={file}: missing required key 'text_config' (model_type 'llama4')")
        text = dict(text or data)
        inner = {"llama4": "llama4_text", "gemma3": "gemma3_text"}[mt]
        if mt == "llama4" and "tie_word_embeddings" in data and "tie_word_embeddings" not in text:
            text["tie_word_embeddings"] = data["tie_word_embeddings"]
        cfg = _Cfg(text, file, inner, _DEFAULTS.get(inner))
    else:
        cfg = _Cfg(data, file, mt, _DEFAULTS.get(mt))
    fields = _READERS[mt](cfg)
    return _complete(fields)


#: Arch fields a config.json does not describe (a property of the traffic, not of the model): kept from the config
NOT_IN_FILE = ("moe_imbalance", "features")


def _complete(fields: dict) -> dict:
    """Every Arch field a config.json describes: the file's values over the Arch defaults (ints, bools, str)."""
    out = {}
    for f in dataclasses.fields(Arch):
        if f.name in NOT_IN_FILE:
            continue
        v = fields.get(f.name, f.default)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out[f.name] = v
    return out


def from_hf_config(path) -> Arch:
    """The Arch of a Hugging Face config.json (or a folder holding one, or a bundled name)."""
    return make_arch(**hf_model_fields(path))
