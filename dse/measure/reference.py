"""A reference decoder in plain JAX, timed on the device at hand, to validate the cost model.

Random weights; RMSNorm; gated (SwiGLU) or plain (GELU) MLP; MHA, GQA or MQA; a KV cache.
``prefill`` processes the prompt with the full causal score matrix (masked, as plain JAX
computes it); ``decode`` processes one token per sequence against a cache of ``k`` entries plus
the new token. Both return the logits of the last token only. Weights, activations and cache are
``dtype``: float32 by default (a CPU has no fast 16-bit units), bfloat16 to validate the 16-bit
kernels of a GPU or TPU. Laid out per layer (a Python loop: one set of kernels per layer, as in the
cost model's per-layer operators).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from dse.measure.roofline import timeit

#: the reference's precisions and the hardware.peak_flops entry each runs at
PEAK_KEYS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class RefConfig:
    n_layers: int = 6
    d_model: int = 1024
    n_heads: int = 16
    n_kv_heads: int = 16
    d_ff: int = 2816
    vocab: int = 8192
    gated: bool = True
    dtype: str = "float32"  # float32, bfloat16 or float16: weights, activations and KV cache

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def bits(self) -> float:
        return 8.0 * jnp.dtype(self.dtype).itemsize

    @property
    def peak_key(self) -> str:
        """The hardware.peak_flops entry this precision runs at."""
        return PEAK_KEYS[self.dtype]


def init_params(cfg: RefConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def w(*shape):
        return jnp.asarray(rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[0])), cfg.dtype)

    def ones(n):
        return jnp.ones(n, cfg.dtype)

    h, d = cfg.d_model, cfg.d_head
    layers = []
    for _ in range(cfg.n_layers):
        layer = {"attn_norm": ones(h), "wq": w(h, cfg.n_heads * d), "wk": w(h, cfg.n_kv_heads * d),
                 "wv": w(h, cfg.n_kv_heads * d), "wo": w(cfg.n_heads * d, h), "mlp_norm": ones(h),
                 "w_down": w(cfg.d_ff, h), "w_up": w(h, cfg.d_ff)}
        if cfg.gated:
            layer["w_gate"] = w(h, cfg.d_ff)
        layers.append(layer)
    return {"embed": w(cfg.vocab, h), "layers": layers, "final_norm": ones(h), "lm_head": w(h, cfg.vocab)}


def _rms(x, g):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * g


def _mlp(cfg, p, x):
    if cfg.gated:
        return (jax.nn.silu(x @ p["w_gate"]) * (x @ p["w_up"])) @ p["w_down"]
    return jax.nn.gelu(x @ p["w_up"]) @ p["w_down"]


def _qkv(cfg, p, x):
    """Heads-major layout (batch, kv head, [group,] token, d_head), as KV caches are stored."""
    b, t, _ = x.shape
    q = (x @ p["wq"]).reshape(b, t, cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads, cfg.d_head).transpose(0, 2, 3, 1, 4)
    k = (x @ p["wk"]).reshape(b, t, cfg.n_kv_heads, cfg.d_head).transpose(0, 2, 1, 3)
    v = (x @ p["wv"]).reshape(b, t, cfg.n_kv_heads, cfg.d_head).transpose(0, 2, 1, 3)
    return q, k, v


def prefill_attention(cfg: RefConfig, q, k, v, mask):
    """Causal attention over the whole prompt with the full (masked) score matrix: (b, t, heads·d)."""
    b, t = q.shape[0], q.shape[3]
    s = jnp.einsum("bhgqd,bhkd->bhgqk", q, k) * float(cfg.d_head) ** -0.5
    a = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), axis=-1)
    return jnp.einsum("bhgqk,bhkd->bqhgd", a, v).reshape(b, t, -1)


def decode_attention(cfg: RefConfig, q, k, v, ck, cv):
    """One query per sequence (b, kv head, group, d) against a cache of k entries plus the new key."""
    s_old = jnp.einsum("bhgd,bhkd->bhgk", q, ck)
    s_new = jnp.einsum("bhgd,bhkd->bhgk", q, k)
    a = jax.nn.softmax(jnp.concatenate([s_old, s_new], -1) * float(cfg.d_head) ** -0.5, axis=-1)
    return jnp.einsum("bhgk,bhkd->bhgd", a[..., :-1], cv) + jnp.einsum("bhgk,bhkd->bhgd", a[..., -1:], v)


def prefill(cfg: RefConfig, params, tokens):
    """Logits of the last token and the KV cache of a prompt ``tokens`` (batch, length)."""
    x = params["embed"][tokens]
    b, t, _ = x.shape
    mask = jnp.tril(jnp.ones((t, t), bool))
    cache = []
    for p in params["layers"]:
        q, k, v = _qkv(cfg, p, _rms(x, p["attn_norm"]))
        x = x + prefill_attention(cfg, q, k, v, mask) @ p["wo"]
        x = x + _mlp(cfg, p, _rms(x, p["mlp_norm"]))
        cache.append((k, v))
    return _rms(x[:, -1], params["final_norm"]) @ params["lm_head"], cache


def decode(cfg: RefConfig, params, cache, token):
    """Logits of one new token per sequence against a cache of k entries (attends k + 1 keys)."""
    x = params["embed"][token][:, None]
    b = x.shape[0]
    for p, (ck, cv) in zip(params["layers"], cache):
        q, k, v = _qkv(cfg, p, _rms(x, p["attn_norm"]))
        x = x + decode_attention(cfg, q[:, :, :, 0], k, v, ck, cv).reshape(b, 1, -1) @ p["wo"]
        x = x + _mlp(cfg, p, _rms(x, p["mlp_norm"]))
    return _rms(x[:, -1], params["final_norm"]) @ params["lm_head"]


def time_case(cfg: RefConfig, params, phase: str, batch: int, length: int, repeats: int = 5) -> float:
    """Seconds of one prefill of ``length`` tokens or one decode step at KV length ``length``: the best
    of the repeats, as the microbenchmarks that parameterize the prediction take theirs (a burst of
    load on a shared machine only slows a repeat down; a median of 5 let one CI run's cases read
    30% slower than its own microbenchmarks)."""
    rng = np.random.default_rng(1)
    if phase == "prefill":
        tokens = jnp.asarray(rng.integers(0, cfg.vocab, (batch, length)))
        fn = jax.jit(lambda p, t: prefill(cfg, p, t)[0])
        return timeit(fn, params, tokens, repeats=repeats, best=True)
    shape = (batch, cfg.n_kv_heads, length, cfg.d_head)
    cache = [(jnp.asarray(rng.standard_normal(shape, dtype=np.float32), cfg.dtype),
              jnp.asarray(rng.standard_normal(shape, dtype=np.float32), cfg.dtype)) for _ in range(cfg.n_layers)]
    token = jnp.asarray(rng.integers(0, cfg.vocab, (batch,)))
    fn = jax.jit(lambda p, c, t: decode(cfg, p, c, t))
    return timeit(fn, params, cache, token, repeats=repeats, best=True)
