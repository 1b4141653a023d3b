"""Counting conventions: every choice a cost model makes, as named, static switches.

``DEFAULT`` is physical (the README's table explains each row). ``LLM_VIEWER`` reproduces the
rules of LLM-Viewer (Yuan et al. 2024, "LLM Inference Unveiled: Survey and Roofline Model
Insights", arXiv 2402.16363, github.com/hahnyuan/LLM-Viewer), so its published numbers can be
matched to the digit and the differences seen switch by switch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Conventions:
    name: str = "default"
    #: causal attention counts only the unmasked query-key pairs (q·K + q(q+1)/2), not q·(K+q).
    causal_halving: bool = True
    #: a decode step attends over the cache plus the new token (K+1 keys), not K.
    attend_new_token: bool = True
    #: one fused attention kernel (FlashAttention, Dao et al. 2022): the score matrix never
    #: leaves the chip. Off: qk_matmul, softmax and sv_matmul with the scores in memory.
    fused_attention: bool = True
    #: the query read of prefill QKᵀ counted with the KV head count (an LLM-Viewer quirk).
    query_read_kv_heads: bool = False
    #: norm FLOPs per element; 0 = by type (LayerNorm 7, RMSNorm 4).
    norm_flops: float = 0.0
    #: count the weight vectors of norms and biases as memory traffic.
    vector_weights: bool = True
    #: elements moved per residual add per token: 3 (read two, write one) or 2.
    add_bytes_elems: float = 3.0
    #: the MLP activation runs over d_model elements (an LLM-Viewer simplification), not d_ff.
    activation_over_d_model: bool = False
    #: FLOPs per activation element; 0 = by type (gated SiLU·gate 5, GELU 8).
    activation_flops: float = 0.0
    #: activation elements moved per element; 0 = by type (gated: read 2 write 1; plain: 2).
    activation_bytes_elems: float = 0.0
    #: FLOPs per multiply-add of the LM head (2 physical; LLM-Viewer counts 1).
    lm_head_flops_per_mac: float = 2.0
    #: the LM head's activation traffic is per sequence (b·h + b·V); False: h + V (LLM-Viewer).
    lm_head_act_per_sequence: bool = True
    #: count the embedding lookup and the final norm.
    embedding_and_final_norm: bool = True
    #: apply the hardware's efficiencies and per-kernel overhead (False: the ideal roofline).
    efficiency: bool = True
    #: peak rule: "operands" = the precision of each op's operands (max of their bits);
    #: "all_le_8" = the int8 peak for every op iff w, a and kv bits are all <= 8, else fp16.
    peak_rule: str = "operands"
    #: per-op time: "max" of compute and memory (perfect overlap) or their "sum" (none).
    overlap: str = "max"


DEFAULT = Conventions()

LLM_VIEWER = Conventions(
    name="llm_viewer", causal_halving=False, attend_new_token=False, fused_attention=False,
    query_read_kv_heads=True, norm_flops=7.0, vector_weights=False, add_bytes_elems=2.0,
    activation_over_d_model=True, activation_flops=2.0, activation_bytes_elems=3.0,
    lm_head_flops_per_mac=1.0, lm_head_act_per_sequence=False, embedding_and_final_norm=False,
    efficiency=False, peak_rule="all_le_8")

PROFILES = {"default": DEFAULT, "llm_viewer": LLM_VIEWER}


def conventions(name: str = "default", **overrides) -> Conventions:
    """A named profile, optionally with some switches changed."""
    if name not in PROFILES:
        from dse.core.design import DesignError
        raise DesignError(f"conventions={name!r}: unknown profile; available: {sorted(PROFILES)}")
    return replace(PROFILES[name], **overrides)
