"""model.hf_config / dse.from_hf_config: every supported model_type, errors, warnings and the CLI.

Configs not bundled in dse/data/hf_configs are written here with the values of the models' published
config.json (Hugging Face pages named per case); their counts are checked against published numbers
or the catalog entries whose counts tests/core/test_counts.py checks against published totals.
"""
import json
import warnings

import pytest

from dse import DesignError, from_hf_config, param_counts
from dse.app.build import build_arch, load_group, load_model
from dse.app.hf_config import SUPPORTED, HFConfigWarning, hf_model_fields

from tests.app.conftest import read_json, run_cli
from tests.conftest import DATA

HF = DATA / "hf_configs"

# huggingface.co/openai-community/gpt2 config.json (shape keys)
GPT2 = {"model_type": "gpt2", "activation_function": "gelu_new", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
        "n_layer": 12, "n_positions": 1024, "vocab_size": 50257}
# huggingface.co/facebook/opt-13b config.json
OPT13B = {"model_type": "opt", "hidden_size": 5120, "ffn_dim": 20480, "num_hidden_layers": 40,
          "num_attention_heads": 40, "max_position_embeddings": 2048, "vocab_size": 50272, "do_layer_norm_before": True,
          "word_embed_proj_dim": 5120, "activation_function": "relu"}
# huggingface.co/tiiuae/falcon-7b config.json
FALCON7B = {"model_type": "falcon", "alibi": False, "bias": False, "hidden_size": 4544, "multi_query": True,
            "new_decoder_architecture": False, "num_attention_heads": 71, "num_hidden_layers": 32,
            "parallel_attn": True, "vocab_size": 65024}
# huggingface.co/mistralai/Mistral-7B-v0.1 config.json
MISTRAL7B = {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 32768,
             "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "sliding_window": 4096,
             "tie_word_embeddings": False, "vocab_size": 32000}
# huggingface.co/Qwen/Qwen2.5-7B config.json; card: 7.61B parameters, 6.53B non-embedding
QWEN25_7B = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "max_position_embeddings": 131072,
             "max_window_layers": 28, "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
             "sliding_window": 131072, "tie_word_embeddings": False, "use_sliding_window": False, "vocab_size": 152064}
# huggingface.co/deepseek-ai/DeepSeek-V2-Lite config.json; DeepSeek-V2 paper (arXiv 2405.04434) App. B:
# 15.7B parameters, 2.4B activated
V2_LITE = {"model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944, "kv_lora_rank": 512,
           "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
           "moe_intermediate_size": 1408, "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6,
           "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_attention_heads": 16, "num_key_value_heads": 16,
           "num_hidden_layers": 27, "topk_method": "greedy", "vocab_size": 102400, "tie_word_embeddings": False,
           "max_position_embeddings": 163840}
# huggingface.co/google/gemma-3-1b-it config.json (text only); Gemma 3 report Tab. 1: 302M embedding, 698M non-embedding
GEMMA3_1B = {"model_type": "gemma3_text", "head_dim": 256, "hidden_size": 1152, "intermediate_size": 6912,
             "max_position_embeddings": 32768, "num_attention_heads": 4, "num_hidden_layers": 26,
             "num_key_value_heads": 1, "sliding_window": 512, "sliding_window_pattern": 6, "vocab_size": 262144}

# huggingface.co/google/gemma-2-9b config.json; Gemma 2 report (arXiv 2408.00118) Tab. 1: 8,324,201,984
# non-embedding parameters (its 917,962,752 embedding parameters count the 256,128-token vocabulary)
GEMMA2_9B = {"model_type": "gemma2", "head_dim": 256, "hidden_size": 3584, "intermediate_size": 14336,
             "max_position_embeddings": 8192, "num_attention_heads": 16, "num_hidden_layers": 42,
             "num_key_value_heads": 8, "sliding_window": 4096, "vocab_size": 256000}


