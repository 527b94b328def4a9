"""A user's taste as a linear head on top of the global ranker, and its ONNX graph (no torch).

A candidate's representation v2 has up to three *blocks*: the last token's hidden
state (``last``, the ``candidates`` input), the mean hidden state over the
response (``mean``, the ``mean_candidates`` input) and the on-device signals
(``signals``, the ``signals`` input). A user's head adds one linear term per
block to whatever the global (or task) ranker of that name says, weighted by
the user's own ``1 + u``::

    score_k = (1 + u) * global_score_k + sum over blocks b of  x_{k,b} . v_b

``u`` lets a user whose taste opposes the global ranker's turn it down (or
reverse it, below -1) in a few events; at ``u = 0`` the global score counts as is.

``v_b`` lives in raw feature space: the learner fits the head in standardised
coordinates (see ``edge.app.taste_fit``) and folds the standardisation into
``v`` before it gets here, so the runtime needs no statistics, only the inputs
it already feeds. With every ``v_b = 0`` the user ranks exactly like the global
ranker, which is the cold start (``u = 0``).

``compose_ranker`` writes the result as ONE ONNX file with the ``onnx`` package:
the global graph (its output renamed) times ``1 + u`` (a ``Mul`` by a scalar
initializer), plus the head's vectors as initializers, one ``MatMul`` per block,
and a final ``Sum`` into ``scores``. Any runtime that can run
the global graph can run the user's, in any language; the batch and K axes stay
dynamic. Without a global ranker the graph is the head alone, and a head of
zeros scores every candidate 0, which keeps the first-sample order (``u``
weighs nothing there).

The composed graph keeps the global graph's metadata, its record of the
features it was trained on (source model, weights checksum, layer) included,
and adds the identity of the features the head learned from; a head learned
from another model or layer than the global graph's is refused, since their
scores would add terms of two feature spaces.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge._errors import CorruptModelError, FeatureError
from edge.app.checkpoint import Checkpoint
from edge.runtime.onnx_meta import (
    FORMAT_VERSION,
    INPUT_CANDIDATES,
    INPUT_INSTRUCTION,
    INPUT_MEAN_CANDIDATES,
    INPUT_SIGNALS,
    META_FEATURE_SIZE,
    META_FORMAT,
    META_KIND,
    META_PREFIX,
    META_REPRESENTATION,
    META_SIGNAL_NAMES,
    META_SIGNALS_VERSION,
    OUTPUT_SCORES,
    identity_metadata,
    read_identity,
)
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION
from edge.runtime.stamp import stamp_ranker
from edge.runtime.types import FeatureIdentity

__all__ = ["BLOCKS", "Block", "TasteHead", "compose_ranker", "graph_blocks"]

Block = Literal["last", "mean", "signals"]
BLOCKS: tuple[Block, ...] = ("last", "mean", "signals")  # in the order they are stacked
_INPUT_OF: dict[Block, str] = {
    "last": INPUT_CANDIDATES,
    "mean": INPUT_MEAN_CANDIDATES,
    "signals": INPUT_SIGNALS,
}
HEAD_KIND = "taste_head"  # Checkpoint.kind of a head's weights archive
# Version of the head archive's config: 1 had no ``global_weight`` (read as u = 0),
# 2 adds it. An archive of a newer version is refused rather than misread.
HEAD_FORMAT = 2
PERSONAL_KIND = "personal"  # META_KIND of a composed graph
META_BASE_KIND = META_PREFIX + "base_kind"  # the global graph's kind, "none" without one
META_HEAD = META_PREFIX + "head"  # JSON: the head's blocks and sizes
_OPSET, _IR_VERSION = 18, 9  # for a graph built without a global one
_PREFIX = "personal_head"  # names of every node and initializer the head adds start so


@dataclass(frozen=True)
class TasteHead:
    """Per-block weight vectors in raw feature space (what the graph multiplies by),
    and the user's weight on the global ranker's score."""

    weights: dict[Block, np.ndarray] = field(repr=False)  # block -> (dim,) float32
    signals_version: int = SIGNALS_VERSION  # version of the signals block's columns
    global_weight: float = 0.0  # u: the global score counts (1 + u) times

    def __post_init__(self) -> None:
        if "last" not in self.weights:
            raise FeatureError("a taste head needs the 'last' block")
        for block, vector in self.weights.items():
            if block not in _INPUT_OF or np.asarray(vector).ndim != 1:
                raise FeatureError(f"bad head block {block!r} of shape {np.shape(vector)}")
        signals = self.weights.get("signals")
        if signals is not None and len(signals) != len(SIGNAL_NAMES):
            raise FeatureError(
                f"head signals block has {len(signals)} values, signals version "
                f"{SIGNALS_VERSION} has {len(SIGNAL_NAMES)}"
            )
        if "mean" in self.weights and len(self.weights["mean"]) != self.feature_size:
            raise FeatureError("head 'mean' and 'last' blocks differ in size")
        if not np.isfinite(self.global_weight):
            raise FeatureError(f"head global weight is {self.global_weight}")

    @property
    def global_scale(self) -> np.float32:
        """``1 + u`` as the graph multiplies the global score by (float32)."""
        return np.float32(1.0 + self.global_weight)

    @classmethod
    def zeros(cls, feature_size: int, blocks: tuple[Block, ...] = BLOCKS) -> TasteHead:
        """The cold-start head: ranks exactly like the global ranker (u = 0)."""
        sizes = {"last": feature_size, "mean": feature_size, "signals": len(SIGNAL_NAMES)}
        return cls({b: np.zeros(sizes[b], np.float32) for b in BLOCKS if b in blocks})

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for b in BLOCKS if b in self.weights)

    @property
    def feature_size(self) -> int:
        return len(self.weights["last"])

    @property
    def nbytes(self) -> int:
        """Bytes of the weight vectors: the per-user state that is not the global graph
        (besides the one number u)."""
        return sum(int(np.asarray(v, np.float32).nbytes) for v in self.weights.values())

    def score(
        self,
        candidates: np.ndarray,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
        global_scores: np.ndarray | None = None,
    ) -> np.ndarray:
        """The user's score, (..., K) from (..., K, dim) blocks (numpy), as the composed
        graph computes it: ``(1 + u) * global_scores`` plus the head's terms. Without
        ``global_scores`` (no global ranker) the head's terms alone."""
        given = {"last": candidates, "mean": mean_candidates, "signals": signals}
        total = np.zeros(np.shape(candidates)[:-1], np.float32)
        if global_scores is not None:
            total += self.global_scale * np.asarray(global_scores, np.float32)
        for block in self.blocks:
            x = given[block]
            if x is None:
                raise FeatureError(f"head block {block!r} needs input {_INPUT_OF[block]!r}")
            total += np.asarray(x, np.float32) @ self.weights[block]
        return total

    # -- the weights archive (no pickle) ----------------------------------------------
    def to_checkpoint(self) -> Checkpoint:
        config = {
            "feature_size": self.feature_size,
            "blocks": list(self.blocks),
            "signals_version": self.signals_version,
            "signal_names": list(SIGNAL_NAMES),
            "head_format": HEAD_FORMAT,
            "global_weight": float(self.global_weight),
        }
        weights: dict[str, np.ndarray] = {
            b: np.asarray(v, np.float32) for b, v in self.weights.items()
        }
        return Checkpoint(kind=HEAD_KIND, config=config, weights=weights)

    def to_bytes(self) -> bytes:
        return self.to_checkpoint().to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "taste head") -> TasteHead:
        """Parse ``to_bytes`` output; anything else raises CorruptModelError.

        A head saved before u existed (format 1) loads with u = 0: it ranks as it
        did."""
        ckpt = Checkpoint.from_bytes(data, source)
        if ckpt.kind != HEAD_KIND:
            raise CorruptModelError(f"{source} holds a {ckpt.kind!r} ranker, not a taste head")
        fmt = ckpt.config.get("head_format", 1)
        if not isinstance(fmt, int) or not 1 <= fmt <= HEAD_FORMAT:
            raise CorruptModelError(f"{source} is a taste head of format {fmt!r}, this "
                                    f"version reads 1 to {HEAD_FORMAT}")  # fmt: skip
        try:
            weights: dict[Block, np.ndarray] = {
                b: np.asarray(ckpt.weights[b], np.float32)
                for b in BLOCKS
                if b in ckpt.config["blocks"]
            }
            u = float(ckpt.config.get("global_weight", 0.0))
            return cls(weights, int(ckpt.config["signals_version"]), u)
        except (KeyError, TypeError, ValueError, FeatureError) as exc:
            raise CorruptModelError(f"{source} is not a valid taste head: {exc}") from exc


