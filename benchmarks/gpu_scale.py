"""GPU scale: central's engine on one GPU with an 8B-shaped model, next to HF `generate`.

One command, a few minutes on one GPU (budget: 8). The model is built from a
config with random weights, so nothing is downloaded: Llama-3.1-8B's shape
(32 layers, hidden 4096, 32 query / 8 key-value heads, MLP 14,336, vocabulary
128,256) in bfloat16. Prompts are token ids drawn from a seeded generator
(100 per request; random weights make any text as good as any other), and
end-of-sequence is disabled, so every candidate is exactly `--tokens` long.

Measured in one process, on the same GPU:

1. the engine (`central.engine.Engine`, what `ranker-central serve` runs):
   N concurrent requests of K=16 candidates x 128 tokens, N = 1, 8, 32, 64,
   features captured as served (last + mean at 0.6 of depth); aggregate
   generated tokens/s, time to the first message (the prompt's feature) and to
   the first candidate (p50 over requests), peak GPU memory;
2. HF `model.generate(do_sample=True, num_return_sequences=16)` on the same
   model: one request per call (how a server built on `generate` answers
   requests one after another: its tokens/s is the same at any N), and the N
   prompts batched into one call (static batching, the stronger baseline);
3. feature capture against plain generation: the sampler with features on
   and off (K=16, interleaved repetitions, medians);
4. batch-1 decode (K=1) as a fraction of the memory-bandwidth limit: bytes a
   decode step must read (the weights, the LM head included, plus the KV
   cache) per second of step, against the bandwidth a device-to-device copy
   reaches here (and the card's nominal figure when its name is known).

Targets (issue 23): engine >= 3x HF generate at 32 requests; capture <= 1.05x
plain generation.

Needs torch, transformers and numpy, and, because central's engine imports
them, grpcio and protobuf (``pip install grpcio protobuf``; no network is
used). Without a CUDA device it refuses in one line; ``--smoke`` runs a tiny
model on the CPU instead, to check the script itself.

    python benchmarks/gpu_scale.py [--device cuda:0] [--levels 1,8,32,64] [--tokens 128]
    python benchmarks/gpu_scale.py --smoke
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from _common import ROOT, emit

# The generated wire code lives under protos/: on a machine where the project is not
# installed (a bare GPU box), the repository alone is enough.
if str(ROOT / "protos") not in sys.path:
    sys.path.insert(1, str(ROOT / "protos"))

PROG = "gpu_scale"
K = 16  # candidates per request
PROMPT_TOKENS = 100  # per request, random ids
EXIT_REFUSED = 2


# ------------------------------------------------------------------ setup


@dataclass(frozen=True)
class Shape:
    """The model built for the run."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


LLAMA_8B = Shape(layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336, vocab=128256)
SMOKE = Shape(layers=2, hidden=256, heads=4, kv_heads=2, intermediate=512, vocab=1000)

# Nominal memory bandwidth (bytes/s) of cards whose name torch reports, for context only.
NOMINAL_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 80GB HBM3": 3.35e12,  # SXM
    "H100 PCIe": 2.0e12,
    "H100 NVL": 3.9e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100-SXM4-40GB": 1.555e12,
    "A100 80GB PCIe": 1.935e12,
    "L40S": 0.864e12,
    "L4": 0.3e12,
    "A10": 0.6e12,
}


class _IdsOnly:
    """What the engine asks of a tokenizer when prompts come as token ids: nothing but
    the end-of-sequence id (unused here: end-of-sequence is disabled)."""

    eos_token_id = None
    chat_template = None


