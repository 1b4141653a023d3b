"""``Arch.features``: the parts of the cost model a design leaves out change no number.

A dense model traces no experts, a grouped-KV model no latent attention, a model without local
layers no windowed or chunked geometry (dse/core/design.py, ``specialize``). The check is against
the general computation (every part traced and switched off by its numbers), to rounding (1e-12
relative in float64; the two compile to differently ordered arithmetic), for models that use each part.
"""
import dataclasses

import jax
import numpy as np
import pytest

from dse import Design, Quant, Workload, evaluate
from dse.app.build import load_model
from dse.core.design import FEATURES, DesignError, needed_features, specialize, validate_design

evaluate_jit = jax.jit(evaluate, static_argnames=("conv", "smooth"))


@pytest.mark.parametrize("name, expected", [
    ("llama2_7b", ("gqa",)),
    ("deepseek_v3", ("mla", "moe")),
    ("gpt_oss_20b", ("gqa", "moe", "window")),
    ("llama4_scout", ("gqa", "moe", "chunk")),
])
def test_specialized_model_equals_general(name, expected, h100):
    arch = load_model(name)
    assert arch.features == FEATURES  # a loaded model traces everything until specialized
    narrow = specialize(arch)
    assert narrow.features == expected
    for work in (Workload(batch=24, prompt_len=3000, gen_len=700), Workload(batch=1, prompt_len=100, gen_len=9000)):
        general = evaluate_jit(Design(arch, Quant(8, 16, 8), work), h100)
        special = evaluate_jit(Design(narrow, Quant(8, 16, 8), work), h100)
        assert general.keys() == special.keys()
        for k in general:
            np.testing.assert_allclose(np.asarray(special[k]), np.asarray(general[k]), rtol=1e-12, atol=0, err_msg=k)


def test_features_of_a_sweep_cover_every_value():
    dense = load_model("llama2_7b")
    assert needed_features(dense) == ("gqa",)
    assert needed_features(dense, kv_lora_rank=[0, 512], n_experts=[0, 8]) == ("gqa", "mla", "moe")
    assert needed_features(dense, window=np.array([4096.0]), attn_chunk=[0.0, 8192.0]) == ("gqa", "window", "chunk")
    seen = []  # a traced arch cannot be narrowed: it keeps every part

    def trace(rank):
        seen.append(specialize(dataclasses.replace(dense, kv_lora_rank=rank)).features)
        return rank
    jax.jit(trace)(512.0)
    assert seen == [FEATURES]


def test_a_left_out_part_in_use_is_an_error():
    arch = dataclasses.replace(load_model("deepseek_v3"), features=("gqa", "moe"))
    with pytest.raises(DesignError, match=r"model\.kv_lora_rank=512: needs the cost model's 'mla' part"):
        validate_design(Design(arch))
