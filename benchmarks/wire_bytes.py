"""Wire: bytes per candidate for each feature encoding, and int8's error.

Builds real `GenerateResponse` messages (a candidate with its feature
encoded by `central.features.encode`) and measures their serialized size:

  - feature only: a candidate that carries nothing but the feature tensor;
  - full: index, text, 64 token ids, finish reason, log-probability and the
    feature, as the service streams it.

576-d features are real: last-token hidden states at the default layer of
the default model, for sampled responses. No 4096-d model runs here, so the
4096-d vectors are built from the real ones (each 4096-d vector concatenates
random permutations of real 576-d features), keeping their value
distribution, outliers included, which is what int8's per-vector scale
depends on. int8 error is relative to fp32: ||dec(int8) - x|| / ||x||.

    python benchmarks/wire_bytes.py [--quick]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _common import base_parser, emit, load_default, prompt_ids, set_threads

ENCODINGS = ("fp16", "fp32", "int8")


def real_features(count: int) -> tuple[np.ndarray, str, list[int]]:
    """(count, 576) float32 features of sampled responses, and the longest response."""
    from central.sampler import SamplingConfig, sample

    loaded = load_default(no_eos=False)
    ids = prompt_ids(loaded)
    layer = round(0.6 * loaded.num_layers)
    events = list(sample(loaded, ids, SamplingConfig(k=count, max_new_tokens=64, seed=5), layer))
    candidates = events[1:]
    longest = max(candidates, key=lambda c: len(c.token_ids)).token_ids
    text = loaded.tokenizer.decode(longest, skip_special_tokens=True)
    return np.stack([c.feature for c in candidates]), text, longest


def widen(features: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Vectors of `width` made of randomly permuted real features (same value distribution)."""
    rows = []
    for _ in range(features.shape[0]):
        parts, total = [], 0
        while total < width:
            source = features[rng.integers(features.shape[0])]
            parts.append(source[rng.permutation(source.shape[0])])
            total += source.shape[0]
        rows.append(np.concatenate(parts)[:width])
    return np.stack(rows).astype(np.float32)


def message_bytes(feature: np.ndarray, encoding: int, full: bool, text: str, ids: list[int]) -> int:
    from central.features import encode
    from language_ranker.v1 import ranker_pb2 as pb

    candidate = pb.Candidate(feature=encode(feature, encoding))
    if full:
        candidate.index = 15
        candidate.text = text
        candidate.token_ids.extend(ids)
        candidate.num_tokens = len(ids)
        candidate.finish_reason = pb.FINISH_REASON_LENGTH
        candidate.cumulative_logprob = -42.5
    return len(pb.GenerateResponse(candidate=candidate).SerializeToString())


def relative_error(feature: np.ndarray, encoding: int) -> float:
    from central.features import encode
    from language_ranker.v1 import ranker_pb2 as pb

    tensor = encode(feature, encoding)
    kind = {pb.DTYPE_FLOAT16: "<f2", pb.DTYPE_FLOAT32: "<f4", pb.DTYPE_INT8: "i1"}[tensor.dtype]
    decoded = np.frombuffer(tensor.data, dtype=kind).astype(np.float32)
    if tensor.dtype == pb.DTYPE_INT8:
        decoded = decoded * np.float32(tensor.scales[0])
    return float(np.linalg.norm(decoded - feature) / np.linalg.norm(feature))


def main() -> None:
    from language_ranker.v1 import ranker_pb2 as pb

    args = base_parser(__doc__).parse_args()
    set_threads(args.threads)
    count = 8 if args.quick else 32
    real, loaded_text, loaded_ids = real_features(count)
    codes = {"fp16": pb.ENCODING_FP16, "fp32": pb.ENCODING_FP32, "int8": pb.ENCODING_INT8}
    widths = {576: real, 4096: widen(real, 4096, np.random.default_rng(0))}

    table: dict[str, dict[str, Any]] = {}
    print(f"{count} real candidates; full message = {len(loaded_ids)} token ids + text")
    print(f"{'dim':>5} {'enc':>5} {'feature-only B':>15} {'full B':>8} {'rel. error':>11}")
    for width, features in widths.items():
        for name in ENCODINGS:
            code = codes[name]
            only = [message_bytes(f, code, False, "", []) for f in features]
            full = [message_bytes(f, code, True, loaded_text, loaded_ids) for f in features]
            errors = [relative_error(f, code) for f in features]
            row = {
                "feature_only_bytes": int(np.median(only)),
                "full_bytes": int(np.median(full)),
                "rel_error_median": float(np.median(errors)),
                "rel_error_max": float(np.max(errors)),
            }
            table[f"{width}/{name}"] = row
            print(
                f"{width:>5} {name:>5} {row['feature_only_bytes']:>15} {row['full_bytes']:>8} "
                f"{row['rel_error_median']:>11.2e}"
            )
    emit({"benchmark": "wire_bytes", "candidates": count, "table": table})


if __name__ == "__main__":
    main()
