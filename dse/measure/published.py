"""Published measurements of LLM inference on real GPUs: loading, the design of each row, and each
source's metric definition, applied exactly.

The data (``dse/data/published_measurements.csv``, 496 rows; definitions in
``published_measurements.md``, copied from the project's shared data with their sources):

- FasterTransformer GPT guide (NVIDIA/FasterTransformer ``docs/gpt_guide.md`` @ df4a7534): the
  wall time of the whole request — the context of ISL tokens plus OSL generated tokens, for
  ``batch`` sequences at once (``e2e_s`` with ``gen_len = OSL``); memory in use per GPU. The
  "Megatron" rows are the same cases run by Megatron-LM.
- gpt-fast README (pytorch-labs/gpt-fast @ 32971d31): ``generated tokens / wall time``, the
  time including the 5-token prompt's prefill; ``generate.py`` makes 200 new tokens, the first
  from the prefill, so the time is the prefill plus 199 decode steps.
- TensorRT-LLM ≤ 0.9 (performance docs v0.5–v0.9, the H100 blog): static batches,
  ``OSL · batch / total latency`` (the first output token comes from the context phase, so the
  latency is a prefill plus OSL − 1 decode steps), divided by the GPU count (≤ 0.9 reports per
  GPU, also where performance.md v0.6.1's header says "out tok/s"; the rows' notes); first-token
  latency is the prefill alone; the blog's batch-1 throughput (output length "-") is the
  single-stream decode rate ``1 / TPOT``. FasterTransformer's "Memory Usage (GB)" is read as GiB
  (nvidia-smi reports MiB).

Architectures: the GPT-3-style shapes are parsed from each row's ``notes`` (learned positions,
LayerNorm, GELU MLP of 4·hidden, biases, vocabulary 51200, input and output embeddings shared as
in GPT-2/GPT-3 and Megatron-LM; Brown et al. 2020); FasterTransformer's pipeline rows use its
own micro-batch rule (:func:`ft_microbatches`); GPT-J-6B from
EleutherAI/gpt-j-6b ``config.json`` (28 layers, 4096 wide, 16 heads of 256, MLP 16384, parallel
attention and MLP, vocabulary 50400); Llama from the catalog (``conf/model``) and Hugging Face
``config.json`` (Llama-3.1-405B: 126 layers, 16384 wide, 128 heads, 8 KV heads, MLP 53248,
vocabulary 128256). Weight-only int4 with group size 32 stores one bf16 scale and one bf16 zero
per 32 weights (gpt-fast ``quantize.py``): 4 + 32/32 = 5 bits per weight.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from dse.core.design import Arch, Design, Quant, Workload, make_arch

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CSV = DATA_DIR / "published_measurements.csv"

#: metric kinds (the definition each source uses), in the order of ``KIND_CODE``
KINDS = ("e2e_s", "ttft_s", "tokens_per_s", "tokens_per_s_per_gpu", "decode_tokens_per_s", "memory_bytes")
KIND_CODE = {k: float(i) for i, k in enumerate(KINDS)}

#: catalog device of each published hardware string (first match); the A100 and H200 pages of
#: TensorRT-LLM name no form factor: the SXM parts (the same generation's peaks; see the .md)
HARDWARE = (("MI250X", "mi250x_gcd"), ("A100", "a100_80gb"), ("H100", "h100_sxm"), ("H200", "h200"),
            ("L40S", "l40s"))

GPT_J = dict(n_layers=28, d_model=4096, n_heads=16, d_ff=16384, vocab=50400, gated_mlp=False, bias=True,
             norm="layernorm", parallel_block=True)
LLAMA = {"Llama-2-7B": "llama2_7b", "Llama-2-70B": "llama2_70b", "Llama-3.1-8B": "llama3_8b",
         "Llama-3.1-70B": "llama3_70b"}
LLAMA_405B = dict(n_layers=126, d_model=16384, n_heads=128, n_kv_heads=8, d_ff=53248, vocab=128256)
MIXTRAL = dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336, vocab=32000)  # + 8 experts, top 2

_GPT3 = re.compile(r"(\d+) layers, (\d+) heads x (\d+) \(hidden (\d+)\)")


def model_family(model: str) -> str:
    """The family of a published model name (for leave-one-family-out)."""
    for prefix in ("GPT-J", "Llama-2", "Llama-3.1", "Mixtral"):
        if model.startswith(prefix):
            return prefix
    return "GPT-3-style"


def arch_of(model: str, notes: str, load_model: Callable[[str], Arch]) -> Arch | None:
    """The Arch of a published model; None where dse cannot express it (yet). ``load_model``: the
    catalog's loader (``dse.app.build.load_model``), passed in so this layer never imports the app."""
    m = _GPT3.search(notes or "")
    if "GPT-3-style" in model and m:
        L, H, d, h = (int(x) for x in m.groups())
        return make_arch(n_layers=L, d_model=h, n_heads=H, d_head=d, d_ff=4 * h, vocab=51200, n_positions=2048,
                         gated_mlp=False, bias=True, norm="layernorm", tied_embeddings=True)
    if model == "GPT-J-6B":
        return make_arch(**GPT_J)
    if model in LLAMA:
        return load_model(LLAMA[model])
    if model == "Llama-3.1-405B":
        return make_arch(**LLAMA_405B)
    if model == "Mixtral-8x7B" and "n_experts" in {f.name for f in dataclasses.fields(Arch)}:
        return make_arch(**MIXTRAL, n_experts=8, top_k=2, d_ff_expert=14336)
    return None


