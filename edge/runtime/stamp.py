"""Stamping an ONNX ranker graph with what it is: metadata and input doc strings (no torch).

Every writer of a ranker graph (``edge.training.export_onnx``,
``edge.swift.export_swift_onnx`` and ``edge.app.taste.compose_ranker``) ends
here, in the lowest room they all share, so every ranker file says the same
things the same way: its ``language_ranker.*`` metadata entries, a
``language_ranker.inputs`` entry listing each input's name, dtype and shape,
and on each input a doc string naming the same plus what it holds, the source
model and layer when known, and that fp16 wire features must be widened to
float32. It needs the ``onnx`` package (a base dependency), which ranking
itself never imports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import onnx
from onnx import helper

from edge.runtime.onnx_meta import META_INPUTS, input_doc, read_identity

__all__ = ["stamp_ranker"]


def stamp_ranker(model: onnx.ModelProto, entries: Mapping[str, object]) -> None:
    """Replace `model`'s metadata with `entries` (plus ``META_INPUTS``) and document its inputs.

    The doc strings name the source model and layer that `entries` record
    (``META_SOURCE_*``, ``META_LAYER``), so they always agree with the metadata.
    """
    meta = {key: str(value) for key, value in entries.items()}
    identity = read_identity(meta)
    specs = []
    for value_info in model.graph.input:
        dtype, shape = _dtype(value_info), _shape(value_info)
        value_info.doc_string = input_doc(value_info.name, shape, identity)
        specs.append({"name": value_info.name, "dtype": dtype, "shape": shape})
    meta[META_INPUTS] = json.dumps(specs)
    del model.metadata_props[:]
    for key, value in sorted(meta.items()):
        model.metadata_props.add(key=key, value=value)


def _dtype(value_info: onnx.ValueInfoProto) -> str:
    elem = value_info.type.tensor_type.elem_type
    return str(helper.tensor_dtype_to_np_dtype(elem)) if elem else "unknown"


def _shape(value_info: onnx.ValueInfoProto) -> list[str | int]:
    """Each axis as its fixed size or its symbolic name ("?" when it has neither)."""
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value_info.type.tensor_type.shape.dim
    ]
