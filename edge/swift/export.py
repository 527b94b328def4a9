"""Export a SWIFT head to ONNX with dynamic B, K and T, and check parity (torch).

The graph takes ``tokens (B, K, T, d)`` and ``mask (B, K, T)`` float32 and
returns ``scores (B, K)``; all three of B, K and T are symbolic. The example
input uses B=2, K=3, T=5 with a ragged mask on purpose: a size of 1 would let
the tracer specialise that dimension, and a full mask would let it fold the
masking away. Metadata records kind, feature size and the config (source,
layers, top-k) so the runtime knows what to ask central for, and, given the
features' ``identity``, the source model's name and weights checksum; each
input carries a doc string (name, dtype, shape, meaning), as
``edge.training.export_onnx`` writes them.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge._errors import MissingDependencyError

try:
    import torch
except ImportError as error:  # a torch-free install: say which extra provides it
    raise MissingDependencyError("edge.swift.export", "torch", "train") from error

from edge._errors import ExportError
from edge.runtime.onnx_meta import INPUT_MASK, INPUT_TOKENS
from edge.runtime.types import FeatureIdentity
from edge.swift.head import SwiftRanker
from edge.training.export import Exporter, ParityReport, exporting, finish_export, trace_onnx
from edge.training.rankers import RankerModule, require_family

__all__ = ["check_swift_parity", "export_swift_onnx"]

_EXAMPLE = (2, 3, 5)  # B, K, T: all > 1 and distinct, so none is frozen


def _example(model: SwiftRanker) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    b, k, t = _EXAMPLE
    tokens = torch.randn(b, k, t, model.feature_size, generator=gen)
    lengths = torch.tensor([[5, 3, 1], [2, 4, 5]])
    mask = (torch.arange(t) < lengths.unsqueeze(-1)).float()
    return tokens, mask


# Dynamic axes of SWIFT graphs: every dimension but the feature width.
_SWIFT_AXES: dict[str, dict[int, str]] = {
    INPUT_TOKENS: {0: "batch", 1: "k", 2: "t"},
    INPUT_MASK: {0: "batch", 1: "k", 2: "t"},
}


def export_swift_onnx(
    model: RankerModule,
    path: str | Path | None = None,
    *,
    exporter: Exporter = "auto",
    metadata: Mapping[str, str] | None = None,
    identity: FeatureIdentity | None = None,
) -> bytes:
    """Export ``model`` to ONNX bytes (also written to ``path`` when given).

    ``exporter`` as in ``export_onnx`` ("auto": the legacy tracer, which exports
    this single linear map and a few elementwise ops in well under a second). A list or
    point ranker is refused (``ExportError``): ``edge.training.export_onnx``.
    ``identity`` names the model the per-token features come from (its layer
    is left out: the head's layers are in its config), as in ``export_onnx``.
    """
    model = require_family(model, SwiftRanker, "export", "export_swift_onnx()")
    frozen = copy.deepcopy(model).eval()
    with exporting(f"{exporter} export of the SWIFT head"):
        proto = trace_onnx(frozen, _example(frozen), _SWIFT_AXES, exporter)
    if identity is not None:
        identity = dataclasses.replace(identity, layer_index=None)
    return finish_export(proto, model, metadata, path, identity)


def check_swift_parity(
    model: RankerModule,
    onnx_model: bytes | str | Path,
    shapes: Sequence[tuple[int, int]] = ((1, 1), (2, 7), (5, 3), (17, 40)),
    *,
    batch: int = 2,
    atol: float = 1e-4,
    seed: int = 0,
) -> ParityReport:
    """Score random ragged inputs at each (K, T) with torch and onnxruntime; raise if they differ.

    Inputs are drawn around the head's own normalisation (``shift + scale * noise``):
    unit-normal noise fed to a head fitted on hidden states with tiny per-dimension
    spreads would blow scores up far beyond anything real and test only float rounding.

    The report is keyed by ``K * 1000 + T`` so one dict covers both dimensions.
    A list or point ranker is refused (``ExportError``): ``edge.training.check_parity``.
    """
    from edge.swift.scoring import TokenRankingSession

    model = require_family(model, SwiftRanker, "parity", "check_swift_parity()")
    session = TokenRankingSession.load(onnx_model)
    rng = np.random.default_rng(seed)
    frozen = copy.deepcopy(model).eval()
    shift, scale = frozen.shift.numpy(), frozen.scale.numpy()
    diffs: dict[int, float] = {}
    for k, t in shapes:
        noise = rng.standard_normal((batch, k, t, model.feature_size)).astype(np.float32)
        tokens = (shift + scale * noise).astype(np.float32)  # in the range it was trained on
        lengths = rng.integers(0, t + 1, size=(batch, k))
        lengths[:, 0] = t  # at least one full-length candidate
        mask = (np.arange(t) < lengths[..., None]).astype(np.float32)
        with torch.no_grad():
            expected = frozen(torch.from_numpy(tokens), torch.from_numpy(mask)).numpy()
        got = session.score_batch(tokens, mask)
        diffs[k * 1000 + t] = float(np.abs(expected - got).max())
    report = ParityReport(diffs, atol)
    if not report.ok:
        raise ExportError(f"ONNX scores differ from torch beyond atol={atol}: {diffs}")
    return report