def _refuse(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(EXIT_REFUSED)


def _check_imports() -> None:
    for module, package in (("transformers", "transformers"), ("numpy", "numpy")):
        try:
            importlib.import_module(module)
        except ImportError:
            _refuse(f"needs {package}, which is not installed")
    for module, package in (("grpc", "grpcio"), ("google.protobuf", "protobuf")):
        try:
            importlib.import_module(module)
        except ImportError:
            _refuse(
                f"central's engine imports {package}, which is not installed: "
                "pip install grpcio protobuf"
            )


def build_model(shape: Shape, device: Any, dtype: Any) -> Any:
    """A `LoadedModel` of `shape` with random weights, built on `device` in `dtype`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from central.model import LoadedModel

    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in dtype: an 8B model never exists in float32
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    return LoadedModel(
        name=f"random-llama-{shape.layers}x{shape.hidden}",
        model=model,
        tokenizer=_IdsOnly(),
        num_layers=shape.layers,
        hidden_size=shape.hidden,
        context_length=config.max_position_embeddings,
        eos_token_ids=frozenset(),  # every candidate runs to max_new_tokens
    )


def prompts(count: int, vocab: int, seed: int = 0) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, PROMPT_TOKENS).tolist() for _ in range(count)]


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ the engine


@dataclass
class _Request:
    submitted: float
    first_message: float | None = None
    first_candidate: float | None = None
    done: float | None = None
    tokens: int = 0
    error: str | None = None
    candidates: int = 0


@dataclass
class EngineRun:
    requests: int
    seconds: float
    tokens: int
    first_message_s: float  # p50 over requests
    first_candidate_s: float  # p50 over requests
    peak_memory_gib: float | None
    errors: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def rows_that_fit(loaded: Any, tokens: int, spare_gib: float = 8.0) -> int | None:
    """Batch rows whose KV cache fits in the GPU's free memory (None on a CPU), whole requests.

    The engine's buffers hold a row's prompt and response with up to half again
    as many spare columns, and growing them copies every layer's buffer while
    the old one is alive: twice that per row at the peak. `spare_gib` is left for
    activations, logits and the allocator.
    """
    import torch

    device = loaded.device
    if device.type != "cuda":
        return None
    config = loaded.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    itemsize = next(loaded.model.parameters()).element_size()
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * itemsize
    per_row = 2 * 1.5 * (PROMPT_TOKENS + tokens + 32) * per_token
    free = torch.cuda.mem_get_info(device)[0] - spare_gib * 2**30
    return max(K, int(free // per_row) // K * K)


def run_engine(
    loaded: Any, level: int, tokens: int, layer: int, max_rows: int | None = None
) -> EngineRun:
    """`level` requests submitted at once to a fresh engine; every result collected.

    The engine decodes up to `max_rows` rows at once (all of them when None);
    requests beyond wait for room, as in a server."""
    import torch

    from central.config import EngineConfig, ServiceLimits
    from central.engine import Done, Engine, InstructionReady
    from central.features import FeatureRequest
    from central.outbox import StreamEnd
    from central.sampler import SampledCandidate, SamplingConfig
    from central.validation import GenerateJob
    from language_ranker.v1 import ranker_pb2 as pb

    device = loaded.device
    rows = max(level * K, K) if max_rows is None else min(max(level * K, K), max_rows)
    engine = Engine(
        loaded,
        ServiceLimits(max_k=K, max_new_tokens=tokens),
        EngineConfig(
            max_batch_rows=rows,
            max_batch_requests=max(level, 1),
            max_queued_requests=max(level, 1),
            turn_tokens=max(4096, level * PROMPT_TOKENS),  # every prompt prefilled in one turn
        ),
    )
    features = FeatureRequest(layer=layer, encoding=pb.ENCODING_FP16, mean=True)
    jobs = [
        GenerateJob(ids, SamplingConfig(k=K, max_new_tokens=tokens, seed=i), features, None)
        for i, ids in enumerate(prompts(level, loaded.model.config.vocab_size, seed=level))
    ]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    records = [_Request(0.0) for _ in jobs]

    def read(ticket: Any, record: _Request) -> None:
        for event in ticket.events():
            now = time.perf_counter()
            if isinstance(event, InstructionReady) and record.first_message is None:
                record.first_message = now
            elif isinstance(event, SampledCandidate):
                record.first_candidate = record.first_candidate or now
                record.candidates += 1
                record.tokens += len(event.token_ids)
            elif isinstance(event, Done):
                record.done = now
            elif isinstance(event, StreamEnd):
                record.error = f"{event.code.name}: {event.details}"
        ticket.release()

    started = time.perf_counter()
    readers = []
    for job, record in zip(jobs, records, strict=True):
        record.submitted = time.perf_counter()
        ticket = engine.submit_generate(job)
        reader = threading.Thread(target=read, args=(ticket, record), daemon=True)
        reader.start()
        readers.append(reader)
    for reader in readers:
        reader.join()
    seconds = time.perf_counter() - started
    engine.close()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    errors = [r.error for r in records if r.error]
    return EngineRun(
        requests=level,
        seconds=seconds,
        tokens=sum(r.tokens for r in records),
        first_message_s=_p50([(r.first_message or started) - r.submitted for r in records]),
        first_candidate_s=_p50([(r.first_candidate or started) - r.submitted for r in records]),
        peak_memory_gib=peak,
        errors=errors,
    )


def _p50(values: list[float]) -> float:
    return statistics.median(values)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# ------------------------------------------------------------------ baselines


def hf_generate(loaded: Any, batch: list[list[int]], tokens: int) -> tuple[float, int]:
    """(seconds, generated tokens) of one `generate` call: K samples of each prompt."""
    import torch

    device = loaded.device
    ids = torch.tensor(batch, device=device)  # equal lengths: no padding
    synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            num_return_sequences=K,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            pad_token_id=0,
        )
    synchronize(device)
    seconds = time.perf_counter() - started
    return seconds, (out.shape[1] - ids.shape[1]) * out.shape[0]


def sampler_seconds(
    loaded: Any, ids: list[int], k: int, tokens: int, layer: int, features: bool
) -> float:
    """Seconds of one `central.sampler.sample` run (K candidates of `tokens`)."""
    from central.sampler import SamplingConfig, sample

    synchronize(loaded.device)
    started = time.perf_counter()
    events = list(
        sample(
            loaded,
            ids,
            SamplingConfig(k=k, max_new_tokens=tokens, seed=3),
            layer,
            features=features,
        )
    )
    synchronize(loaded.device)
    assert sum(len(c.token_ids) for c in events[1:]) == k * tokens
    return time.perf_counter() - started


def copy_bandwidth(device: Any, gib: float) -> float:
    """Bytes/s a device-to-device copy of `gib` GiB reaches (read + write counted)."""
    import torch

    count = int(gib * 2**30) // 2
    source = torch.empty(count, dtype=torch.bfloat16, device=device).fill_(1.0)
    target = torch.empty_like(source)
    target.copy_(source)  # warm up
    synchronize(device)
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        runs.append(time.perf_counter() - started)
    del source, target
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * count * 2 / min(runs)


def step_bytes(loaded: Any, context: int) -> int:
    """Bytes one batch-1 decode step reads: every weight but the embedding table (one row
    of it), and the KV cache of `context` positions."""
    model = loaded.model
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    total -= embedding.numel() * embedding.element_size()
    total += embedding.shape[1] * embedding.element_size()
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * context
    return total + kv * embedding.element_size()


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU")
    parser.add_argument("--device", default="cuda", help="the GPU (cuda or cuda:N)")
    parser.add_argument("--levels", default=None, help="concurrent requests (default 1,8,32,64)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per candidate (128)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the capture runs")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=420.0,
        help="after this, the remaining batched-HF and capture runs are skipped (model "
        "building excluded)",
    )
    args = parser.parse_args()
    import torch

    if args.smoke:
        device, dtype, shape = torch.device("cpu"), torch.float32, SMOKE
        levels, tokens, copy_gib = [1, 2], args.tokens or 8, 0.05
    else:
        if not torch.cuda.is_available():
            why = "was built without CUDA" if torch.version.cuda is None else "sees no CUDA device"
            _refuse(
                f"needs a CUDA GPU and torch {torch.__version__} {why}; "
                "--smoke runs a tiny model on the CPU"
            )
        device, dtype, shape = torch.device(args.device), torch.bfloat16, LLAMA_8B
        levels, tokens, copy_gib = [1, 8, 32, 64], args.tokens or 128, 2.0
    if args.levels:
        levels = [int(n) for n in args.levels.split(",")]
    _check_imports()

    started = time.perf_counter()
    loaded = build_model(shape, device, dtype)
    synchronize(device)
    built_s = time.perf_counter() - started
    weights_gib = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**30
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    layer = round(0.6 * shape.layers)
    print(
        f"{name}: {loaded.name} in {str(dtype).removeprefix('torch.')}, {weights_gib:.1f} GiB "
        f"of weights, built in {built_s:.0f} s; K={K}, {tokens} tokens per candidate, "
        f"{PROMPT_TOKENS}-token prompts, features at layer {layer}",
        flush=True,
    )
    clock = time.perf_counter()

    def over_budget() -> bool:
        return time.perf_counter() - clock > args.budget_seconds

    max_rows = rows_that_fit(loaded, tokens)
    if max_rows is not None:
        print(f"the engine decodes up to {max_rows} rows at once (what fits in memory)")
    run_engine(loaded, 1, min(tokens, 4), layer)  # warm up kernels and allocator
    one_prompt = prompts(1, shape.vocab, seed=99)
    hf_generate(loaded, one_prompt, min(tokens, 4))

    # 1-2. engine and HF generate at each level
    hf_one = [hf_generate(loaded, one_prompt, tokens) for _ in range(2)]
    hf_one_rate = statistics.median(t / s for s, t in hf_one)
    rows: list[dict[str, Any]] = []
    for level in levels:
        run = run_engine(loaded, level, tokens, layer, max_rows)
        batched: float | None = None
        hf_batched = "skipped (time budget)"
        if not over_budget():
            try:
                seconds, generated = hf_generate(loaded, prompts(level, shape.vocab, level), tokens)
                batched, hf_batched = generated / seconds, "ran"
            except torch.OutOfMemoryError:  # N x K rows of HF's growing cache: a result too
                hf_batched = "out of memory"
                torch.cuda.empty_cache()
        row = {
            "requests": level,
            "engine_tok_s": round(run.tokens_per_s, 1),
            "hf_one_per_call_tok_s": round(hf_one_rate, 1),
            "hf_batched_tok_s": None if batched is None else round(batched, 1),
            "vs_hf_one_per_call": round(run.tokens_per_s / hf_one_rate, 2),
            "vs_hf_batched": None if batched is None else round(run.tokens_per_s / batched, 2),
            "hf_batched": hf_batched,  # ran, out of memory, or skipped (time budget)
            "first_message_p50_s": round(run.first_message_s, 3),
            "first_candidate_p50_s": round(run.first_candidate_s, 3),
            "peak_memory_gib": _rounded(run.peak_memory_gib),
            "errors": run.errors,
        }
        rows.append(row)
        print(
            f"N={level:3d}: engine {run.tokens_per_s:8.1f} tok/s "
            f"({row['vs_hf_one_per_call']:.2f}x HF one per call {hf_one_rate:.1f}, "
            f"{'-' if batched is None else format(row['vs_hf_batched'], '.2f')}x HF batched "
            f"{hf_batched if batched is None else format(batched, '.1f')}); first message "
            f"{run.first_message_s:.2f} s, first candidate {run.first_candidate_s:.2f} s; "
            f"peak {row['peak_memory_gib']} GiB; errors {len(run.errors)}",
            flush=True,
        )

    # 3. feature capture against plain generation (the sampler, K=16)
    capture: dict[str, Any] = {"skipped": True}
    if not over_budget():
        ids = prompts(1, shape.vocab, seed=7)[0]
        runs: dict[bool, list[float]] = {True: [], False: []}
        for rep in range(args.reps):
            for features in (True, False) if rep % 2 == 0 else (False, True):
                runs[features].append(sampler_seconds(loaded, ids, K, tokens, layer, features))
        ratio = statistics.median(runs[True]) / statistics.median(runs[False])
        capture = {
            "features_s": [round(s, 3) for s in runs[True]],
            "plain_s": [round(s, 3) for s in runs[False]],
            "ratio": round(ratio, 3),
        }
        print(f"capture: {ratio:.3f}x plain generation (K={K}, medians of {args.reps})")

    # 4. batch-1 decode against the memory-bandwidth limit
    short, long = max(2, tokens // 4), tokens
    ids = prompts(1, shape.vocab, seed=8)[0]
    # The fastest of three runs at each length; their difference cancels the prefill.
    seconds_short = min(sampler_seconds(loaded, ids, 1, short, layer, True) for _ in range(3))
    seconds_long = min(sampler_seconds(loaded, ids, 1, long, layer, True) for _ in range(3))
    step_s = max(seconds_long - seconds_short, 1e-9) / (long - short)
    needed = step_bytes(loaded, PROMPT_TOKENS + (short + long) // 2)
    measured = copy_bandwidth(device, copy_gib)
    nominal = next((v for k, v in NOMINAL_BANDWIDTH.items() if k in name), None)
    decode = {
        "step_ms": round(step_s * 1e3, 2),
        "bytes_per_step_gib": round(needed / 2**30, 2),
        "copy_bandwidth_gb_s": round(measured / 1e9, 1),
        "fraction_of_copy_bandwidth": round(needed / step_s / measured, 3),
        "nominal_bandwidth_gb_s": None if nominal is None else round(nominal / 1e9),
        "fraction_of_nominal": None if nominal is None else round(needed / step_s / nominal, 3),
    }
    print(
        f"batch-1 decode: {decode['step_ms']} ms a step reading {decode['bytes_per_step_gib']} "
        f"GiB = {needed / step_s / 1e9:.0f} GB/s, {decode['fraction_of_copy_bandwidth']:.0%} of "
        f"the {decode['copy_bandwidth_gb_s']} GB/s a copy reaches here"
        + ("" if nominal is None else f", {decode['fraction_of_nominal']:.0%} of nominal"),
        flush=True,
    )
    at32 = next((r for r in rows if r["requests"] == 32), None)
    emit(
        {
            "benchmark": "gpu_scale",
            "device": name,
            "model": loaded.name,
            "dtype": str(dtype).removeprefix("torch."),
            "weights_gib": round(weights_gib, 2),
            "k": K,
            "tokens": tokens,
            "max_batch_rows": max_rows,
            "levels": rows,
            "capture": capture,
            "batch1_decode": decode,
            "seconds": round(time.perf_counter() - started, 1),
            "met_3x_hf_at_32": None if at32 is None else at32["vs_hf_one_per_call"] >= 3.0,
            "met_capture_1_05": None if "ratio" not in capture else capture["ratio"] <= 1.05,
        }
    )


if __name__ == "__main__":
    main()
