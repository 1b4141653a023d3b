"""Weight-only quantization's unpacking cost (``Hardware.dequant_ops_per_weight``, issue 13), checked
against a hand count: every weight of every matmul (the four attention projections and the three MLP
matrices of each layer, and the LM head; not the embedding, a lookup) is converted once per step,
``dequant_ops_per_weight`` vector ops each at the fp32 peak, added to the step's time."""
import dataclasses

import pytest

from dse import Design, Quant, Workload, evaluate
from dse.app.build import load_hardware, load_model

#: Llama-2-7B's matmul weights by hand: 32 · (4 · 4096² + 3 · 4096 · 11008) + 4096 · 32000
#: (Touvron et al. 2023, Table 1 shapes; vocabulary 32,000)
LLAMA2_7B_MATMUL_WEIGHTS = 32 * (4 * 4096 ** 2 + 3 * 4096 * 11008) + 4096 * 32000


def _decode_s(w_bits, a_bits, ops, batch=1.0):
    hw = dataclasses.replace(load_hardware("a100_80gb"), dequant_ops_per_weight=ops)
    d = Design(load_model("llama2_7b"), Quant(w_bits, a_bits, 16), Workload(batch, 512.0, 1.0, 1.0))
    return float(evaluate(d, hw)["decode.time_s"]), float(hw.peak_fp32)


@pytest.mark.parametrize("w_bits", [4.0, 8.0])
def test_weight_only_step_pays_the_hand_counted_unpacking(w_bits):
    base, _ = _decode_s(w_bits, 16.0, 0.0)
    with_cost, fp32 = _decode_s(w_bits, 16.0, 3.0)
    assert with_cost - base == pytest.approx(LLAMA2_7B_MATMUL_WEIGHTS * 3.0 / fp32, rel=1e-6)
    # per weight, not per token: the same at batch 64
    assert _decode_s(w_bits, 16.0, 3.0, 64.0)[0] - _decode_s(w_bits, 16.0, 0.0, 64.0)[0] == pytest.approx(
        LLAMA2_7B_MATMUL_WEIGHTS * 3.0 / fp32, rel=1e-6)


@pytest.mark.parametrize("w_bits,a_bits", [(16.0, 16.0), (8.0, 8.0), (4.0, 4.0)])
def test_no_unpacking_when_weights_are_as_wide_as_activations(w_bits, a_bits):
    assert _decode_s(w_bits, a_bits, 3.0)[0] == _decode_s(w_bits, a_bits, 0.0)[0]