def graph_blocks(metadata: Mapping[str, str], extra_inputs: Mapping[str, object]) -> list[Block]:
    """The blocks a graph reads: its representation metadata, else its declared inputs."""
    declared = metadata.get(META_REPRESENTATION)
    if declared:
        try:
            return [b for b in json.loads(declared) if b in _INPUT_OF]
        except ValueError:
            pass
    return [b for b in BLOCKS if b == "last" or _INPUT_OF[b] in extra_inputs]


# -- composing the ONNX graph ---------------------------------------------------------
def _batch_k(value_info: onnx.ValueInfoProto) -> list[str | int]:
    """The (batch, K) dims of a candidates input, as make_tensor_value_info takes them."""
    dims = list(value_info.type.tensor_type.shape.dim)[:2]
    if len(dims) != 2:
        return ["batch", "k"]
    return [
        d.dim_param or d.dim_value or name for d, name in zip(dims, ("batch", "k"), strict=True)
    ]


def _free_prefix(graph: onnx.GraphProto) -> str:
    """``personal_head.``, or ``personal_head2.``, ... when the global graph already
    holds a head (e.g. a team's or a pooled head): the new names must not collide."""
    names = {i.name for i in graph.initializer} | {n.name for n in graph.node}
    names |= {t for n in graph.node for t in (*n.input, *n.output)}
    n, prefix = 1, _PREFIX + "."
    while any(name.startswith(prefix) for name in names):
        n += 1
        prefix = f"{_PREFIX}{n}."
    return prefix


