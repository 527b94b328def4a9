"""P3: what capturing features during generation costs, against a second pass.

Four ways to get K sampled responses of the real default model, all with
the same seed, K and lengths (EOS disabled, so every response is exactly
`--tokens` long and all produce identical tokens):

  a) plain generation: the sampler with `features=False` (no hook at all);
  b) ours, last + mean: the sampler capturing the feature layer in the same
     passes, the last token's state and the running sum for the mean over
     the response's tokens (what the service runs for every request);
  e) ours, last + mean + mean entropy (`entropy=True`, on request only);
  c) the authors' way: (a), then one batched forward pass over every
     prompt+response to read the feature layer, at the last token and
     averaged over the response's positions.

Targets: b/a <= 1.05 and c/b >= 1.3. The script also checks that (b) and
(c) give the same last and mean vectors, and reports e/a: the mean entropy
is a dot product over the vocabulary per row and step, which is why it is
computed only on request.

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
) -> list:
    from central.sampler import SamplingConfig, sample

    config = SamplingConfig(k=k, max_new_tokens=tokens, seed=1234)
    events = list(sample(loaded, ids, config, layer, features=features, entropy=entropy))
    return sorted(events[1:], key=lambda c: c.index)


def second_pass(
    loaded: Any, ids: list[int], candidates: list, layer: int
) -> tuple[np.ndarray, np.ndarray]:
    """(last, mean) by re-running prompt+response, batched (all rows have one length)."""
    import torch

    from central.decoding import onednn_linears

    rows = torch.tensor([ids + c.token_ids for c in candidates])
    with torch.inference_mode(), onednn_linears(loaded.model):
        out = loaded.model(input_ids=rows, output_hidden_states=True, logits_to_keep=1)
    states = out.hidden_states[layer][:, len(ids) :].float()
    return states[:, -1].numpy(), states.mean(dim=1).numpy()


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

    def two_pass() -> tuple[np.ndarray, np.ndarray]:
        return second_pass(loaded, ids, plain(), layer)

    # Same tokens everywhere, and the in-pass vectors equal the second pass's.
    reference, baseline = ours(), plain()
    assert [c.token_ids for c in reference] == [c.token_ids for c in baseline]
    assert [c.token_ids for c in ours_entropy()] == [c.token_ids for c in baseline]
    assert all(len(c.token_ids) == args.tokens for c in reference)
    last, mean = two_pass()
    feature_error = _relative_error(np.stack([c.feature for c in reference]), last)
    mean_error = _relative_error(np.stack([c.mean_feature for c in reference]), mean)

    seconds = interleaved(
        {"a_plain": plain, "b_ours": ours, "e_ours_entropy": ours_entropy, "c_two_pass": two_pass},
        reps,
    )
    med = {name: median(values) for name, values in seconds.items()}
    generated = args.k * args.tokens
    print(f"model {loaded.name}, prompt {len(ids)} tokens, K={args.k}, {args.tokens} tokens")
    print(f"layer {layer}, threads {threads}, {reps} interleaved repetitions (median)")
    for name, value in med.items():
        runs = ", ".join(f"{s:.2f}" for s in seconds[name])
        print(f"  {name:14s} {value:6.2f} s  {generated / value:6.1f} tok/s   runs: {runs}")
    b_over_a = med["b_ours"] / med["a_plain"]
    c_over_b = med["c_two_pass"] / med["b_ours"]
    e_over_a = med["e_ours_entropy"] / med["a_plain"]
    print(f"b/a = {b_over_a:.3f} (target <= 1.05)   c/b = {c_over_b:.3f} (target >= 1.3)")
    print(f"e/a = {e_over_a:.3f} (last + mean + mean entropy)")
    print(f"max |in-pass - second pass| / max |vector|: last {feature_error:.2e}, ", end="")
    print(f"mean {mean_error:.2e}")
    emit(
        {
            "benchmark": "p3_feature_capture",
            "k": args.k,
            "tokens": args.tokens,
            "threads": threads,
            "seconds_median": {n: round(v, 4) for n, v in med.items()},
            "b_over_a": round(b_over_a, 4),
            "c_over_b": round(c_over_b, 4),
            "e_over_a": round(e_over_a, 4),
            "feature_rel_error": feature_error,
            "mean_rel_error": mean_error,
            "met": b_over_a <= 1.05 and c_over_b >= 1.3,
        }
    )


if __name__ == "__main__":
    main()
