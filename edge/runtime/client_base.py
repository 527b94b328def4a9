"""What `CentralClient` and `AsyncCentralClient` share, written once.

The two clients differ only in how they wait for the network: one blocks, the
other awaits. Everything else lives here, in one base class, the way httpx
splits ``BaseClient`` from ``Client`` and ``AsyncClient``:

- connection options (deadline, bearer token, TLS with certificates as paths
  or PEM bytes) become one channel recipe, opened by each client's gRPC flavour;
- requests are built by ``build_generate_request`` and ``build_features_request``;
- replies are decoded here: the Generate stream's events (instruction, candidates,
  per-token feature chunks, usage) and their assembly into a ``Generation``,
  whose ``identity`` (model name and weights checksum from Info, the layer and
  the vectors from the stream) lets a ranker refuse features of another model;
  each client asks Info once and keeps the answer until the server is lost;
- gRPC status codes become the edge exceptions of ``edge._errors``.

So each client keeps only its I/O loop (call, iterate, cancel), and a field the
server starts sending is decoded by one line in ``_decode_candidate`` or
``_decode_instruction``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypedDict, Unpack

import grpc
import numpy as np

from edge._errors import (
    CentralError,
    ConnectionLostError,
    DeadlineExceededError,
    InvalidRequestError,
    ServerError,
)
from edge.runtime.token_wire import CandidateTokens, TokenAssembler, TokenFeatureRequest, token_spec
from edge.runtime.types import Candidate, FeatureIdentity, Generation, ResponseVectors, Usage
from edge.runtime.wire import ENCODINGS, decode_tensor
from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

__all__ = [
    "ClientBase",
    "FeatureOptions",
    "GenerateOptions",
    "Instruction",
    "ModelInfo",
    "PemSource",
    "Prompt",
    "StreamEvent",
    "VectorOptions",
]

# A plain string, or chat messages as {"role": ..., "content": ...} dicts.
Prompt = str | Sequence[dict[str, str]]

# PEM data as bytes (or as text starting with "-----BEGIN"), or the path of a PEM file.
PemSource = bytes | str | os.PathLike[str]

_MiB = 1 << 20


@dataclass(frozen=True)
class ModelInfo:
    """What central reports about its model and limits."""

    model_name: str  # e.g. "SmolLM2-135M-Instruct.Q4_1"
    num_layers: int  # feature layers are numbered 0..num_layers
    hidden_size: int  # length of every feature vector
    context_length: int  # longest prompt + response, in tokens
    max_k: int  # largest K a Generate request may ask for
    default_layer_index: int  # layer used when a request names none
    has_chat_template: bool  # whether plain prompts are wrapped as a user message
    encodings: tuple[str, ...]  # feature encodings the server can produce
    default_token_layers: tuple[int, ...] = ()  # per-token layers when a request names none
    # sha256 hex of the model's weights (64 digits); "" from a server that predates it
    model_sha256: str = ""
    greedy_first: bool = False  # whether the server honours `greedy_first` (older ones do not)
    # how central computes the features: "int8" or a dense dtype; "" from an older server
    weights_format: str = ""
    # the `vectors` a request may ask for ("last", "mean", "embedding_mean"); () from a
    # server older than representation v2 (it sends "last" only)
    feature_vectors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Instruction:
    """The first streamed event: the prompt's own feature."""

    feature: np.ndarray  # (hidden,) float32, hidden state of the last prompt token
    layer_index: int  # layer the features come from
    prompt_tokens: int  # prompt length after the chat template
    token_layers: tuple[int, ...] = ()  # per-token features: layers concatenated (hidden mode)
    token_feature_size: int = 0  # per-token features: values per token; 0 when not requested


# What `stream()` yields: the instruction, then candidates, then per-token features.
StreamEvent = Instruction | Candidate | CandidateTokens


