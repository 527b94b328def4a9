"""Export a trained ranker to ONNX with dynamic batch and K, and check parity (torch).

The exported graph is what ships to the app: float32 inputs ``instruction (B, d)``
and ``candidates (B, K, d)``, plus ``mean_candidates (B, K, d)`` and ``signals
(B, K, S)`` when the ranker reads them (exactly its ``input_names``), one output
``scores (B, K)``, with B and K symbolic. The example input uses B=2, K=3 on
purpose: an example with a size of 1 lets the tracer specialise that dimension
and silently produce a graph that only accepts K=1. Metadata
(``language_ranker.*`` keys in ``metadata_props``) records the kind, feature
size, the parts the graph reads and the signals' version and names, so the
runtime can reject mismatched features before running the graph. Given the
features' ``identity`` (the source model's name and weights checksum and the
layer, e.g. ``generation.identity``), it records that too, and the runtime
then refuses a generation from another model or layer; without one (the
default) the model is unknown and not checked. Each input carries a doc string
with its name, dtype, shape and meaning (``edge.runtime.stamp``).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from edge._atomic import atomic_write
from edge._errors import ExportError
from edge.runtime.onnx_meta import (
    FORMAT_VERSION,
    INPUT_CANDIDATES,
    INPUT_INSTRUCTION,
    INPUT_MEAN_CANDIDATES,
    INPUT_SIGNALS,
    META_CONFIG,
    META_FEATURE_SIZE,
    META_FORMAT,
    META_KIND,
    META_RELEVANCE,
    META_REPRESENTATION,
    META_SIGNAL_NAMES,
    META_SIGNALS_VERSION,
    OUTPUT_SCORES,
    identity_metadata,
)
from edge.runtime.stamp import stamp_ranker
from edge.runtime.types import FeatureIdentity
from edge.training.rankers import RankerModule, Representation, VectorRanker, require_family

__all__ = [
    "Exporter",
    "ParityReport",
    "check_parity",
    "export_onnx",
    "exporting",
    "finish_export",
    "ranker_metadata",
    "trace_onnx",
]

# "auto" (the default): the legacy tracer ("torchscript", ~0.2 s for a ranker), and
# torch.export ("dynamo", 7-30 s: its symbolic shapes) only where that fails, e.g.
# on a torch that has dropped the legacy exporter (deprecated since torch 2.9).
Exporter = Literal["auto", "dynamo", "torchscript", "template"]
_log = logging.getLogger(__name__)
_EXAMPLE_BATCH, _EXAMPLE_K = 2, 3
_TEMPLATE_CAPACITY = 8  # traced graphs kept per process (one per ranker shape in use)


def ranker_metadata(model: RankerModule) -> dict[str, str]:
    """The ``language_ranker.*`` metadata entries describing ``model``.

    A list or point ranker also records the parts it reads (``representation``,
    e.g. ``["last", "mean", "signals"]``) and, with signals, their version and
    column names.
    """
    config = asdict(model.config)
    meta = {
        META_FORMAT: FORMAT_VERSION,
        META_KIND: model.kind,
        META_FEATURE_SIZE: str(model.feature_size),
        META_RELEVANCE: str(config.get("relevance", "")),
        META_CONFIG: json.dumps(config, sort_keys=True),
    }
    if isinstance(model, VectorRanker):
        meta[META_REPRESENTATION] = json.dumps(list(model.parts))
    if isinstance(model.config, Representation):
        rep = model.config
        if rep.signal_names:
            meta[META_SIGNALS_VERSION] = str(rep.signals_version)
            meta[META_SIGNAL_NAMES] = json.dumps(list(rep.signal_names))
    return meta


def _shapes(model: VectorRanker, batch: int, k: int) -> dict[str, tuple[int, ...]]:
    """The shape of each input ``model`` reads, for ``batch`` groups of ``k`` candidates."""
    d = model.feature_size
    signals = model.config.num_signals if isinstance(model.config, Representation) else 0
    every = {
        INPUT_INSTRUCTION: (batch, d),
        INPUT_CANDIDATES: (batch, k, d),
        INPUT_MEAN_CANDIDATES: (batch, k, d),
        INPUT_SIGNALS: (batch, k, signals),
    }
    return {name: every[name] for name in model.input_names}


def _example(model: VectorRanker) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = _shapes(model, _EXAMPLE_BATCH, _EXAMPLE_K)
    return {name: torch.randn(shape, generator=gen) for name, shape in shapes.items()}


# Dynamic axes of the list/point graphs' inputs (name = forward argument): {dim: axis}.
_AXES: dict[str, dict[int, str]] = {
    INPUT_INSTRUCTION: {0: "batch"},
    INPUT_CANDIDATES: {0: "batch", 1: "k"},
    INPUT_MEAN_CANDIDATES: {0: "batch", 1: "k"},
    INPUT_SIGNALS: {0: "batch", 1: "k"},
}


def _axes(model: VectorRanker) -> dict[str, dict[int, str]]:
    return {name: _AXES[name] for name in model.input_names}


def trace_onnx(
    model: torch.nn.Module,
    example: tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor],
    input_axes: dict[str, dict[int, str]],
    exporter: Exporter,
    *,
    fold: bool = True,
) -> onnx.ModelProto:
    """Traces `model` on `example` into an ONNX graph with named dynamic axes.

    `example` holds the forward arguments, positionally (a tuple) or by name
    (a mapping in input order). `input_axes` maps each input's name, which is
    also its forward argument's name, to its dynamic dimensions; the output
    `scores` is (batch, k) for every ranker. "dynamo" uses torch.export,
    "torchscript" and "template" the legacy tracer (`fold` turns its constant
    folding off, which templates need), "auto" the legacy tracer and
    torch.export if that fails. An input the model declares but does not read (the
    last-token vectors of a ranker reading only mean vectors) is kept in the
    graph, so every ranker graph takes the inputs its name list promises.
    """
    proto = _trace(model, example, input_axes, exporter, fold=fold)
    shapes = (
        {n: tuple(t.shape) for n, t in example.items()}
        if isinstance(example, Mapping)
        else {n: tuple(t.shape) for n, t in zip(input_axes, example, strict=False)}
    )
    _declare_inputs(proto, input_axes, shapes)
    return proto


def _declare_inputs(
    proto: onnx.ModelProto,
    input_axes: Mapping[str, Mapping[int, str]],
    shapes: Mapping[str, tuple[int, ...]],
) -> None:
    """Add back, in order, the inputs a tracer dropped because the graph never reads them."""
    present = {i.name: i for i in proto.graph.input}
    if all(name in present for name in input_axes):
        return
    ordered = []
    for name, axes in input_axes.items():
        if name in present:
            ordered.append(present.pop(name))
            continue
        dims: list[str | int] = [axes.get(i, size) for i, size in enumerate(shapes[name])]
        ordered.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
    ordered += present.values()
    del proto.graph.input[:]
    proto.graph.input.extend(ordered)


def _trace(
    model: torch.nn.Module,
    example: tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor],
    input_axes: dict[str, dict[int, str]],
    exporter: Exporter,
    *,
    fold: bool,
) -> onnx.ModelProto:
    if exporter == "auto":
        try:
            return _trace(model, example, input_axes, "torchscript", fold=fold)
        except Exception as legacy:  # e.g. a torch without the legacy exporter
            _log.warning("legacy ONNX export failed (%s); using torch.export (seconds)", legacy)
            return _trace(model, example, input_axes, "dynamo", fold=fold)
    args, kwargs = ((), dict(example)) if isinstance(example, Mapping) else (example, None)
    if exporter == "dynamo":
        dims = {
            axis: torch.export.Dim(axis) for axes in input_axes.values() for axis in axes.values()
        }
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            model,
            args,
            kwargs=kwargs,
            dynamo=True,
            input_names=list(input_axes),
            output_names=[OUTPUT_SCORES],
            dynamic_shapes={
                name: {dim: dims[axis] for dim, axis in axes.items()}
                for name, axes in input_axes.items()
            },
            verbose=False,
        )
        if program is None:
            raise ExportError("torch.onnx.export returned no program")
        return program.model_proto
    # The legacy exporter writes to a path (its signature takes no file object).
    with tempfile.TemporaryDirectory(prefix="ranker-export-") as tmp:
        path = Path(tmp) / "graph.onnx"
        torch.onnx.export(
            model,
            args,
            path,
            kwargs=kwargs,
            dynamo=False,
            input_names=list(input_axes),
            output_names=[OUTPUT_SCORES],
            dynamic_axes={**input_axes, OUTPUT_SCORES: {0: "batch", 1: "k"}},
            opset_version=18,
            do_constant_folding=fold,
        )
        return onnx.load_from_string(path.read_bytes())


class _Templates:
    """Traced graphs per ranker shape, whose initializers are exactly the state_dict.

    Re-tracing is most of an export's cost, yet an incremental update changes
    only the weights. A template is traced once per (kind, config) and later
    exports copy it and overwrite its initializers by name. Two things could
    bake weights into the graph under other names, so the template is traced
    (1) without constant folding (folding would e.g. pre-transpose a weight into
    an anonymous initializer) and (2) from a copy with distinct random weights,
    because the exporter merges initializers of equal value (a fresh model's
    two LayerNorms would otherwise share one). A template is only kept when its
    initializer names equal the model's state_dict keys, shapes included.
    """

    def __init__(self) -> None:
        self._graphs: OrderedDict[str, onnx.ModelProto | None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(model: VectorRanker) -> str:
        return json.dumps([model.kind, asdict(model.config)], sort_keys=True)

    def get(self, model: VectorRanker) -> onnx.ModelProto | None:
        """The template for ``model``'s shape (traced on first use); None: not reusable."""
        key = self.key(model)
        with self._lock:
            if key in self._graphs:
                self._graphs.move_to_end(key)
                return self._graphs[key]
        graph = _trace_template(model)
        with self._lock:
            self._graphs[key] = graph
            while len(self._graphs) > _TEMPLATE_CAPACITY:
                self._graphs.popitem(last=False)
        return graph

    def clear(self) -> None:
        with self._lock:
            self._graphs.clear()


