"""P3: what capturing features during generation costs, against a second pass.

Five ways to get K sampled responses of the real default model, all with
the same seed, K and lengths (EOS disabled, so every response is exactly
`--tokens` long and all produce identical tokens):

  a) plain generation: the sampler with `features=False` (no hook at all);
  b) ours, last + mean: the sampler capturing the feature layer in the same
     passes, the last token's state and the running sum for the mean over
     the response's tokens (what the service runs for every request);
  e) ours, last + mean + mean entropy (`entropy=True`, on request only);
  f) ours, last + mean + the embedding mean (`embedding_mean=True`, on
     request): one more hook, on the first decoder layer's input, and one
     more running sum per row;
  c) the authors' way: (a), then one batched forward pass over every
     prompt+response to read the feature layer, at the last token and
     averaged over the response's positions.

Targets: b/a <= 1.05, c/b >= 1.3, and f/b <= 1.02 (the embedding mean
costs nothing measurable on top of last + mean). The script also checks
that (b) and (c) give the same last and mean vectors, and (f) and (c) the
same embedding mean (hidden state 0 averaged over the response), and
reports e/a: the mean entropy is a dot product over the vocabulary per row
and step, which is why it is computed only on request.

    python benchmarks/p3_feature_capture.py [--quick] [--k 16] [--tokens 64]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _common import base_parser, emit, interleaved, load_default, median, prompt_ids, set_threads


def generate(
    loaded: Any,
    ids: list[int],
    k: int,
    tokens: int,
    layer: int,
    features: bool,
    entropy: bool = False,
    embedding_mean: bool = False,
) -> list:
    from central.sampler import SamplingConfig, sample

    config = SamplingConfig(k=k, max_new_tokens=tokens, seed=1234)
    events = list(
        sample(
            loaded,
            ids,
            config,
            layer,
            features=features,
            entropy=entropy,
            embedding_mean=embedding_mean,
        )
    )
    return sorted(events[1:], key=lambda c: c.index)


def second_pass(
    loaded: Any, ids: list[int], candidates: list, layer: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(last, mean, embedding mean) by re-running prompt+response, batched (all rows have
    one length)."""
    import torch

    from central.decoding import onednn_linears

    rows = torch.tensor([ids + c.token_ids for c in candidates])
    with torch.inference_mode(), onednn_linears(loaded.model):
        out = loaded.model(input_ids=rows, output_hidden_states=True, logits_to_keep=1)
    states = out.hidden_states[layer][:, len(ids) :].float()
    embedded = out.hidden_states[0][:, len(ids) :].float().mean(dim=1)
    return states[:, -1].numpy(), states.mean(dim=1).numpy(), embedded.numpy()


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    reps = 3 if args.quick else args.reps
    threads = set_threads(args.threads)

    loaded = load_default(no_eos=True)
    ids = prompt_ids(loaded)
    layer = round(0.6 * loaded.num_layers)

    def plain() -> list:
        return generate(loaded, ids, args.k, args.tokens, layer, features=False)

    def ours() -> list:
        return generate(loaded, ids, args.k, args.tokens, layer, features=True)

    def ours_entropy() -> list:
        return generate(loaded, ids, args.k, args.tokens, layer, features=True, entropy=True)

    def ours_embedding() -> list:
        return generate(loaded, ids, args.k, args.tokens, layer, features=True, embedding_mean=True)

    def two_pass() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return second_pass(loaded, ids, plain(), layer)

    # Same tokens everywhere, and the in-pass vectors equal the second pass's.
    reference, baseline = ours(), plain()
    assert [c.token_ids for c in reference] == [c.token_ids for c in baseline]
    assert [c.token_ids for c in ours_entropy()] == [c.token_ids for c in baseline]
    assert all(len(c.token_ids) == args.tokens for c in reference)
    with_embedding = ours_embedding()
    assert [c.token_ids for c in with_embedding] == [c.token_ids for c in baseline]
    last, mean, embedded = two_pass()
    feature_error = _relative_error(np.stack([c.feature for c in reference]), last)
    mean_error = _relative_error(np.stack([c.mean_feature for c in reference]), mean)
    embedding_error = _relative_error(
        np.stack([c.embedding_mean_feature for c in with_embedding]), embedded
    )

    cpu: dict[str, list[float]] = {}
    seconds = interleaved(
        {
            "a_plain": plain,
            "b_ours": ours,
            "f_ours_embedding": ours_embedding,
            "e_ours_entropy": ours_entropy,
            "c_two_pass": two_pass,
        },
        reps,
        cpu=cpu,
    )
    med = {name: median(values) for name, values in seconds.items()}
    med_cpu = {name: median(values) for name, values in cpu.items()}
    generated = args.k * args.tokens
    print(f"model {loaded.name}, prompt {len(ids)} tokens, K={args.k}, {args.tokens} tokens")
    print(f"layer {layer}, threads {threads}, {reps} interleaved repetitions (median)")
    for name, value in med.items():
        runs = ", ".join(f"{s:.2f}" for s in seconds[name])
        print(
            f"  {name:16s} wall {value:6.2f} s  cpu {med_cpu[name]:6.2f} s  "
            f"{generated / value:6.1f} tok/s   wall runs: {runs}"
        )
    wall, by_cpu = _ratios(med), _ratios(med_cpu)
    for clock, ratios in (("wall", wall), ("cpu", by_cpu)):
        print(
            f"{clock:4s}: b/a = {ratios['b_over_a']:.3f} (target <= 1.05)   "
            f"c/b = {ratios['c_over_b']:.3f} (target >= 1.3)   "
            f"f/b = {ratios['f_over_b']:.3f} (target <= 1.02)   "
            f"f/a = {ratios['f_over_a']:.3f}   e/a = {ratios['e_over_a']:.3f}"
        )
    print("  f: last + mean + embedding mean; e: last + mean + mean entropy")
    print(f"max |in-pass - second pass| / max |vector|: last {feature_error:.2e}, ", end="")
    print(f"mean {mean_error:.2e}, embedding mean {embedding_error:.2e}")
    emit(
        {
            "benchmark": "p3_feature_capture",
            "k": args.k,
            "tokens": args.tokens,
            "threads": threads,
            "seconds_median": {n: round(v, 4) for n, v in med.items()},
            "cpu_seconds_median": {n: round(v, 4) for n, v in med_cpu.items()},
            **{name: round(value, 4) for name, value in wall.items()},
            "cpu_ratios": {name: round(value, 4) for name, value in by_cpu.items()},
            "feature_rel_error": feature_error,
            "mean_rel_error": mean_error,
            "embedding_mean_rel_error": embedding_error,
            # the embedding mean's cost is judged by CPU time: on a shared machine the wall
            # clock also counts the other tenants, whose load moves more than 2% between runs
            "met": wall["b_over_a"] <= 1.05
            and wall["c_over_b"] >= 1.3
            and by_cpu["f_over_b"] <= 1.02,
        }
    )


def _ratios(med: dict[str, float]) -> dict[str, float]:
    """The ratios the targets name, from median seconds per variant."""
    return {
        "b_over_a": med["b_ours"] / med["a_plain"],
        "c_over_b": med["c_two_pass"] / med["b_ours"],
        "e_over_a": med["e_ours_entropy"] / med["a_plain"],
        "f_over_a": med["f_ours_embedding"] / med["a_plain"],
        "f_over_b": med["f_ours_embedding"] / med["b_ours"],
    }


if __name__ == "__main__":
    main()