class FeatureOptions(TypedDict, total=False):
    """Keyword options shared by `generate`, `stream` and `features` (all optional)."""

    # a fraction of depth (float) or a layer index (int); None: the server's default (0.6)
    layer: float | int | None
    encoding: str  # on the wire: "fp16" (default), "fp32" or "int8"; decoded to float32
    raw: bool  # send a plain prompt as is, without the chat template


class VectorOptions(FeatureOptions, total=False):
    """Keyword options of `generate`, `stream` and `response_vectors`: which vectors."""

    # vectors per candidate (representation v2), any of "last" (Candidate.feature), "mean"
    # (Candidate.mean_feature) and "embedding_mean" (Candidate.embedding_mean_feature, from
    # servers whose Info lists it); None or empty: the last token's alone, the v1 stream
    vectors: Sequence[str] | None
    mean_entropy: bool  # also send each candidate's mean entropy (Candidate.mean_entropy)


class GenerateOptions(VectorOptions, total=False):
    """Keyword options of `generate` and `stream`; unset sampling fields use the server's."""

    temperature: float | None  # softmax temperature, 0 is greedy; server default 1.0
    top_p: float | None  # nucleus mass in (0, 1]; server default 1.0 (off)
    top_k: int  # keep the k most likely tokens; 0 (default) is off
    max_new_tokens: int | None  # tokens per response; server default 128
    seed: int | None  # reproducible sampling; random when None
    # candidate 0 is the greedy decode, the rest sampled (SamplingParams.greedy_first)
    greedy_first: bool
    # per-token features (SWIFT): True for the server's defaults, or which ones
    token_features: TokenFeatureRequest | bool | None
    # a ranker whose `needs_token_features` decides `token_features` when that is None
    ranker: object | None


