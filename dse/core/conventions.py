"""Counting conventions: every choice a cost model makes, as named, static switches.

``DEFAULT`` is physical (the README's table explains each row). ``LLM_VIEWER`` reproduces the
rules of LLM-Viewer (Yuan et al. 2024, "LLM Inference Unveiled: Survey and Roofline Model
Insights", arXiv 2402.16363, github.com/hahnyuan/LLM-Viewer), so its published numbers can be
matched to the digit and the differences seen switch by switch. ``KIM2023`` follows the counting of
Kim et al. 2023, "Full Stack Optimization of Transformer Inference: a Survey" (arXiv 2302.14017, §2.2.1,
Fig. 4-6, Tab. 3 and 11), the paper's case study (``task=casestudy``): the Transformer blocks only (no
embedding, final norm or LM head), every operator unfused with its operands read from and its result
written to memory (score matrices included), ideal reuse within an operator, no vector weights in the
traffic; a decoder generates every token with a KV cache and no prompt.
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
    #: count the LM head (a decoder's output projection onto the vocabulary).
    lm_head: bool = True
    #: multi-head latent attention in the absorbed form (W_UK, W_UV folded into q and o; attention
    #: in the latent) in prefill steps / in decode steps; else expanded (kv_b up-projects every key).
    #: DeepSeek-V2 App. C; vLLM and SGLang run prefill expanded and decode absorbed.
    mla_absorb_prefill: bool = False
    mla_absorb_decode: bool = True
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

#: Kim et al. 2023 (arXiv 2302.14017) §2.2.1: "we are counting the multiplication and addition from a MAC
#: operation separately"; 8-bit operands; MOPs = bytes read and written by each operator with ideal reuse
#: (Tab. 3: a projection moves d·d + 2·d·l bytes, QKᵀ reads Q and K and writes the h·l² scores, softmax
#: reads and writes them, SV reads them and V); the totals of Tab. 3 and 11 are the sums of the
#: per-layer blocks (12 layers of GPT-2 carry 22.12 GFLOPs at 128 tokens: no 50257-wide LM head, which
#: would add 9.9 G). Norms, GELU and residual adds are the "Other" row (Tab. 3, ~1% of FLOPs).
KIM2023 = Conventions(
    name="kim2023", fused_attention=False, vector_weights=False, embedding_and_final_norm=False,
    lm_head=False, efficiency=False, peak_rule="all_le_8")

PROFILES = {"default": DEFAULT, "llm_viewer": LLM_VIEWER, "kim2023": KIM2023}


def conventions(name: str = "default", **overrides) -> Conventions:
    """A named profile, optionally with some switches changed."""
    if name not in PROFILES:
        from dse.core.design import DesignError
        raise DesignError(f"conventions={name!r}: unknown profile; available: {sorted(PROFILES)}")
    return replace(PROFILES[name], **overrides)