_TEMPLATES = _Templates()


def _trace_template(model: VectorRanker) -> onnx.ModelProto | None:
    """Trace a weight-agnostic graph of ``model``'s shape; None if names do not line up."""
    scrambled = copy.deepcopy(model).eval()
    gen = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        for tensor in scrambled.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=gen))
    proto = trace_onnx(scrambled, _example(scrambled), _axes(scrambled), "torchscript", fold=False)
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return proto if shapes == wanted else None


def _fill_template(template: onnx.ModelProto, model: VectorRanker) -> onnx.ModelProto:
    """A copy of ``template`` carrying ``model``'s current weights."""
    proto = onnx.ModelProto()
    proto.CopyFrom(template)
    state = model.state_dict()
    for init in proto.graph.initializer:
        values = state[init.name].detach().cpu().numpy().astype(np.float32, copy=False)
        init.CopyFrom(numpy_helper.from_array(values, init.name))
    return proto


def _export_proto(model: VectorRanker, exporter: Exporter) -> onnx.ModelProto:
    """Filling a template only reads the weights; tracing runs on a frozen copy."""
    if exporter == "template":
        template = _TEMPLATES.get(model)
        if template is not None:  # else a shape the name check rejected: trace it fully
            return _fill_template(template, model)
    frozen = copy.deepcopy(model).eval()
    return trace_onnx(frozen, _example(frozen), _axes(frozen), exporter)


