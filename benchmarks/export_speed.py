"""Exporting a ranker to ONNX: the default exporter ("auto") against torch.export.

What `export_onnx(model)` costs per call, for the representation study's
recommended ListRanker and PointRanker (last + mean vectors + signals) at 576-d
and 4096-d, with the default `exporter="auto"` (the legacy torchscript tracer)
and with `exporter="dynamo"` (torch.export), interleaved in one process. Also
checks that both graphs give the same scores (largest absolute difference on
random inputs, K = 1, 3 and 8). In a cross-validation loop, or wherever a ranker
is exported per fold or per user, this is most of the time besides training.

    python benchmarks/export_speed.py [--quick]
"""

from __future__ import annotations

import warnings

import numpy as np
from _common import base_parser, emit, interleaved, median, set_threads


def measure(model: object, reps: int) -> dict[str, float]:
    """Median seconds per export with each exporter, and how far their scores differ."""
    from edge.runtime.scoring import RankingSession
    from edge.training.export import export_onnx

    exporters = ("auto", "dynamo")
    seconds = interleaved(
        {e: lambda e=e: export_onnx(model, exporter=e) for e in exporters}, reps, warmup=False
    )
    auto, dynamo = (RankingSession.load(export_onnx(model, exporter=e)) for e in exporters)
    rng = np.random.default_rng(0)
    d, signals = model.feature_size, model.config.num_signals  # type: ignore[attr-defined]
    diff = 0.0
    for k in (1, 3, 8):
        inputs = {
            "instruction": rng.standard_normal(d).astype(np.float32),
            "candidates": rng.standard_normal((k, d)).astype(np.float32),
            "mean_candidates": rng.standard_normal((k, d)).astype(np.float32),
            "signals": rng.standard_normal((k, signals)).astype(np.float32),
        }
        diff = max(diff, float(np.abs(auto.score(**inputs) - dynamo.score(**inputs)).max()))
    return {
        "auto_s": median(seconds["auto"]),
        "dynamo_s": median(seconds["dynamo"]),
        "max_abs_diff": diff,
    }


def main() -> None:
    args = base_parser(__doc__).parse_args()
    threads = set_threads(args.threads)
    from edge.training.rankers import build_ranker, recommended_config

    warnings.simplefilter("ignore")
    reps = 1 if args.quick else 3
    result: dict[str, object] = {"threads": threads, "reps": reps}
    for dim in (576,) if args.quick else (576, 4096):
        for kind in ("list", "point"):
            name = f"{kind}@{dim}"
            result[name] = measure(build_ranker(recommended_config(kind, dim), seed=0), reps)
            row = result[name]
            assert isinstance(row, dict)
            print(
                f"{name:>11}: auto {row['auto_s']:6.2f} s, dynamo {row['dynamo_s']:6.2f} s "
                f"({row['dynamo_s'] / row['auto_s']:5.1f}x), "
                f"max |score diff| {row['max_abs_diff']:.1e}",
                flush=True,
            )
    emit(result)


if __name__ == "__main__":
    main()