class ClientBase:
    """Options, requests, decoding and errors of a central client; no I/O.

    A subclass names its gRPC flavour in `_grpc` (``grpc`` or ``grpc.aio``,
    which share ``insecure_channel`` and ``secure_channel``) and writes the
    loops that call the stub.
    """

    _grpc: ClassVar[Any]  # grpc or grpc.aio: the module whose channels the client opens

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 300.0,
        token: str | None = None,
        tls: bool = False,
        root_certificates: PemSource | None = None,
        private_key: PemSource | None = None,
        certificate_chain: PemSource | None = None,
        max_receive_bytes: int = 64 * _MiB,
    ) -> None:
        """Opens a channel to `target` (connecting lazily, on the first call).

        `timeout` is the per-call deadline in seconds (None: none), overridable
        per call. `token` is sent as ``authorization: Bearer <token>``. TLS is on
        when `tls` is set or any certificate is given: `root_certificates` trusts
        a private CA instead of the system's roots, and `private_key` with
        `certificate_chain` present a client certificate (mutual TLS). Each
        certificate is PEM bytes or the path of a PEM file.
        """
        self.target = target
        self.timeout = timeout
        self._metadata = _auth_metadata(token)
        options = [("grpc.max_receive_message_length", max_receive_bytes)]
        credentials = _credentials(tls, root_certificates, private_key, certificate_chain)
        if credentials is None:
            self._channel = self._grpc.insecure_channel(target, options=options)
        else:
            self._channel = self._grpc.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.CentralServiceStub(self._channel)
        # Info as last answered: names the model in every Generation's identity; dropped
        # when the server is lost, since the one that comes back may serve another model
        self._info: ModelInfo | None = None

    def build_generate_request(
        self, prompt: Prompt, k: int, **options: Unpack[GenerateOptions]
    ) -> pb.GenerateRequest:
        """The wire request `generate` and `stream` send.

        Unset sampling fields stay unset so the server's defaults apply; without
        per-token features the request is byte for byte what it was before they
        existed. A K below 1 raises ValueError and an unknown option TypeError,
        each naming the value, before anything is sent.
        """
        _check_options("generate", options, GenerateOptions)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a whole number of candidates, at least 1; got {k!r}")
        return _generate_request(prompt, int(k), **options)

    def build_features_request(
        self, prompt: Prompt, responses: Sequence[str], **options: Unpack[VectorOptions]
    ) -> pb.FeaturesRequest:
        """The wire request `features` (no `vectors`: the last token's alone) and
        `response_vectors` send."""
        _check_options("features", options, VectorOptions)
        spec = _feature_spec(
            options.get("layer"),
            options.get("encoding", "fp16"),
            options.get("vectors"),
            options.get("mean_entropy", False),
        )
        return pb.FeaturesRequest(
            prompt=_prompt(prompt, options.get("raw", False)),
            responses=list(responses),
            features=spec,
        )

    def _deadline(self, timeout: float | None) -> float | None:
        """A call's deadline: its own `timeout`, else the client's."""
        return self.timeout if timeout is None else timeout

    def _error(self, error: grpc.RpcError) -> CentralError:
        """Maps a gRPC status to the edge exception an app can act on."""
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else str(error)
        target = self.target
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidRequestError(details)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceededError(f"call to central at {target} ran past its deadline")
        if code == grpc.StatusCode.UNAVAILABLE:
            self._info = None
            return ConnectionLostError(f"central at {target} is unavailable: {details}")
        if code == grpc.StatusCode.CANCELLED:
            return ConnectionLostError(f"call to central at {target} was cancelled: {details}")
        name = code.name if code is not None else "UNKNOWN"
        return ServerError(f"central at {target} answered {name}: {details}")

    def _not_ready(self) -> ConnectionLostError:
        return ConnectionLostError(f"central at {self.target} is not reachable")

    @staticmethod
    def _stream_decoder(request: pb.GenerateRequest) -> _StreamDecoder:
        return _StreamDecoder(token_features=request.token_features.enabled)

    @staticmethod
    def _generation_builder(prompt: Prompt, k: int) -> _GenerationBuilder:
        return _GenerationBuilder(prompt, k)

    def _decode_info(self, reply: pb.InfoResponse) -> ModelInfo:
        """The reply as a ModelInfo, also kept for the identity of later generations."""
        names = {v: k for k, v in ENCODINGS.items()}
        vectors = {v: k for k, v in _VECTORS.items()}
        self._info = ModelInfo(
            model_name=reply.model_name,
            num_layers=reply.num_layers,
            hidden_size=reply.hidden_size,
            context_length=reply.context_length,
            max_k=reply.max_k,
            default_layer_index=reply.default_layer_index,
            has_chat_template=reply.has_chat_template,
            encodings=tuple(names[e] for e in reply.encodings if e in names),
            default_token_layers=tuple(reply.default_token_layers),
            model_sha256=reply.model_sha256,
            greedy_first=reply.greedy_first,
            weights_format=reply.weights_format,
            feature_vectors=tuple(vectors[v] for v in reply.feature_vectors if v in vectors),
        )
        return self._info

    @staticmethod
    def _decode_features(reply: pb.FeaturesResponse) -> tuple[np.ndarray, np.ndarray]:
        """(instruction (d,), responses (n, d)), both float32."""
        instruction = decode_tensor(reply.instruction.feature)
        if not reply.features:
            return instruction, np.zeros((0, instruction.shape[0]), np.float32)
        return instruction, np.stack([decode_tensor(t) for t in reply.features])

    @staticmethod
    def _decode_vectors(
        request: pb.FeaturesRequest, reply: pb.FeaturesResponse, model: ModelInfo | None
    ) -> ResponseVectors:
        """The reply to `request` as `ResponseVectors`; `model` (Info) names its model."""
        instruction = decode_tensor(reply.instruction.feature)
        count, width = len(request.responses), instruction.shape[0]
        asked = set(request.features.vectors) or {pb.FEATURE_VECTOR_LAST}

        def rows(vector: int, tensors: Sequence[pb.Tensor]) -> np.ndarray | None:
            if vector not in asked or (count and not tensors):  # not asked, or not sent
                return None
            if len(tensors) != count:
                raise ServerError(f"Features sent {len(tensors)} vectors for {count} responses")
            if not tensors:
                return np.zeros((0, width), np.float32)
            return np.stack([decode_tensor(t) for t in tensors])

        entropies = reply.mean_entropies
        if request.features.mean_entropy and len(entropies) not in (0, count):
            raise ServerError(f"Features sent {len(entropies)} entropies for {count} responses")
        vectors = ResponseVectors(
            instruction=instruction,
            layer_index=reply.instruction.layer_index,
            last=rows(pb.FEATURE_VECTOR_LAST, reply.features),
            mean=rows(pb.FEATURE_VECTOR_MEAN, reply.mean_features),
            embedding_mean=rows(pb.FEATURE_VECTOR_EMBEDDING_MEAN, reply.embedding_mean_features),
            mean_entropy=np.asarray(entropies, np.float32)
            if request.features.mean_entropy and len(entropies) == count
            else None,
        )
        parts = [
            name
            for name, array in (
                ("last", vectors.last),
                ("mean", vectors.mean),
                ("embedding_mean", vectors.embedding_mean),
            )
            if array is not None
        ]
        identity = _identity_of(model, vectors.layer_index, tuple(parts))
        return dataclasses.replace(vectors, identity=identity)


