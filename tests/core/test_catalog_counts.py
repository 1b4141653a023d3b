"""Parameter counts of current models against published numbers, through ``model.hf_config`` and the catalog.

Exact totals and active counts (both conventions) come from dse/data/modern_models.csv (Hugging Face
safetensors / keras-hub metadata, each reproduced by an independent hand count from the config);
the other models are checked against their model cards and papers at the published rounding.
"""
import csv
import warnings

import pytest

from dse import from_hf_config, param_counts
from dse.app.build import build_arch, load_model
from dse.app.hf_config import HFConfigWarning

from tests.conftest import DATA

ROWS = list(csv.DictReader(open(DATA / "modern_models.csv")))
#: modern_models.csv model -> catalog name
CATALOG = {"Mixtral-8x7B": "mixtral_8x7b", "DeepSeek-V3 (= R1)": "deepseek_v3", "Qwen3-30B-A3B": "qwen3_30b_a3b",
           "gpt-oss-120b": "gpt_oss_120b", "Llama-4-Scout-17B-16E": "llama4_scout",
           "Llama-3.1-405B (dense)": "llama3_1_405b"}
#: the one-line warnings each bundled file must give (parts dse does not model)
EXPECTED_WARNINGS = {"deepseek-ai--DeepSeek-V3.json": "num_nextn_predict_layers",
                     "meta-llama--Llama-4-Scout-17B-16E-Instruct.json": "vision tower",
                     "meta-llama--Llama-4-Maverick-17B-128E-Instruct.json": "vision tower"}


def counts(arch):
    return {k: int(v) for k, v in param_counts(arch).items()}