def export_onnx(
    model: RankerModule,
    path: str | Path | None = None,
    *,
    exporter: Exporter = "auto",
    metadata: Mapping[str, str] | None = None,
    identity: FeatureIdentity | None = None,
) -> bytes:
    """Export ``model`` to ONNX bytes (also written to ``path`` when given).

    ``exporter="auto"`` (the default) traces with torch's legacy exporter
    (``"torchscript"``: ~0.2 s for a ranker), and with the torch.export-based
    one (``"dynamo"``: 7-30 s on a CPU, most of it solving symbolic shapes) only
    where the legacy one fails, e.g. on a torch that has dropped it (it is
    deprecated since torch 2.9; its warnings are silenced here). Both give the
    same scores (``tests/edge/training/test_export.py``). ``"template"`` traces
    once per ranker shape and afterwards only swaps the weights into that graph
    (milliseconds, for per-event updates). All give dynamic B and K.
    Extra ``metadata`` (e.g. user and version) is added to ``metadata_props``.
    ``identity`` names the features the ranker was trained on (source model,
    weights checksum, layer; e.g. ``generation.identity``): the runtime then
    refuses generations from another model or layer. None records nothing.
    A SWIFT head is refused (``ExportError``): ``edge.swift.export_swift_onnx``
    exports it.
    """
    ranker = require_family(model, VectorRanker, "export", "export_onnx()")
    with exporting(f"{exporter} export of {ranker.kind} ranker"):
        proto = _export_proto(ranker, exporter)
    return finish_export(proto, ranker, metadata, path, identity)