# ------------------------------------------------------------------ the Generate stream

# Everything a Generate stream carries; `stream()` passes on all but the Usage.
_Event = StreamEvent | Usage


class _StreamDecoder:
    """Turns GenerateResponse messages into events, reassembling per-token chunks."""

    def __init__(self, token_features: bool) -> None:
        self._token_features = token_features  # whether the request asked for them
        self._tokens = TokenAssembler()

    def decode(self, response: pb.GenerateResponse) -> _Event | None:
        """The event this message completes, or None (a token chunk mid-candidate)."""
        event = response.WhichOneof("event")
        if event == "instruction":
            return _decode_instruction(response.instruction)
        if event == "candidate":
            return _decode_candidate(response.candidate)
        if event == "token_features" and self._token_features:
            return self._tokens.add(response.token_features)
        if event == "usage":
            return Usage(
                prompt_tokens=response.usage.prompt_tokens,
                generated_tokens=response.usage.generated_tokens,
                seconds=response.usage.seconds,
            )
        return None  # an event this client does not know: newer servers may send more

    def finish(self) -> None:
        """Called when the stream ended without error; a truncated chunk is one."""
        if self._tokens.pending:
            raise ServerError(f"stream ended inside the token features of {self._tokens.pending}")


class _GenerationBuilder:
    """Collects a stream's events into the `Generation` that `generate` returns."""

    def __init__(self, prompt: Prompt, k: int) -> None:
        self.prompt = prompt
        self.k = k
        self.instruction: Instruction | None = None
        self.candidates: list[Candidate] = []
        self.tokens: dict[int, np.ndarray] = {}
        self.usage: Usage | None = None

    def add(self, event: _Event) -> None:
        if isinstance(event, Instruction):
            self.instruction = event
        elif isinstance(event, Candidate):
            self.candidates.append(event)
        elif isinstance(event, CandidateTokens):
            self.tokens[event.index] = event.features
        else:
            self.usage = event

    def build(self, model: ModelInfo | None = None) -> Generation:
        """All K candidates sorted by index; each with its (T, D) per-token features
        when they were requested. `model` (central's Info; None when it could not
        be had) names the model in the generation's identity."""
        instruction, candidates = self.instruction, self.candidates
        if instruction is None or len(candidates) != self.k:
            raise ServerError(f"stream ended early: got {len(candidates)} of {self.k} candidates")
        if instruction.token_feature_size:
            candidates = _with_tokens(candidates, self.tokens)
        prompt = self.prompt
        return Generation(
            prompt=prompt if isinstance(prompt, str) else str(list(prompt)),
            instruction=instruction.feature,
            candidates=tuple(sorted(candidates, key=lambda c: c.index)),
            layer_index=instruction.layer_index,
            usage=self.usage,
            identity=_identity(model, instruction.layer_index, candidates),
        )