def _bits(precision: str) -> float:
    p = str(precision).upper()
    if p.startswith("INT4"):
        return 4.0 + 32.0 / 32.0  # one bf16 scale and zero per group of 32 weights
    if p.startswith(("INT8", "FP8")):
        return 8.0
    return 16.0


def _kind(row) -> tuple[str, float]:
    """(metric kind, generated tokens the model runs) of one row by its source's definition."""
    metric, osl = row.metric, str(row.osl)
    if metric == "Memory Usage (GB)":
        return "memory_bytes", float(osl)
    if metric == "1st Token Latency (ms)":
        return "ttft_s", 1.0
    if metric == "Tokens/Second":  # gpt-fast: 200 new tokens, the first from the prefill
        return "tokens_per_s", 199.0
    if metric.startswith("Throughput"):
        if not osl[0].isdigit():  # TensorRT-LLM blog, batch 1, output length "-": the decode rate
            return "decode_tokens_per_s", 128.0
        # TensorRT-LLM <= 0.9 reports throughput per GPU, also where a table's header says "out tok/s"
        # (performance.md v0.6.1; the rows' notes): OSL·batch / latency / GPUs
        per_gpu = "/GPU" in metric or str(row.engine).startswith("TensorRT")
        return ("tokens_per_s_per_gpu" if per_gpu else "tokens_per_s"), float(osl) - 1.0
    return "e2e_s", float(osl)  # FasterTransformer / Megatron: the whole request


def _si(row) -> float:
    unit = str(row.unit)
    if row.metric == "Memory Usage (GB)":
        return float(row.value) * 2.0 ** 30  # nvidia-smi's MiB / 1024
    if "(ms)" in row.metric or unit.startswith("ms"):
        return float(row.value) * 1e-3
    return float(row.value)


def load(path: Path | str = CSV) -> pd.DataFrame:
    """The published rows with their design inputs and metric definition (one row per measurement value).

    Added columns: ``device`` (catalog name), ``family``, ``kind``, ``w_bits``, ``a_bits``,
    ``kv_bits``, ``batch``, ``prompt_len``, ``gen_len`` (the decode steps the definition runs),
    ``published`` (the value in SI units: s, tokens/s, bytes), ``expressible``.
    """
    df = pd.read_csv(path)
    dev = []
    for hw in df.hardware:
        dev.append(next((name for key, name in HARDWARE if key in hw), None))
    df["device"] = dev
    df["model_family"] = df.model.map(model_family)
    kinds = [_kind(r) for r in df.itertuples()]
    df["kind"] = [k for k, _ in kinds]
    df["gen_len"] = [g for _, g in kinds]
    df["prompt_len"] = df.isl.astype(float)
    df["batch"] = df.batch_or_concurrency.astype(float)
    df["w_bits"] = df.weight_precision.map(_bits)
    df["a_bits"] = df.activation_precision.map(_bits)
    df["kv_bits"] = [(_bits(k) if "not stated" not in str(k) else a) for k, a in zip(df.kv_precision, df.a_bits)]
    df["published"] = [_si(r) for r in df.itertuples()]
    df["engine_short"] = df.engine.str.split(" ").str[0]
    df["pp"] = df.pp.fillna(1).astype(float)
    df["tp"] = df.tp.astype(float)
    return df


def ft_microbatches(batch: float, seq: float, pp: float) -> float:
    """FasterTransformer's micro-batches of a pipelined pass over ``seq`` tokens per sequence
    (``getLocalBatchSize``, src/fastertransformer/utils/nccl_utils.cc @ 0311bc6): the batch is split
    into ``pp`` micro-batches when divisible, then each halved while micro-batch × seq > 2048."""
    batch, pp = int(batch), int(pp)
    if pp == 1:
        return 1.0
    local = batch // pp if batch % pp == 0 else batch
    while local * seq > 2048 and local % 2 == 0:
        local //= 2
    return float(batch // local)


def designs(df: pd.DataFrame, load_model: Callable[[str], Arch]) -> tuple[list, np.ndarray]:
    """(Design or None per row, expressible mask): None where the model or the parallelism is not in dse."""
    has_pp = "pp" in {f.name for f in dataclasses.fields(Workload)}
    cache: dict = {}
    out = []
    for r in df.itertuples():
        key = (r.model, r.notes if "GPT-3-style" in r.model else "")
        if key not in cache:
            cache[key] = arch_of(r.model, r.notes, load_model)
        arch = cache[key]
        if arch is None or (r.pp > 1 and not has_pp):
            out.append(None)
            continue
        w = dict(batch=r.batch, prompt_len=r.prompt_len, gen_len=r.gen_len, tp=r.tp)
        if has_pp:
            w["pp"] = r.pp
            if r.pp > 1 and str(r.engine).startswith("FasterTransformer"):  # the engine's own micro-batching
                w["microbatches"] = ft_microbatches(r.batch, 1, r.pp)
                w["prefill_microbatches"] = ft_microbatches(r.batch, r.prompt_len, r.pp)
        out.append(Design(arch, Quant(r.w_bits, r.a_bits, r.kv_bits), Workload(**{k: float(v) for k, v in w.items()})))
    return out, np.asarray([d is not None for d in out])


def metric_from(m: dict, kind, batch, gen_len, n_gpus):
    """A row's predicted value from ``evaluate``'s metrics, by the source's definition (traceable)."""
    import jax.numpy as jnp
    total = batch * (gen_len + 1.0) / m["e2e_s"]  # OSL·batch / latency: the first token from the prefill
    vals = [m["e2e_s"], m["ttft_s"], total, total / n_gpus, m["decode_tokens_per_s"], m["memory_bytes"]]
    out = vals[-1]
    for code in range(len(KINDS) - 2, -1, -1):
        out = jnp.where(kind == code, vals[code], out)
    return out
