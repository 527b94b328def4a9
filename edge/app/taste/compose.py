"""A user's head on the global ranker as ONE ONNX graph (the ``onnx`` package, no torch).

``compose_ranker`` writes the global graph (its output renamed) times ``1 + u``
(a ``Mul`` by a scalar initializer), plus the head's vectors as initializers,
one ``MatMul`` per part on that part's input (``edge.runtime.parts``), and a
final ``Sum`` into ``scores``. Any runtime that can run the global graph can
run the user's, in any language; the batch and K axes stay dynamic. Without a
global ranker the graph is the head alone, and a head of zeros scores every
candidate 0, which keeps the first-sample order (``u`` weighs nothing there).

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

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge._errors import CorruptModelError, FeatureError
from edge.app.taste.head import TasteHead
from edge.runtime.onnx_meta import (
    FORMAT_VERSION,
    INPUT_CANDIDATES,
    INPUT_INSTRUCTION,
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
from edge.runtime.parts import PARTS, Part
from edge.runtime.signals import SIGNAL_NAMES
from edge.runtime.stamp import stamp_ranker
from edge.runtime.types import FeatureIdentity

__all__ = ["META_BASE_KIND", "META_HEAD", "PERSONAL_KIND", "compose_ranker", "graph_parts"]

PERSONAL_KIND = "personal"  # META_KIND of a composed graph
META_BASE_KIND = META_PREFIX + "base_kind"  # the global graph's kind, "none" without one
META_HEAD = META_PREFIX + "head"  # JSON: the head's parts ("blocks") and sizes
_OPSET, _IR_VERSION = 18, 9  # for a graph built without a global one
_PREFIX = "personal_head"  # names of every node and initializer the head adds start so


def graph_parts(metadata: Mapping[str, str], extra_inputs: Mapping[str, object]) -> list[Part]:
    """The parts a graph reads: its representation metadata, else its declared inputs."""
    declared = metadata.get(META_REPRESENTATION)
    if declared:
        try:
            return [p for p in json.loads(declared) if p in PARTS]
        except ValueError:
            pass
    return [p for p, spec in PARTS.items() if p == "last" or spec.input in extra_inputs]


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
    for part in head.parts:
        name = PARTS[part].input
        if name not in inputs:
            size = PARTS[part].size(d)
            graph.input.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [*batch_k, size])
            )
        weight = f"{prefix}{part}.weight"
        graph.initializer.append(numpy_helper.from_array(head.weights[part], weight))
        graph.node.append(
            helper.make_node("MatMul", [name, weight], [f"{prefix}{part}"], name=weight + "_mm")
        )
        terms.append(f"{prefix}{part}")
    graph.node.append(helper.make_node("Sum", terms, [OUTPUT_SCORES], name=prefix + "sum"))
    graph.output.append(helper.make_value_info(OUTPUT_SCORES, out_type))
    parts = [p for p in PARTS if p in head.parts or p in graph_parts(old_meta, inputs)]
    meta = {
        **old_meta,
        META_FORMAT: old_meta.get(META_FORMAT, FORMAT_VERSION),
        META_KIND: PERSONAL_KIND,
        META_BASE_KIND: old_meta.get(META_KIND, "none"),
        META_FEATURE_SIZE: str(d),
        META_REPRESENTATION: json.dumps(parts),
        META_HEAD: json.dumps(
            {"blocks": list(head.parts), "feature_size": d, "global_weight": head.global_weight}
        ),
        **identity_metadata(identity),
        **(dict(metadata or {})),
    }
    for part in parts:  # the version of each device part the graph reads
        key = PARTS[part].version_key
        if key is not None and part in head.parts:
            meta[key] = str(head.version_of(part))
    if "signals" in parts:
        meta.setdefault(META_SIGNALS_VERSION, str(head.signals_version))
        meta[META_SIGNAL_NAMES] = json.dumps(list(SIGNAL_NAMES))
    stamp_ranker(model, meta)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise CorruptModelError(f"composed ranker graph is invalid: {exc}") from exc
    return model.SerializeToString()