def _identity(
    model: ModelInfo | None, layer_index: int, candidates: Sequence[Candidate]
) -> FeatureIdentity:
    """The features' identity: the model per Info, the layer and the vectors per the stream."""
    parts = []
    if all(c.feature.size for c in candidates):
        parts.append("last")
    if all(c.mean_feature is not None for c in candidates):
        parts.append("mean")
    if all(c.embedding_mean_feature is not None for c in candidates):
        parts.append("embedding_mean")
    return _identity_of(model, layer_index, tuple(parts))


def _identity_of(
    model: ModelInfo | None, layer_index: int, parts: tuple[str, ...]
) -> FeatureIdentity:
    return FeatureIdentity(
        model_name=model.model_name if model else "",
        model_sha256=model.model_sha256 if model else "",
        layer_index=layer_index,
        weights_format=model.weights_format if model else "",
        parts=parts,
    )


def _with_tokens(candidates: list[Candidate], tokens: dict[int, np.ndarray]) -> list[Candidate]:
    """Candidates carrying their per-token features; every one must have arrived."""
    missing = sorted({c.index for c in candidates} - tokens.keys())
    if missing:
        raise ServerError(f"stream ended without the token features of candidates {missing}")
    return [dataclasses.replace(c, token_features=tokens[c.index]) for c in candidates]


# ------------------------------------------------------------------ decoding messages


def _decode_instruction(message: pb.InstructionFeature) -> Instruction:
    return Instruction(
        feature=decode_tensor(message.feature),
        layer_index=message.layer_index,
        prompt_tokens=message.prompt_tokens,
        token_layers=tuple(message.token_features.layers),
        token_feature_size=message.token_features.feature_size,
    )


def _decode_candidate(message: pb.Candidate) -> Candidate:
    """One line per field; fields newer than the server are None (see `_optional`)."""
    return Candidate(
        index=message.index,
        text=message.text,
        token_ids=tuple(message.token_ids),
        finish_reason="eos" if message.finish_reason == pb.FINISH_REASON_EOS else "length",
        cumulative_logprob=message.cumulative_logprob,
        feature=_last_token_vector(message),
        mean_feature=_optional_tensor(message, "mean_feature"),
        mean_entropy=_optional_float(message, "mean_entropy"),
        embedding_mean_feature=_optional_tensor(message, "embedding_mean_feature"),
    )


def _last_token_vector(message: pb.Candidate) -> np.ndarray:
    """`feature`, or an empty (0,) array when the request's `vectors` left "last" out."""
    if not message.HasField("feature"):
        return np.empty(0, np.float32)
    return decode_tensor(message.feature)


def _optional(message: Any, name: str) -> Any:
    """The field's value, or None when it is unset or this proto version lacks it.

    Representation-v2 fields are optional on the wire: older servers (and
    older generated code) do not know them, and the edge types say None then.
    """
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None or (field.has_presence and not message.HasField(name)):
        return None
    return getattr(message, name)


def _optional_tensor(message: Any, name: str) -> np.ndarray | None:
    tensor = _optional(message, name)
    return None if tensor is None else decode_tensor(tensor)


def _optional_float(message: Any, name: str) -> float | None:
    value = _optional(message, name)
    return None if value is None else float(value)


# ------------------------------------------------------------------ building requests


def _check_options(method: str, options: Any, known: Any) -> None:
    """TypeError naming an option ``known`` (a TypedDict) lacks, and the closest one."""
    names = sorted(known.__required_keys__ | known.__optional_keys__)
    for name in options:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"{method}() got an unknown option {name!r}{hint}; its options are "
                f"{', '.join(names)} and timeout"
            )