def _rename_scores(graph: onnx.GraphProto, internal: str) -> onnx.TypeProto:
    """Make the global graph's ``scores`` the internal tensor ``internal``; return the
    output's type."""
    (output,) = [o for o in graph.output if o.name == OUTPUT_SCORES]
    kept = onnx.TypeProto()
    kept.CopyFrom(output.type)
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == OUTPUT_SCORES:
                    names[i] = internal
    for info in graph.value_info:
        if info.name == OUTPUT_SCORES:
            info.name = internal
    graph.output.remove(output)
    return kept


def _base_graph(feature_size: int) -> onnx.ModelProto:
    """An empty ranker graph: the two standard inputs, no nodes yet."""
    graph = helper.make_graph(
        [],
        "personal_ranker",
        [
            helper.make_tensor_value_info(
                INPUT_INSTRUCTION, TensorProto.FLOAT, ["batch", feature_size]
            ),
            helper.make_tensor_value_info(
                INPUT_CANDIDATES, TensorProto.FLOAT, ["batch", "k", feature_size]
            ),
        ],
        [],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=_IR_VERSION
    )


def _load_global(global_model: bytes) -> onnx.ModelProto:
    try:
        model = onnx.load_from_string(global_model)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise CorruptModelError(f"global ranker is not an ONNX model ({exc})") from exc
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    if {INPUT_INSTRUCTION, INPUT_CANDIDATES} - inputs or OUTPUT_SCORES not in outputs:
        raise CorruptModelError(
            f"global ranker is not a ranker graph: inputs {sorted(inputs)}, "
            f"outputs {sorted(outputs)}"
        )
    return model


