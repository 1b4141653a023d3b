"""Invalid input fails before tracing with one message naming the field, the value and the rule."""
import pytest

from dse import DesignError, make_arch, make_hardware, validate_hardware
from dse.app.build import build_design, load_hardware, load_model

BASE = {"model": {"n_layers": 32, "d_model": 4096, "n_heads": 32, "n_kv_heads": 8, "d_ff": 11008, "vocab": 32000},
        "quant": {"w_bits": 16, "a_bits": 16, "kv_bits": 16}, "workload": {"batch": 1, "prompt_len": 512, "gen_len": 64, "tp": 1}}


def _with(section, key, value):
    cfg = {k: dict(v) for k, v in BASE.items()}
    cfg[section][key] = value
    return cfg


@pytest.mark.parametrize("section,key,value,needle", [
    ("model", "n_kv_heads", 5, "model.n_kv_heads=5: must divide model.n_heads=32"),
    ("model", "n_layers", 0, "model.n_layers=0: must be a positive integer"),
    ("model", "d_ff", -4, "model.d_ff=-4: must be a positive integer"),
    ("quant", "w_bits", 0, "quant.w_bits=0: must be a number of bits in [1, 32]"),
    ("quant", "kv_bits", 33, "quant.kv_bits=33: must be a number of bits in [1, 32]"),
    ("workload", "batch", 0, "workload.batch=0: must be a positive integer"),
    ("workload", "tp", 3, "workload.tp=3: must divide model.n_heads=32"),
])
def test_invalid_design_names_field_value_rule(section, key, value, needle):
    with pytest.raises(DesignError) as e:
        build_design(_with(section, key, value))
    assert needle in str(e.value)


def test_d_model_not_divisible_without_d_head():
    with pytest.raises(DesignError, match=r"model.d_model=4000: must be divisible by model.n_heads=48"):
        make_arch(n_layers=2, d_model=4000, n_heads=48, vocab=10)
    make_arch(n_layers=2, d_model=4000, n_heads=48, d_head=128, vocab=10)  # explicit d_head is fine


def test_invalid_hardware():
    with pytest.raises(DesignError, match=r"hardware.mem_bw=-1: must be a positive bandwidth"):
        validate_hardware(make_hardware(mem_bw=-1, mem_capacity=1e9, peak_flops={"fp16": 1e12}))
    with pytest.raises(DesignError, match=r"hardware.peak_flops.fp9=.*unknown precision"):
        make_hardware(mem_bw=1, mem_capacity=1e9, peak_flops={"fp9": 1e12})


def test_unknown_catalog_names_list_the_available():
    with pytest.raises(DesignError, match=r"model='nope': unknown model; available: \['bert_base'"):
        load_model("nope")
    with pytest.raises(DesignError, match=r"hardware='nope': unknown hardware; available: .*'h100_sxm'"):
        load_hardware("nope")