def _generate_request(
    prompt: Prompt,
    k: int,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int = 0,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    greedy_first: bool = False,
    layer: float | int | None = None,
    encoding: str = "fp16",
    raw: bool = False,
    token_features: TokenFeatureRequest | bool | None = None,
    ranker: object | None = None,
    vectors: Sequence[str] | None = None,
    mean_entropy: bool = False,
) -> pb.GenerateRequest:
    """See `ClientBase.build_generate_request`; the defaults of `GenerateOptions` live here."""
    if token_features is None and ranker is not None:
        token_features = TokenFeatureRequest.for_ranker(ranker, encoding)
    return pb.GenerateRequest(
        prompt=_prompt(prompt, raw),
        k=k,
        sampling=pb.SamplingParams(
            temperature=temperature, top_p=top_p, top_k=top_k,
            max_new_tokens=max_new_tokens, seed=seed, greedy_first=greedy_first,
        ),
        features=_feature_spec(layer, encoding, vectors, mean_entropy),
        token_features=token_spec(token_features),
    )  # fmt: skip


def _prompt(prompt: Prompt, raw: bool) -> pb.Prompt:
    if isinstance(prompt, str):
        return pb.Prompt(text=prompt, raw=raw)
    messages = [pb.ChatMessage(role=m["role"], content=m["content"]) for m in prompt]
    return pb.Prompt(chat=pb.Chat(messages=messages))


# The names of FeatureSpec.vectors, as `vectors=` and FeatureIdentity.parts spell them.
_VECTORS = {
    "last": pb.FEATURE_VECTOR_LAST,
    "mean": pb.FEATURE_VECTOR_MEAN,
    "embedding_mean": pb.FEATURE_VECTOR_EMBEDDING_MEAN,
}


def _feature_spec(
    layer: float | int | None,
    encoding: str,
    vectors: Sequence[str] | None = None,
    mean_entropy: bool = False,
) -> pb.FeatureSpec:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    unknown = sorted(set(vectors or ()) - _VECTORS.keys())
    if unknown:
        raise ValueError(f"vectors must be among {sorted(_VECTORS)}, got {unknown}")
    spec = pb.FeatureSpec(
        encoding=ENCODINGS[encoding],
        vectors=[_VECTORS[v] for v in vectors or ()],
        mean_entropy=mean_entropy,
    )
    if isinstance(layer, bool):
        raise TypeError("layer must be a float fraction or an int index")
    if isinstance(layer, int):
        spec.layer_index = layer
    elif isinstance(layer, float):
        spec.layer_fraction = layer
    return spec


# ------------------------------------------------------------------ connection options


def _auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The bearer-token header; a blank token or one with stray whitespace is refused,
    since it would silently turn authentication off or never match."""
    if token is None:
        return ()
    if not token.strip():
        raise ValueError("token is empty; pass token=None to call central without one")
    if token != token.strip():
        raise ValueError("token has leading or trailing whitespace (a newline from a file?)")
    return (("authorization", f"Bearer {token}"),)


def _credentials(
    tls: bool,
    root_certificates: PemSource | None,
    private_key: PemSource | None,
    certificate_chain: PemSource | None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials when TLS is asked for or any certificate is given; else None."""
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("private_key and certificate_chain go together (mutual TLS)")
    wanted = (root_certificates, private_key, certificate_chain)
    if not tls and all(source is None for source in wanted):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(root_certificates, "root_certificates"),
        private_key=_read_pem(private_key, "private_key"),
        certificate_chain=_read_pem(certificate_chain, "certificate_chain"),
    )


def _read_pem(source: PemSource | None, what: str) -> bytes | None:
    """PEM bytes from bytes, PEM text, or a file path; errors name the option and the path."""
    if source is None:
        return None
    if isinstance(source, bytes | bytearray):
        data, origin = bytes(source), "the bytes given"
    elif isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        data, origin = source.encode(), "the text given"
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError as error:
            raise FileNotFoundError(error.errno, f"{what}: no such file", str(path)) from None
        except OSError as error:
            raise type(error)(error.errno, f"{what}: cannot read", str(path)) from error
        origin = str(path)
    if b"-----BEGIN" not in data:
        raise ValueError(f"{what}: {origin} is not PEM (no '-----BEGIN' line)")
    return data