def read_hf(path):
    """build_arch({"hf_config": path}) (the CLI's path), checking the warnings the file must give."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arch = build_arch({"hf_config": str(path)})
    got = [str(w.message) for w in caught if issubclass(w.category, HFConfigWarning)]
    want = EXPECTED_WARNINGS.get(path.name)
    assert [want in m for m in got] == ([True] if want else []), got
    return arch


def test_every_csv_model_has_a_catalog_entry():
    assert sorted(r["model"] for r in ROWS) == sorted(CATALOG)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r["model"])
@pytest.mark.parametrize("via", ["hf_config", "catalog"])
def test_counts_equal_modern_models_csv(row, via):
    arch = read_hf(DATA / row["hf_config"]) if via == "hf_config" else load_model(CATALOG[row["model"]])
    c = counts(arch)
    assert c["params"] == int(row["params_total_exact"])
    assert c["params_active"] == int(row["params_active_without_input_embedding"])
    assert c["params_active_with_embedding"] == int(row["params_active_with_input_embedding"])


#: catalog name -> bundled config.json (verbatim; dse/data/README.md)
FILES = {"mixtral_8x7b": "mistralai--Mixtral-8x7B-v0.1", "mixtral_8x22b": "mistralai--Mixtral-8x22B-v0.1",
         "deepseek_v3": "deepseek-ai--DeepSeek-V3", "qwen3_30b_a3b": "Qwen--Qwen3-30B-A3B",
         "qwen3_235b_a22b": "Qwen--Qwen3-235B-A22B", "qwen3_32b": "Qwen--Qwen3-32B",
         "gpt_oss_20b": "openai--gpt-oss-20b", "gpt_oss_120b": "openai--gpt-oss-120b",
         "llama4_scout": "meta-llama--Llama-4-Scout-17B-16E-Instruct",
         "llama4_maverick": "meta-llama--Llama-4-Maverick-17B-128E-Instruct",
         "llama3_1_405b": "meta-llama--Meta-Llama-3.1-405B", "kimi_k2": "moonshotai--Kimi-K2-Instruct"}


@pytest.mark.parametrize("name", sorted(FILES))
def test_catalog_entry_is_its_config_json(name):
    assert load_model(name) == read_hf(DATA / "hf_configs" / f"{FILES[name]}.json")


def _rounds_to(x, published, unit):
    """``x`` written to the published precision (``unit``) is the published number."""
    return round(x / unit) == round(published / unit)


# Published counts at their rounding: (catalog name, key, published, unit, source).
PUBLISHED = [
    # Qwen3 model cards (huggingface.co/Qwen/<name>): total, activated (with input embedding), non-embedding
    ("qwen3_32b", "params", 32.8e9, 0.1e9, "Qwen/Qwen3-32B card: 32.8B"),
    ("qwen3_32b", "params_non_embedding", 31.2e9, 0.1e9, "Qwen/Qwen3-32B card: 31.2B non-embedding"),
    ("qwen3_30b_a3b", "params_non_embedding", 29.9e9, 0.1e9, "Qwen/Qwen3-30B-A3B card: 29.9B non-embedding"),
    ("qwen3_235b_a22b", "params", 235e9, 1e9, "Qwen/Qwen3-235B-A22B card: 235B"),
    ("qwen3_235b_a22b", "params_active_with_embedding", 22e9, 1e9, "Qwen/Qwen3-235B-A22B card: 22B activated"),
    ("qwen3_235b_a22b", "params_non_embedding", 234e9, 1e9, "Qwen/Qwen3-235B-A22B card: 234B non-embedding"),
    # gpt-oss model card (arXiv 2508.10925) Table 1
    ("gpt_oss_20b", "params", 20.91e9, 0.01e9, "gpt-oss model card Tab. 1: 20.91B total"),
    ("gpt_oss_20b", "params_active", 3.61e9, 0.01e9, "gpt-oss model card Tab. 1: 3.61B active"),
    ("gpt_oss_120b", "params_active", 5.13e9, 0.01e9, "gpt-oss model card Tab. 1: 5.13B active"),
    # Mistral blog "Cheaper, Better, Faster, Stronger" (2024-04-17): 141B total, 39B active of 8x22B
    ("mixtral_8x22b", "params", 141e9, 1e9, "Mistral blog: 141B"),
    ("mixtral_8x22b", "params_active_with_embedding", 39e9, 1e9, "Mistral blog: 39B active"),
    # Meta "The Llama 4 herd" (2025-04-05) and model card: 17B activated
    ("llama4_maverick", "params_active_with_embedding", 17e9, 1e9, "Llama 4 card: 17B activated"),
    ("llama4_scout", "params_active_with_embedding", 17e9, 1e9, "Llama 4 card: 17B activated"),
    # Kimi K2 model card (huggingface.co/moonshotai/Kimi-K2-Instruct): 1T total, 32B activated
    ("kimi_k2", "params", 1e12, 1e12, "Kimi K2 card: 1T total"),
    ("kimi_k2", "params_active", 32e9, 1e9, "Kimi K2 card: 32B activated"),
    # Gemma 3 technical report (arXiv 2503.19786) Table 1: 25,600M non-embedding parameters of the 27B model
    ("gemma3_27b", "params_non_embedding", 25_600e6, 1e6, "Gemma 3 report Tab. 1: 25,600M non-embedding"),
]


@pytest.mark.parametrize("name,key,published,unit,source", PUBLISHED, ids=[f"{p[0]}-{p[1]}" for p in PUBLISHED])
def test_counts_round_to_published(name, key, published, unit, source):
    assert _rounds_to(counts(load_model(name))[key], published, unit), source


def test_llama4_maverick_total_near_meta_400b():
    # Meta states "400B total" for the multimodal checkpoint; the text model alone is 400.71B (0.18% above):
    # 24 MoE layers of 128 routed + 1 shared expert of width 8192, 24 dense layers of width 16384 (transformers'
    # Llama4TextDecoderLayer), so the statement truncates rather than rounds.
    assert abs(counts(load_model("llama4_maverick"))["params"] / 400e9 - 1) < 0.0025


def test_gemma3_27b_embedding_matches_report_with_projector():
    # Gemma 3 report Tab. 1: 1,416M embedding parameters = 262,208 x 5,376 (dse) + the vision-to-text projector
    # (1152 x 5376 weights and its 1152 norm scales; transformers' Gemma3MultiModalProjector), not modelled by dse.
    emb = counts(load_model("gemma3_27b"))["embedding_params"]
    assert emb == 262_208 * 5376
    assert _rounds_to(emb + 1152 * 5376 + 1152, 1_416e6, 1e6)


def test_gemma3_27b_catalog_equals_its_text_config(tmp_path):
    # google/gemma-3-27b-it config.json text_config as published (keys left out take Gemma3TextConfig defaults)
    import json
    cfg = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
           "text_config": {"head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504,
                           "model_type": "gemma3_text",
                           "num_attention_heads": 32, "num_hidden_layers": 62, "num_key_value_heads": 16,
                           "query_pre_attn_scalar": 168, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                           "sliding_window": 1024},
           "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model", "num_hidden_layers": 27}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.warns(HFConfigWarning, match="vision tower"):
        arch = from_hf_config(tmp_path)
    assert arch == load_model("gemma3_27b")


def test_llama3_1_8b_file_equals_published_and_catalog_llama3_8b():
    # Llama-3.1-8B: 8,030,261,248 parameters (HF safetensors), the same shape as Llama-3-8B but a 128k context
    arch = read_hf(DATA / "hf_configs" / "meta-llama--Meta-Llama-3.1-8B.json")
    assert counts(arch)["params"] == 8_030_261_248
    assert counts(arch) == counts(load_model("llama3_8b"))
