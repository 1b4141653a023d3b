"""Pipeline parallelism: stages, micro-batches, the bubble and the activations sent between stages.

``pp`` stages hold ``n_layers / pp`` layers each; the first stage also embeds, the last also
normalizes and runs the LM head, so the slowest stage — the one dse times — holds a share of
the per-layer operators plus the once-per-step operators (``ONCE_OPS``). A batch split into
``m`` micro-batches flows through the stages; each stage slot costs the stage's compute on one
micro-batch plus the point-to-point send of its activations to the next stage (``T · d_model``
values per micro-batch, over the node's link or, when the pipeline spans more than one node,
the network; :func:`dse.core.interconnect.p2p_time`).

- One forward pass (prefill) of the whole batch: ``(m + pp − 1)`` slots — GPipe's schedule
  (Huang et al. 2019): the idle fraction (the bubble) is ``(pp − 1) / (m + pp − 1)``.
- Decode: every sequence's next token needs its previous one, so a sequence's step takes the
  whole round of the pipeline: ``max(m, pp)`` slots per token (with ``m >= pp`` micro-batches
  every stage stays busy; with fewer, the stages idle ``1 − m / pp`` of the time).

FLOPs are linear in the batch, so the totals are ``m`` times a micro-batch's; weights are read
once per micro-batch (``m`` times per step), which is the price of micro-batching.
"""
from __future__ import annotations

import jax.numpy as jnp

from dse.core.design import Design
from dse.core.hardware import Hardware
from dse.core.interconnect import p2p_time

#: operators that run once per step (first or last stage), not once per layer
ONCE_OPS = ("embed", "final_norm", "lm_head")


def once_time(ops: dict, times: dict):
    """Seconds of the once-per-step operators of one step table."""
    return sum((o.count * times[k].time_s for k, o in ops.items() if k in ONCE_OPS), 0.0)


def stage_time(total_s, once_s, pp):
    """The slowest stage's seconds: its 1/pp of the per-layer time plus the once-per-step operators."""
    return (total_s - once_s) / pp + once_s


def devices_per_replica(design: Design):
    """Devices of one model replica: tp · attn_dp (the tensor/expert group) times pp stages."""
    w = design.workload
    return w.tp * w.attn_dp * w.pp


def activation_send_time(design: Design, hw: Hardware, tokens):
    """Seconds to send ``tokens`` tokens' hidden states (``d_model`` values at ``a_bits``) to the next stage.

    Zero without a pipeline; over the network when the replica spans more than one node.
    """
    w = design.workload
    nbytes = tokens * design.arch.d_model * design.quant.a_bits / 8
    cross = (devices_per_replica(design) > hw.node_size) * 1.0
    return jnp.where(w.pp > 1, p2p_time(nbytes, cross, hw), 0.0)


def prefill_microbatches(w):
    """Micro-batches of the prefill pass: ``prefill_microbatches``, or ``microbatches`` when 0."""
    return jnp.where(w.prefill_microbatches > 0, w.prefill_microbatches, w.microbatches)


def bubble(pp, microbatches):
    """GPipe's idle fraction of a forward pass: (pp − 1) / (m + pp − 1)."""
    return (pp - 1.0) / (microbatches + pp - 1.0)


def pipelined(design: Design, hw: Hardware, tables: dict, pre: dict, dec: dict, gen: dict, causal: bool):
    """Rescale the per-micro-batch phase figures of ``metrics.evaluate`` to the pipelined deployment.

    ``pre``/``dec``/``gen``: the phase dicts computed on one micro-batch (``batch / microbatches``
    sequences) with every layer on one device; returns new dicts (times, and FLOP/byte totals).
    """
    w = design.workload
    m, pp = w.microbatches, w.pp
    mp = prefill_microbatches(w)  # the prefill table was computed on batch / mp sequences
    out_pre = dict(pre)
    slot = stage_time(pre["time_s"], once_time(*tables["prefill"]), pp) + activation_send_time(
        design, hw, w.batch / mp * w.prompt_len)
    out_pre["time_s"] = (mp + pp - 1.0) * slot
    out_pre["flops"], out_pre["bytes"] = mp * pre["flops"], mp * pre["bytes"]
    if not causal:
        return out_pre, dec, gen
    send = activation_send_time(design, hw, w.batch / m)
    d_once = once_time(*tables["decode"])
    rounds = jnp.maximum(m, pp)
    out_dec, out_gen = dict(dec), dict(gen)
    out_dec["time_s"] = rounds * (stage_time(dec["time_s"], d_once, pp) + send)
    out_dec["flops"], out_dec["bytes"] = m * dec["flops"], m * dec["bytes"]
    n = w.gen_len
    out_gen["time_s"] = rounds * (stage_time(gen["time_s"], n * d_once, pp) + n * send)
    out_gen["flops"], out_gen["bytes"] = m * gen["flops"], m * gen["bytes"]
    return out_pre, out_dec, out_gen


def busy_fraction(design: Design, prefill_s, generate_s):
    """Fraction of a request's time a device of the pipeline is working (not waiting in a bubble)."""
    w = design.workload
    m, mp, pp = w.microbatches, prefill_microbatches(w), w.pp
    busy = prefill_s * mp / (mp + pp - 1.0) + generate_s * m / jnp.maximum(m, pp)
    return busy / jnp.maximum(prefill_s + generate_s, 1e-30)


def energy_and_cost(devices, busy, seconds, tokens, hw: Hardware) -> dict:
    """Joules and USD per token of ``devices`` devices working ``busy`` of ``seconds`` to produce ``tokens``.

    Power: ``power_idle_w + (power_busy_w − power_idle_w) · busy`` per device (idle while waiting);
    price: ``usd_per_hour`` per device-hour for the whole time. 0 where the catalog has no figure.
    """
    watts = hw.power_idle_w + (hw.power_busy_w - hw.power_idle_w) * busy
    per_token_s = devices * seconds / jnp.maximum(tokens, 1e-30)
    return {"j_per_token": watts * per_token_s, "usd_per_mtok": hw.usd_per_hour / 3600.0 * per_token_s * 1e6}


def deployment_metrics(design: Design, hw: Hardware, prefill_s, generate_s, tokens) -> dict:
    """Devices, bubble, throughput per device, energy and price per output token of a static batch.

    ``tokens``: tokens one replica produces in ``prefill_s + generate_s`` (its generated tokens;
    an encoder's prompt tokens). Replicas (``dp``) multiply devices and throughput alike, so the
    per-device and per-token figures are a replica's.
    """
    w = design.workload
    per_replica = devices_per_replica(design)
    e2e = prefill_s + generate_s
    out = {"n_devices": per_replica * w.dp, "pipeline_bubble": bubble(w.pp, prefill_microbatches(w)),
           "tokens_per_s_per_gpu": tokens / jnp.maximum(e2e, 1e-30) / per_replica}
    out.update(energy_and_cost(per_replica, busy_fraction(design, prefill_s, generate_s), e2e, tokens, hw))
    return out