def write(tmp_path, cfg, name="config.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


def quiet(path):
    """from_hf_config for a file that must give no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", HFConfigWarning)
        return from_hf_config(path)


def test_supported_model_types_cover_the_issue():
    for mt in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "deepseek_v2", "deepseek_v3",
               "gpt_oss", "llama4", "gemma3", "gpt2", "opt", "falcon"):
        assert mt in SUPPORTED


@pytest.mark.parametrize("cfg,catalog", [(GPT2, "gpt2"), (OPT13B, "opt_13b"), (FALCON7B, "falcon_7b")],
                         ids=["gpt2", "opt", "falcon"])
def test_classic_model_types_equal_their_catalog_entries(tmp_path, cfg, catalog):
    arch, ref = quiet(write(tmp_path, cfg)), load_model(catalog)
    assert int(param_counts(arch)["params"]) == int(param_counts(ref)["params"])
    for k in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_ff", "vocab", "n_positions", "gated_mlp",
              "tied_embeddings", "bias", "norm", "parallel_block"):
        assert getattr(arch, k) == getattr(ref, k), k


def test_gpt2_and_falcon_published_totals(tmp_path):
    assert int(param_counts(quiet(write(tmp_path, GPT2, "a.json")))["params"]) == 124_439_808
    assert int(param_counts(quiet(write(tmp_path, FALCON7B, "b.json")))["params"]) == 6_921_720_704


def test_opt_positions_have_the_two_offset_rows(tmp_path):
    a = quiet(write(tmp_path, OPT13B))
    assert (a.n_positions, a.max_context) == (2050, 2048)


def test_mistral_window_on_every_layer(tmp_path):
    a = quiet(write(tmp_path, MISTRAL7B))
    assert (a.window, a.global_every, a.max_context) == (4096, 0, 32768)
    assert int(param_counts(a)["params"]) == 7_241_732_096  # HF mistralai/Mistral-7B-v0.1


def test_qwen2_qkv_bias_and_disabled_window(tmp_path):
    a = quiet(write(tmp_path, QWEN25_7B))
    assert a.qkv_bias and not a.bias and a.window == 0  # use_sliding_window: false
    c = param_counts(a)
    assert round(float(c["params"]) / 1e7) == 762  # 7,615,616,512: the card's "7.61B" truncates; HF shows 7.62B
    assert round(float(c["params_non_embedding"]) / 1e7) == 653  # card: 6.53B non-embedding


def test_deepseek_v2_lite(tmp_path):
    a = quiet(write(tmp_path, V2_LITE))
    assert (a.q_lora_rank, a.kv_lora_rank, a.d_head, a.n_dense_layers, a.n_shared_experts) == (0, 512, 192, 1, 2)
    assert not a.router_bias  # greedy routing: no e_score_correction_bias
    c = param_counts(a)
    assert round(float(c["params"]) / 1e8) == 157
    # 2,451,435,008 without the input embedding (DeepSeek's convention): the paper's "2.4B" truncates
    assert int(float(c["params_active"]) / 1e8) == 24


def test_gemma3_text_top_level_and_layer_types(tmp_path):
    a = quiet(write(tmp_path, GEMMA3_1B, "a.json"))
    assert (a.window, a.global_every, a.qk_norm, a.sandwich_norm, a.tied_embeddings) == (512, 6, True, True, True)
    c = param_counts(a)
    assert round(float(c["embedding_params"]) / 1e6) == 302 and round(float(c["params_non_embedding"]) / 1e6) == 698
    # transformers >= 4.53 writes layer_types instead of sliding_window_pattern: the same model
    types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(26)]
    b = quiet(write(tmp_path, {**{k: v for k, v in GEMMA3_1B.items() if k != "sliding_window_pattern"},
                               "layer_types": types}, "b.json"))
    assert a == b


def test_gemma2_alternating_window_and_published_count(tmp_path):
    a = quiet(write(tmp_path, GEMMA2_9B))
    assert (a.window, a.global_every, a.qk_norm, a.sandwich_norm, a.tied_embeddings) == (4096, 2, False, True, True)
    c = param_counts(a)
    assert int(c["params_non_embedding"]) == 8_324_201_984
    assert int(c["embedding_params"]) == 256_000 * 3584


@pytest.mark.parametrize("name,checks", [
    ("meta-llama--Meta-Llama-3.1-8B", {"n_layers": 32, "n_kv_heads": 8, "max_context": 131072}),
    ("mistralai--Mixtral-8x7B-v0.1", {"n_experts": 8, "top_k": 2, "d_ff_expert": 14336, "window": 0}),
    ("Qwen--Qwen3-32B", {"qk_norm": True, "n_experts": 0, "window": 0}),
    ("Qwen--Qwen3-30B-A3B", {"n_experts": 128, "top_k": 8, "d_ff_expert": 768, "qk_norm": True}),
    ("openai--gpt-oss-120b", {"window": 128, "global_every": 2, "attn_sinks": True, "bias": True, "router_bias": True}),
    ("meta-llama--Llama-4-Maverick-17B-128E-Instruct",
     {"moe_every": 2, "n_shared_experts": 1, "d_ff": 16384, "attn_chunk": 8192, "global_every": 4, "qk_norm": False}),
    ("deepseek-ai--DeepSeek-V3", {"kv_lora_rank": 512, "q_lora_rank": 1536, "n_dense_layers": 3, "router_bias": True}),
    ("moonshotai--Kimi-K2-Instruct", {"n_experts": 384, "n_heads": 64, "n_dense_layers": 1, "router_bias": True}),
])
def test_bundled_model_types_map_their_fields(name, checks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HFConfigWarning)  # their warnings: tests/core/test_catalog_counts.py
        a = from_hf_config(HF / f"{name}.json")
    for k, v in checks.items():
        assert getattr(a, k) == v, k


def test_folder_and_bundled_name(tmp_path):
    write(tmp_path, GPT2)
    assert quiet(tmp_path) == quiet(tmp_path / "config.json")
    assert quiet("openai/gpt-oss-120b") == quiet(HF / "openai--gpt-oss-120b.json")


def test_file_fields_replace_every_field_of_the_section():
    # a catalog section (gpt2: biases, LayerNorm, learned positions) plus hf_config: nothing of gpt2 leaks in
    section = {**load_group("model", "gpt2"), "hf_config": str(HF / "mistralai--Mixtral-8x7B-v0.1.json")}
    assert build_arch(section) == quiet(HF / "mistralai--Mixtral-8x7B-v0.1.json")
    assert "moe_imbalance" not in hf_model_fields(HF / "mistralai--Mixtral-8x7B-v0.1.json")  # a knob, not in the file


def test_unsupported_model_type_names_it_and_the_supported_ones(tmp_path):
    with pytest.raises(DesignError, match=r"model_type 'bert' is not supported; supported: \[.*'llama'.*'qwen3_moe'"):
        from_hf_config(write(tmp_path, {"model_type": "bert", "hidden_size": 768}))


def test_missing_key_and_bad_file_name_the_file(tmp_path):
    cfg = {k: v for k, v in MISTRAL7B.items() if k != "num_hidden_layers"}
    with pytest.raises(DesignError,
                       match=r"a\.json: missing required key 'num_hidden_layers' \(model_type 'mistral'\)"):
        from_hf_config(write(tmp_path, cfg, "a.json"))
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(DesignError, match=r"b\.json: not a readable JSON file"):
        from_hf_config(tmp_path / "b.json")
    with pytest.raises(DesignError, match=r"model_type"):
        from_hf_config(write(tmp_path, {"hidden_size": 1}, "c.json"))
    with pytest.raises(DesignError, match=r"no such file"):
        from_hf_config(tmp_path / "nowhere")


def test_unmodelled_parts_warn_once_naming_them(tmp_path):
    with pytest.warns(HFConfigWarning, match="num_nextn_predict_layers=1: the multi-token-prediction module") as w:
        from_hf_config(HF / "deepseek-ai--DeepSeek-V3.json")
    assert len(w) == 1
    llama4 = json.loads((HF / "meta-llama--Llama-4-Scout-17B-16E-Instruct.json").read_text())
    with pytest.warns(HFConfigWarning, match=r"vision tower \(vision_config\) not modelled") as w:
        from_hf_config(write(tmp_path, {**llama4, "vision_config": {"hidden_size": 1408}}))
    assert len(w) == 1
    with pytest.warns(HFConfigWarning, match="word_embed_proj_dim=512"):
        from_hf_config(write(tmp_path, {**OPT13B, "hidden_size": 1024, "num_attention_heads": 16,
                                        "word_embed_proj_dim": 512}, "opt350.json"))


def test_moe_layers_off_pattern_keep_the_count(tmp_path):
    cfg = json.loads((HF / "Qwen--Qwen3-30B-A3B.json").read_text())
    with pytest.warns(HFConfigWarning, match="same count 46"):
        a = from_hf_config(write(tmp_path, {**cfg, "mlp_only_layers": [0, 5]}))
    assert a.n_experts == 128 and (48 - a.n_dense_layers) // a.moe_every == 46


@pytest.mark.slow
def test_cli_evaluate_reads_hf_config(tmp_path):
    path = HF / "mistralai--Mixtral-8x7B-v0.1.json"
    run_cli("task=evaluate", f"model.hf_config={path}", f"hydra.run.dir={tmp_path}/ev", cwd=tmp_path)
    r = read_json(tmp_path / "ev" / "result.json")
    assert r["params"] == 46_702_792_704  # dse/data/modern_models.csv
    assert r["model.n_layers"] == 32 and r["model.d_model"] == 4096
