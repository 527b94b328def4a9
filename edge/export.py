"""Export a trained ranker to ONNX with dynamic batch and K, and check parity (torch).

The exported graph is what ships to the app: two float32 inputs
``instruction (B, d)`` and ``candidates (B, K, d)``, one output ``scores (B, K)``,
with B and K symbolic. The example input uses B=2, K=3 on purpose: an example
with a size of 1 lets the tracer specialise that dimension and silently produce
a graph that only accepts K=1. Metadata (``language_ranker.*`` keys in
``metadata_props``) records the kind and feature size so the runtime can reject
mismatched features before running the graph.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch

from edge._errors import ExportError
from edge._onnx_meta import (
    FORMAT_VERSION,
    INPUT_CANDIDATES,
    INPUT_INSTRUCTION,
    META_CONFIG,
    META_FEATURE_SIZE,
    META_FORMAT,
    META_KIND,
    META_RELEVANCE,
    OUTPUT_SCORES,
)
from edge.rankers import RankerModule

__all__ = ["Exporter", "ParityReport", "check_parity", "export_onnx", "ranker_metadata"]

Exporter = Literal["dynamo", "torchscript"]
_EXAMPLE_BATCH, _EXAMPLE_K = 2, 3


def ranker_metadata(model: RankerModule) -> dict[str, str]:
    """The ``language_ranker.*`` metadata entries describing ``model``."""
    config = asdict(model.config)
    return {
        META_FORMAT: FORMAT_VERSION,
        META_KIND: model.kind,
        META_FEATURE_SIZE: str(model.feature_size),
        META_RELEVANCE: str(config.get("relevance", "")),
        META_CONFIG: json.dumps(config, sort_keys=True),
    }


def _example(model: RankerModule) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    d = model.feature_size
    return (
        torch.randn(_EXAMPLE_BATCH, d, generator=gen),
        torch.randn(_EXAMPLE_BATCH, _EXAMPLE_K, d, generator=gen),
    )


def _export_dynamo(model: RankerModule) -> onnx.ModelProto:
    batch, k = torch.export.Dim("batch"), torch.export.Dim("k")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    program = torch.onnx.export(
        model,
        _example(model),
        dynamo=True,
        input_names=[INPUT_INSTRUCTION, INPUT_CANDIDATES],
        output_names=[OUTPUT_SCORES],
        dynamic_shapes={"instruction": {0: batch}, "candidates": {0: batch, 1: k}},
        verbose=False,
    )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    return program.model_proto


def _export_torchscript(model: RankerModule) -> onnx.ModelProto:
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        _example(model),
        buf,
        dynamo=False,
        input_names=[INPUT_INSTRUCTION, INPUT_CANDIDATES],
        output_names=[OUTPUT_SCORES],
        dynamic_axes={
            INPUT_INSTRUCTION: {0: "batch"},
            INPUT_CANDIDATES: {0: "batch", 1: "k"},
            OUTPUT_SCORES: {0: "batch", 1: "k"},
        },
        opset_version=18,
    )
    return onnx.load_from_string(buf.getvalue())


def export_onnx(
    model: RankerModule,
    path: str | Path | None = None,
    *,
    exporter: Exporter = "dynamo",
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Export ``model`` to ONNX bytes (also written to ``path`` when given).

    ``exporter="dynamo"`` uses the maintained torch.export-based exporter;
    ``"torchscript"`` the legacy one, about 10x faster to run, which matters when
    a phone re-exports after every incremental update. Both give dynamic B and K.
    Extra ``metadata`` (e.g. user and version) is added to ``metadata_props``.
    """
    frozen = copy.deepcopy(model).eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            proto = _export_dynamo(frozen) if exporter == "dynamo" else _export_torchscript(frozen)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{exporter} export of {model.kind} ranker failed: {exc}") from exc
    entries = {**ranker_metadata(model), **dict(metadata or {})}
    del proto.metadata_props[:]
    for key, value in sorted(entries.items()):
        proto.metadata_props.add(key=key, value=str(value))
    data = proto.SerializeToString()
    if path is not None:
        _write(Path(path), data)
    return data


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(data)
    Path(tmp.name).replace(path)


@dataclass(frozen=True)
class ParityReport:
    """Largest absolute score difference torch vs onnxruntime, per K tried."""

    max_abs_diff: dict[int, float]  # K -> max |torch - onnxruntime| over the batch
    atol: float  # the tolerance the check used

    @property
    def ok(self) -> bool:
        return all(v <= self.atol for v in self.max_abs_diff.values())


def check_parity(
    model: RankerModule,
    onnx_model: bytes | str | Path,
    ks: Sequence[int] = (1, 2, 5, 17),
    *,
    batch: int = 2,
    atol: float = 1e-4,
    seed: int = 0,
) -> ParityReport:
    """Score random inputs at each K with torch and onnxruntime; raise if they differ.

    Catches the classic export bug (a dimension frozen to the example size) as well
    as numerical drift between kernels.
    """
    from edge.runtime import RankingSession

    session = RankingSession.load(onnx_model)
    rng = np.random.default_rng(seed)
    d = model.feature_size
    frozen = copy.deepcopy(model).eval()
    diffs: dict[int, float] = {}
    for k in ks:
        inst = rng.standard_normal((batch, d)).astype(np.float32)
        cand = rng.standard_normal((batch, k, d)).astype(np.float32)
        with torch.no_grad():
            expected = frozen(torch.from_numpy(inst), torch.from_numpy(cand)).numpy()
        got = session.score_batch(inst, cand)
        diffs[k] = float(np.abs(expected - got).max())
    report = ParityReport(diffs, atol)
    if not report.ok:
        raise ExportError(f"ONNX scores differ from torch beyond atol={atol}: {diffs}")
    return report
