"""Ranking on device and talking to central: no torch.

Everything here needs only numpy, onnxruntime and grpc, so an app that only
ranks ships this room (and ``edge.app``) without torch:

- ``client``, ``async_client`` (one base in ``client_base``): CentralClient and
  its asyncio twin, returning candidates with numpy features;
- ``wire``, ``token_wire``: decoding the wire's tensors and per-token chunks;
- ``session``, ``scoring``: a loaded ONNX ranker graph (``OnnxSession``, the
  base SWIFT's token session shares) and onnxruntime scoring with hot swap
  (``Ranker``, ``RankingSession``), feeding every input a graph declares;
- ``parts``: the registry of a candidate's parts (last, mean, signals, lexicon): each
  part's graph input, width, source and version;
- ``scalars``: the model's numbers per candidate as columns (``Scalars``), what
  the signals, the store and the datasets read;
- ``signals``, ``lexicon``: the versioned on-device parts of a candidate's text (and scalars);
- ``types``, ``features``, ``onnx_meta``: the values apps get, feature checks,
  and the metadata keys every exported ranker carries;
- ``stamp``: what every writer of a ranker graph records in it (the exporters
  above and the on-device composer of ``edge.app``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge._lazy import lazy_exports

if TYPE_CHECKING:
    from edge.runtime.async_client import (
        AsyncCentralClient,
    )
    from edge.runtime.client import (
        CentralClient,
    )
    from edge.runtime.client_base import (
        ClientBase,
        FeatureOptions,
        GenerateOptions,
        Instruction,
        ModelInfo,
        PemSource,
        Prompt,
        StreamEvent,
        VectorOptions,
    )
    from edge.runtime.features import (
        as_candidates,
        as_vector,
        check_finite,
    )
    from edge.runtime.lexicon import (
        LEXICON_VERSION,
        LEXICON_WIDTH,
        candidate_lexicon,
        category_counts,
        category_names,
        lexicon_block,
    )
    from edge.runtime.onnx_meta import (
        FORMAT_VERSION,
        INPUT_CANDIDATES,
        INPUT_DESCRIPTIONS,
        INPUT_INSTRUCTION,
        INPUT_LEXICON,
        INPUT_MASK,
        INPUT_MEAN_CANDIDATES,
        INPUT_SIGNALS,
        INPUT_TOKENS,
        META_CONFIG,
        META_FEATURE_SIZE,
        META_FORMAT,
        META_INPUTS,
        META_KIND,
        META_LAYER,
        META_LEXICON_VERSION,
        META_PREFIX,
        META_RELEVANCE,
        META_REPRESENTATION,
        META_SIGNAL_NAMES,
        META_SIGNALS_VERSION,
        META_SOURCE_FORMAT,
        META_SOURCE_MODEL,
        META_SOURCE_SHA256,
        OUTPUT_SCORES,
        identity_metadata,
        input_doc,
        read_identity,
    )
    from edge.runtime.parts import (
        DEVICE_PARTS,
        PARTS,
        VECTOR_PARTS,
        DevicePart,
        Part,
        PartSpec,
        VectorPart,
        part_layout,
    )
    from edge.runtime.scalars import (
        SCALAR_COLUMNS,
        Scalars,
    )
    from edge.runtime.scoring import (
        Ranker,
        Ranking,
        RankingSession,
    )
    from edge.runtime.session import (
        ModelSource,
        OnnxSession,
        read_model,
        session_options,
    )
    from edge.runtime.signals import (
        SIGNAL_NAMES,
        SIGNALS_VERSION,
        candidate_signals,
        text_signals,
    )
    from edge.runtime.stamp import (
        stamp_ranker,
    )
    from edge.runtime.token_wire import (
        CandidateTokens,
        TokenAssembler,
        TokenFeatureRequest,
        token_spec,
    )
    from edge.runtime.types import (
        Candidate,
        FeatureIdentity,
        FinishReason,
        Generation,
        ResponseVectors,
        Usage,
    )
    from edge.runtime.wire import (
        ENCODINGS,
        decode_tensor,
    )

# public name -> the module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "LEXICON_VERSION": "edge.runtime.lexicon",
    "LEXICON_WIDTH": "edge.runtime.lexicon",
    "candidate_lexicon": "edge.runtime.lexicon",
    "category_counts": "edge.runtime.lexicon",
    "category_names": "edge.runtime.lexicon",
    "lexicon_block": "edge.runtime.lexicon",
    "INPUT_LEXICON": "edge.runtime.onnx_meta",
    "META_LEXICON_VERSION": "edge.runtime.onnx_meta",
    "DEVICE_PARTS": "edge.runtime.parts",
    "DevicePart": "edge.runtime.parts",
    "AsyncCentralClient": "edge.runtime.async_client",
    "Candidate": "edge.runtime.types",
    "CandidateTokens": "edge.runtime.token_wire",
    "CentralClient": "edge.runtime.client",
    "ClientBase": "edge.runtime.client_base",
    "ENCODINGS": "edge.runtime.wire",
    "FORMAT_VERSION": "edge.runtime.onnx_meta",
    "FeatureIdentity": "edge.runtime.types",
    "FeatureOptions": "edge.runtime.client_base",
    "FinishReason": "edge.runtime.types",
    "GenerateOptions": "edge.runtime.client_base",
    "Generation": "edge.runtime.types",
    "INPUT_CANDIDATES": "edge.runtime.onnx_meta",
    "INPUT_DESCRIPTIONS": "edge.runtime.onnx_meta",
    "INPUT_INSTRUCTION": "edge.runtime.onnx_meta",
    "INPUT_MASK": "edge.runtime.onnx_meta",
    "INPUT_MEAN_CANDIDATES": "edge.runtime.onnx_meta",
    "INPUT_SIGNALS": "edge.runtime.onnx_meta",
    "INPUT_TOKENS": "edge.runtime.onnx_meta",
    "Instruction": "edge.runtime.client_base",
    "META_CONFIG": "edge.runtime.onnx_meta",
    "META_FEATURE_SIZE": "edge.runtime.onnx_meta",
    "META_FORMAT": "edge.runtime.onnx_meta",
    "META_INPUTS": "edge.runtime.onnx_meta",
    "META_KIND": "edge.runtime.onnx_meta",
    "META_LAYER": "edge.runtime.onnx_meta",
    "META_PREFIX": "edge.runtime.onnx_meta",
    "META_RELEVANCE": "edge.runtime.onnx_meta",
    "META_REPRESENTATION": "edge.runtime.onnx_meta",
    "META_SIGNALS_VERSION": "edge.runtime.onnx_meta",
    "META_SIGNAL_NAMES": "edge.runtime.onnx_meta",
    "META_SOURCE_FORMAT": "edge.runtime.onnx_meta",
    "META_SOURCE_MODEL": "edge.runtime.onnx_meta",
    "META_SOURCE_SHA256": "edge.runtime.onnx_meta",
    "ModelInfo": "edge.runtime.client_base",
    "ModelSource": "edge.runtime.session",
    "OUTPUT_SCORES": "edge.runtime.onnx_meta",
    "OnnxSession": "edge.runtime.session",
    "PARTS": "edge.runtime.parts",
    "Part": "edge.runtime.parts",
    "PartSpec": "edge.runtime.parts",
    "PemSource": "edge.runtime.client_base",
    "Prompt": "edge.runtime.client_base",
    "Ranker": "edge.runtime.scoring",
    "Ranking": "edge.runtime.scoring",
    "RankingSession": "edge.runtime.scoring",
    "ResponseVectors": "edge.runtime.types",
    "SCALAR_COLUMNS": "edge.runtime.scalars",
    "SIGNALS_VERSION": "edge.runtime.signals",
    "SIGNAL_NAMES": "edge.runtime.signals",
    "Scalars": "edge.runtime.scalars",
    "StreamEvent": "edge.runtime.client_base",
    "TokenAssembler": "edge.runtime.token_wire",
    "TokenFeatureRequest": "edge.runtime.token_wire",
    "Usage": "edge.runtime.types",
    "VECTOR_PARTS": "edge.runtime.parts",
    "VectorOptions": "edge.runtime.client_base",
    "VectorPart": "edge.runtime.parts",
    "part_layout": "edge.runtime.parts",
    "as_candidates": "edge.runtime.features",
    "as_vector": "edge.runtime.features",
    "candidate_signals": "edge.runtime.signals",
    "check_finite": "edge.runtime.features",
    "decode_tensor": "edge.runtime.wire",
    "identity_metadata": "edge.runtime.onnx_meta",
    "input_doc": "edge.runtime.onnx_meta",
    "read_identity": "edge.runtime.onnx_meta",
    "read_model": "edge.runtime.session",
    "session_options": "edge.runtime.session",
    "stamp_ranker": "edge.runtime.stamp",
    "text_signals": "edge.runtime.signals",
    "token_spec": "edge.runtime.token_wire",
}

__all__ = [
    "DEVICE_PARTS",
    "ENCODINGS",
    "FORMAT_VERSION",
    "INPUT_CANDIDATES",
    "INPUT_DESCRIPTIONS",
    "INPUT_INSTRUCTION",
    "INPUT_LEXICON",
    "INPUT_MASK",
    "INPUT_MEAN_CANDIDATES",
    "INPUT_SIGNALS",
    "INPUT_TOKENS",
    "LEXICON_VERSION",
    "LEXICON_WIDTH",
    "META_CONFIG",
    "META_FEATURE_SIZE",
    "META_FORMAT",
    "META_INPUTS",
    "META_KIND",
    "META_LAYER",
    "META_LEXICON_VERSION",
    "META_PREFIX",
    "META_RELEVANCE",
    "META_REPRESENTATION",
    "META_SIGNALS_VERSION",
    "META_SIGNAL_NAMES",
    "META_SOURCE_FORMAT",
    "META_SOURCE_MODEL",
    "META_SOURCE_SHA256",
    "OUTPUT_SCORES",
    "PARTS",
    "SCALAR_COLUMNS",
    "SIGNALS_VERSION",
    "SIGNAL_NAMES",
    "VECTOR_PARTS",
    "AsyncCentralClient",
    "Candidate",
    "CandidateTokens",
    "CentralClient",
    "ClientBase",
    "DevicePart",
    "FeatureIdentity",
    "FeatureOptions",
    "FinishReason",
    "GenerateOptions",
    "Generation",
    "Instruction",
    "ModelInfo",
    "ModelSource",
    "OnnxSession",
    "Part",
    "PartSpec",
    "PemSource",
    "Prompt",
    "Ranker",
    "Ranking",
    "RankingSession",
    "ResponseVectors",
    "Scalars",
    "StreamEvent",
    "TokenAssembler",
    "TokenFeatureRequest",
    "Usage",
    "VectorOptions",
    "VectorPart",
    "as_candidates",
    "as_vector",
    "candidate_lexicon",
    "candidate_signals",
    "category_counts",
    "category_names",
    "check_finite",
    "decode_tensor",
    "identity_metadata",
    "input_doc",
    "lexicon_block",
    "part_layout",
    "read_identity",
    "read_model",
    "session_options",
    "stamp_ranker",
    "text_signals",
    "token_spec",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
