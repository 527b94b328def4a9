"""P4: sampling throughput of the sampler against Hugging Face `generate`.

For each K, K responses of exactly `--tokens` tokens from the real default
model: our sampler (with features on, as the service runs it; EOS disabled
so every response has the full length) against

    model.generate(do_sample=True, num_return_sequences=K,
                   max_new_tokens=64, min_new_tokens=64)

on the same prompt, interleaved in one process. Reports tokens/second
(K x tokens / wall time, prefill included) and the ratio. Target: >= 2x at
K=16.

    python benchmarks/p4_sampling_throughput.py [--quick] [--ks 1,16,64] [--long-prompt]
"""

from __future__ import annotations

from typing import Any

from _common import (
    LONG_PROMPT,
    base_parser,
    emit,
    interleaved,
    load_default,
    median,
    prompt_ids,
    set_threads,
)


def ours(loaded: Any, ids: list[int], k: int, tokens: int, layer: int) -> int:
    from central.sampler import SamplingConfig, sample

    events = list(sample(loaded, ids, SamplingConfig(k=k, max_new_tokens=tokens, seed=7), layer))
    return sum(len(c.token_ids) for c in events[1:])


def hf_generate(loaded: Any, ids: list[int], k: int, tokens: int) -> int:
    import torch

    with torch.inference_mode():
        out = loaded.model.generate(
            torch.tensor([ids]),
            do_sample=True,
            num_return_sequences=k,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
        )
    return (out.shape[1] - len(ids)) * k


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--ks", default="1,16,64", help="comma-separated K values")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3, help="repetitions (K >= 64: one)")
    parser.add_argument("--long-prompt", action="store_true", help="a ~150-token prompt")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    threads = set_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]

    loaded = load_default(no_eos=True)
    ids = prompt_ids(loaded, LONG_PROMPT) if args.long_prompt else prompt_ids(loaded)
    layer = round(0.6 * loaded.num_layers)
    print(f"model {loaded.name}, prompt {len(ids)} tokens, {args.tokens} new tokens,")
    print(f"threads {threads}, {reps} interleaved repetitions per K < 64, 1 at K >= 64 (median)")
    results: dict[str, Any] = {}
    for k in ks:
        assert ours(loaded, ids, k, args.tokens, layer) == k * args.tokens
        assert hf_generate(loaded, ids, k, args.tokens) == k * args.tokens
        seconds = interleaved(
            {
                "ours": lambda k=k: ours(loaded, ids, k, args.tokens, layer),
                "hf_generate": lambda k=k: hf_generate(loaded, ids, k, args.tokens),
            },
            1 if k >= 64 else reps,  # K=64 runs ~1 min each here; keep the script short
            warmup=False,  # the assertions above warmed both up
        )
        tokens = k * args.tokens
        rate = {name: tokens / median(values) for name, values in seconds.items()}
        ratio = rate["ours"] / rate["hf_generate"]
        results[str(k)] = {
            "ours_tok_s": round(rate["ours"], 1),
            "hf_tok_s": round(rate["hf_generate"], 1),
            "ratio": round(ratio, 3),
        }
        print(
            f"K={k:3d}: ours {rate['ours']:7.1f} tok/s  hf {rate['hf_generate']:7.1f} tok/s  "
            f"ratio {ratio:.2f}   runs: ours {_fmt(seconds['ours'])}, "
            f"hf {_fmt(seconds['hf_generate'])}",
            flush=True,
        )
    target = results.get("16", {}).get("ratio")
    emit(
        {
            "benchmark": "p4_sampling_throughput",
            "prompt_tokens": len(ids),
            "tokens": args.tokens,
            "threads": threads,
            "by_k": results,
            "ratio_k16": target,
            "met": None if target is None else target >= 2.0,
        }
    )


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values) + " s"


if __name__ == "__main__":
    main()