@contextmanager
def exporting(what: str) -> Iterator[None]:
    """Tracer warnings silenced, no autograd; any failure becomes an `ExportError` naming `what`."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{what} failed: {exc}") from exc


def finish_export(
    proto: onnx.ModelProto,
    model: RankerModule,
    metadata: Mapping[str, object] | None,
    path: str | Path | None,
    identity: FeatureIdentity | None = None,
) -> bytes:
    """Stamps the ranker's metadata (plus `identity`'s and `metadata`) and the input
    doc strings on an exported graph, serialises it and, when `path` is given,
    writes it there atomically and durably (`atomic_write`: a crash leaves the
    old file or the whole new one)."""
    entries = {**ranker_metadata(model), **identity_metadata(identity), **dict(metadata or {})}
    stamp_ranker(proto, entries)
    data = proto.SerializeToString()
    if path is not None:
        atomic_write(Path(path), data)
    return data


@dataclass(frozen=True)
class ParityReport:
    """Largest absolute score difference torch vs onnxruntime, per K tried."""

    max_abs_diff: dict[int, float]  # K -> max |torch - onnxruntime| over the batch
    atol: float  # the absolute tolerance the check used
    rtol: float = 0.0  # plus this fraction of the largest |torch score| at that K
    max_abs_score: dict[int, float] = field(default_factory=dict)  # K -> max |torch score|

    def tolerance(self, k: int) -> float:
        return self.atol + self.rtol * self.max_abs_score.get(k, 0.0)

    @property
    def ok(self) -> bool:
        return all(v <= self.tolerance(k) for k, v in self.max_abs_diff.items())


def check_parity(
    model: RankerModule,
    onnx_model: bytes | str | Path,
    ks: Sequence[int] = (1, 2, 5, 17),
    *,
    batch: int = 2,
    atol: float = 1e-4,
    rtol: float = 0.0,
    seed: int = 0,
) -> ParityReport:
    """Score random inputs at each K with torch and onnxruntime; raise if they differ.

    Every input the ranker reads gets random values (mean vectors, signals).

    Catches the classic export bug (a dimension frozen to the example size) as well
    as numerical drift between kernels. ``rtol`` scales the tolerance with the
    scores: at 4096-d, float32 sums over d in another order differ by ~1e-5 of
    the score, which exceeds a purely absolute 1e-4 once scores reach ~10.
    A SWIFT head is refused (``ExportError``): ``edge.swift.check_swift_parity``.
    """
    from edge.runtime.scoring import RankingSession

    model = require_family(model, VectorRanker, "parity", "check_parity()")
    session = RankingSession.load(onnx_model)
    rng = np.random.default_rng(seed)
    diffs: dict[int, float] = {}
    peaks: dict[int, float] = {}
    was_training = model.training
    model.eval()  # in place rather than on a copy: copying a 4096-d ranker costs ~5 ms
    try:
        for k in ks:
            feeds = {
                name: rng.standard_normal(shape).astype(np.float32)
                for name, shape in _shapes(model, batch, k).items()
            }
            with torch.no_grad():
                tensors = {name: torch.from_numpy(a) for name, a in feeds.items()}
                expected = model(**tensors).numpy()
            got = session.score_batch(
                feeds[INPUT_INSTRUCTION],
                feeds[INPUT_CANDIDATES],
                mean_candidates=feeds.get(INPUT_MEAN_CANDIDATES),
                signals=feeds.get(INPUT_SIGNALS),
            )
            diffs[k] = float(np.abs(expected - got).max())
            peaks[k] = float(np.abs(expected).max())
    finally:
        model.train(was_training)
    report = ParityReport(diffs, atol, rtol, peaks)
    if not report.ok:
        raise ExportError(f"ONNX scores differ from torch beyond atol={atol}, rtol={rtol}: {diffs}")
    return report