def _check_same_features(
    global_identity: FeatureIdentity | None, identity: FeatureIdentity | None
) -> None:
    """A head must have learned from the model and layer the global graph reads."""
    if global_identity is None or identity is None:
        return
    # The head's own parts may differ from the global's: only model and layer must agree.
    problem = global_identity.mismatch(dataclasses.replace(identity, parts=()))
    if problem is not None:
        raise FeatureError(f"cannot put this head on the global ranker: the global {problem}")


def compose_ranker(
    head: TasteHead,
    global_model: bytes | None = None,
    metadata: Mapping[str, str] | None = None,
    identity: FeatureIdentity | None = None,
) -> bytes:
    """One ONNX ranker: ``global_model``'s scores (0 without one) times ``1 + u``, plus
    ``head``'s terms.

    ``identity`` names the features the head learned from (e.g. the generations'
    ``identity``); it is recorded beside what the global graph recorded, and
    raises FeatureError when it names another model or layer than that.
    """
    d = head.feature_size
    model = _load_global(global_model) if global_model is not None else _base_graph(d)
    graph = model.graph
    old_meta = {p.key: p.value for p in model.metadata_props}
    if global_model is not None and old_meta.get(META_FEATURE_SIZE, str(d)) != str(d):
        raise FeatureError(
            f"global ranker takes features of {old_meta[META_FEATURE_SIZE]} values, the head {d}"
        )
    _check_same_features(read_identity(old_meta), identity)
    inputs = {i.name: i for i in graph.input}
    batch_k = _batch_k(inputs[INPUT_CANDIDATES])
    terms: list[str] = []
    prefix = _free_prefix(graph)
    if global_model is not None:
        out_type = _rename_scores(graph, prefix + "global_scores")
        scale = prefix + "global.scale"
        graph.initializer.append(numpy_helper.from_array(np.array(head.global_scale), scale))
        graph.node.append(
            helper.make_node("Mul", [prefix + "global_scores", scale],
                             [prefix + "global"], name=scale + "_mul")
        )  # fmt: skip
        terms.append(prefix + "global")
    else:
        out_type = helper.make_tensor_type_proto(TensorProto.FLOAT, batch_k)
    for block in head.blocks:
        name = _INPUT_OF[block]
        if name not in inputs:
            size = d if block != "signals" else len(SIGNAL_NAMES)
            graph.input.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [*batch_k, size])
            )
        weight = f"{prefix}{block}.weight"
        graph.initializer.append(numpy_helper.from_array(head.weights[block], weight))
        graph.node.append(
            helper.make_node("MatMul", [name, weight], [f"{prefix}{block}"], name=weight + "_mm")
        )
        terms.append(f"{prefix}{block}")
    graph.node.append(helper.make_node("Sum", terms, [OUTPUT_SCORES], name=prefix + "sum"))
    graph.output.append(helper.make_value_info(OUTPUT_SCORES, out_type))
    blocks = [b for b in BLOCKS if b in head.blocks or b in graph_blocks(old_meta, inputs)]
    meta = {
        **old_meta,
        META_FORMAT: old_meta.get(META_FORMAT, FORMAT_VERSION),
        META_KIND: PERSONAL_KIND,
        META_BASE_KIND: old_meta.get(META_KIND, "none"),
        META_FEATURE_SIZE: str(d),
        META_REPRESENTATION: json.dumps(blocks),
        META_HEAD: json.dumps(
            {"blocks": list(head.blocks), "feature_size": d, "global_weight": head.global_weight}
        ),
        **identity_metadata(identity),
        **(dict(metadata or {})),
    }
    if "signals" in blocks:
        meta[META_SIGNALS_VERSION] = str(head.signals_version)
        meta[META_SIGNAL_NAMES] = json.dumps(list(SIGNAL_NAMES))
    stamp_ranker(model, meta)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise CorruptModelError(f"composed ranker graph is invalid: {exc}") from exc
    return model.SerializeToString()
