"""A typed client for the central feature service.

Yields candidates with their features as numpy arrays as they stream in,
and turns gRPC failures into the edge exception hierarchy::

    with CentralClient("127.0.0.1:50051") as central:
        generation = central.generate("What is 12 + 7?", k=8, seed=0)
        generation.features.shape      # (8, hidden)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from edge.runtime.types import Candidate, Generation
from edge.runtime.wire import ENCODINGS, decode_tensor
from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

__all__ = [
    "CandidateTokens",
    "CentralClient",
    "Instruction",
    "ModelInfo",
    "Prompt",
    "TokenFeatureRequest",
]

# A plain string, or chat messages as {"role": ..., "content": ...} dicts.
Prompt = str | Sequence[dict[str, str]]

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


@dataclass(frozen=True)
class Instruction:
    """The first streamed event: the prompt's own feature."""

    feature: np.ndarray  # (hidden,) float32, hidden state of the last prompt token
    layer_index: int  # layer the features come from
    prompt_tokens: int  # prompt length after the chat template
    token_layers: tuple[int, ...] = ()  # per-token features: layers concatenated (hidden mode)
    token_feature_size: int = 0  # per-token features: values per token; 0 when not requested


class CentralClient:
    """Synchronous client; one channel, reusable and thread-safe."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 300.0,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | Path | None = None,
        max_receive_bytes: int = 64 * _MiB,
    ) -> None:
        """`timeout` is the per-call deadline in seconds; `token` is sent as a
        bearer token; `root_certificates` (PEM) enables TLS for a private CA."""
        self.target = target
        self.timeout = timeout
        self._metadata = _auth_metadata(token)
        self._channel = _open_channel(grpc, target, tls, root_certificates, max_receive_bytes)
        self._stub = pb_grpc.CentralServiceStub(self._channel)

    def __enter__(self) -> CentralClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Blocks until the channel connects; ConnectionLostError if it does not."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as error:
            raise ConnectionLostError(f"central at {self.target} is not reachable") from error

    def info(self) -> ModelInfo:
        return _info(self._call(self._stub.Info, pb.InfoRequest()))

    def stream(
        self,
        prompt: Prompt,
        k: int,
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int = 0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        layer: float | int | None = None,
        encoding: str = "fp16",
        raw: bool = False,
        timeout: float | None = None,
        token_features: TokenFeatureRequest | bool | None = None,
        ranker: object | None = None,
    ) -> Iterator[Instruction | Candidate | CandidateTokens]:
        """Yields the Instruction, then each Candidate as the server finishes it.

        `layer` is a fraction of depth (a float) or a layer index (an int);
        None uses the server's default (0.6 of depth).

        Per-token features (SWIFT) are asked for only with `token_features`
        (True for the server's defaults) or when `ranker` says it needs them
        (`needs_token_features`); they then follow the candidates as one
        `CandidateTokens` per candidate, reassembled from the server's chunks.
        """
        if token_features is None and ranker is not None:
            token_features = TokenFeatureRequest.for_ranker(ranker, encoding)
        request = _generate_request(
            prompt, k, temperature=temperature, top_p=top_p, top_k=top_k,
            max_new_tokens=max_new_tokens, seed=seed, layer=layer, encoding=encoding, raw=raw,
            token_features=token_spec(token_features),
        )  # fmt: skip
        assembler = TokenAssembler()
        responses = self._stub.Generate(
            request, timeout=self._timeout(timeout), metadata=self._metadata
        )
        try:
            for response in responses:
                event = response.WhichOneof("event")
                if event == "instruction":
                    yield _instruction(response.instruction)
                elif event == "candidate":
                    yield _candidate(response.candidate)
                elif event == "token_features" and request.token_features.enabled:
                    done = assembler.add(response.token_features)
                    if done is not None:
                        yield done
        except grpc.RpcError as error:
            raise _translate(error, self.target) from error
        finally:
            responses.cancel()  # stops generation on the server if we stop early
        if assembler.pending:
            raise ServerError(f"stream ended inside the token features of {assembler.pending}")

    def generate(self, prompt: Prompt, k: int, **options: Any) -> Generation:
        """All K candidates, sorted by index, with the shared instruction feature.

        Takes the same keyword options as `stream`; with per-token features
        requested, each candidate carries its (T, D) `token_features`.
        """
        instruction: Instruction | None = None
        candidates: list[Candidate] = []
        tokens: dict[int, np.ndarray] = {}
        for event in self.stream(prompt, k, **options):
            if isinstance(event, Instruction):
                instruction = event
            elif isinstance(event, CandidateTokens):
                tokens[event.index] = event.features
            else:
                candidates.append(event)
        if instruction is None or len(candidates) != k:
            raise ServerError(f"stream ended early: got {len(candidates)} of {k} candidates")
        if instruction.token_feature_size:
            candidates = _with_tokens(candidates, tokens)
        return Generation(
            prompt=prompt if isinstance(prompt, str) else str(list(prompt)),
            instruction=instruction.feature,
            candidates=tuple(sorted(candidates, key=lambda c: c.index)),
            layer_index=instruction.layer_index,
        )

    def features(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        *,
        layer: float | int | None = None,
        encoding: str = "fp16",
        raw: bool = False,
        timeout: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features for responses you already have: (instruction (d,), responses (n, d))."""
        request = pb.FeaturesRequest(
            prompt=_prompt(prompt, raw),
            responses=list(responses),
            features=_feature_spec(layer, encoding),
        )
        reply = self._call(self._stub.Features, request, timeout)
        instruction = decode_tensor(reply.instruction.feature)
        if not reply.features:
            return instruction, np.zeros((0, instruction.shape[0]), np.float32)
        return instruction, np.stack([decode_tensor(t) for t in reply.features])

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise _translate(error, self.target) from error

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout


def _auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _open_channel(
    api: Any,
    target: str,
    tls: bool,
    root_certificates: bytes | Path | None,
    max_receive_bytes: int,
) -> Any:
    """A channel from `api` (`grpc` or `grpc.aio`, which share these calls);
    TLS when asked for or when private root certificates are given."""
    options = [("grpc.max_receive_message_length", max_receive_bytes)]
    if not (tls or root_certificates is not None):
        return api.insecure_channel(target, options=options)
    if isinstance(root_certificates, Path):
        root_certificates = root_certificates.read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    return api.secure_channel(target, credentials, options=options)


def _info(reply: pb.InfoResponse) -> ModelInfo:
    names = {v: k for k, v in ENCODINGS.items()}
    return ModelInfo(
        model_name=reply.model_name,
        num_layers=reply.num_layers,
        hidden_size=reply.hidden_size,
        context_length=reply.context_length,
        max_k=reply.max_k,
        default_layer_index=reply.default_layer_index,
        has_chat_template=reply.has_chat_template,
        encodings=tuple(names[e] for e in reply.encodings if e in names),
        default_token_layers=tuple(reply.default_token_layers),
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
    layer: float | int | None = None,
    encoding: str = "fp16",
    raw: bool = False,
    token_features: pb.TokenFeatureSpec | None = None,
) -> pb.GenerateRequest:
    """The wire request; unset sampling fields stay unset so the server's defaults apply.

    Without `token_features` the request is byte for byte what it was before
    per-token features existed.
    """
    return pb.GenerateRequest(
        prompt=_prompt(prompt, raw),
        k=k,
        sampling=pb.SamplingParams(
            temperature=temperature, top_p=top_p, top_k=top_k,
            max_new_tokens=max_new_tokens, seed=seed,
        ),
        features=_feature_spec(layer, encoding),
        token_features=token_features,
    )  # fmt: skip


def _with_tokens(candidates: list[Candidate], tokens: dict[int, np.ndarray]) -> list[Candidate]:
    """Candidates carrying their per-token features; every one must have arrived."""
    missing = sorted({c.index for c in candidates} - tokens.keys())
    if missing:
        raise ServerError(f"stream ended without the token features of candidates {missing}")
    return [dataclasses.replace(c, token_features=tokens[c.index]) for c in candidates]


def _prompt(prompt: Prompt, raw: bool) -> pb.Prompt:
    if isinstance(prompt, str):
        return pb.Prompt(text=prompt, raw=raw)
    messages = [pb.ChatMessage(role=m["role"], content=m["content"]) for m in prompt]
    return pb.Prompt(chat=pb.Chat(messages=messages))


def _feature_spec(layer: float | int | None, encoding: str) -> pb.FeatureSpec:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    spec = pb.FeatureSpec(encoding=ENCODINGS[encoding])
    if isinstance(layer, bool):
        raise TypeError("layer must be a float fraction or an int index")
    if isinstance(layer, int):
        spec.layer_index = layer
    elif isinstance(layer, float):
        spec.layer_fraction = layer
    return spec


def _instruction(message: pb.InstructionFeature) -> Instruction:
    return Instruction(
        feature=decode_tensor(message.feature),
        layer_index=message.layer_index,
        prompt_tokens=message.prompt_tokens,
        token_layers=tuple(message.token_features.layers),
        token_feature_size=message.token_features.feature_size,
    )


def _candidate(message: pb.Candidate) -> Candidate:
    return Candidate(
        index=message.index,
        text=message.text,
        token_ids=tuple(message.token_ids),
        finish_reason="eos" if message.finish_reason == pb.FINISH_REASON_EOS else "length",
        cumulative_logprob=message.cumulative_logprob,
        feature=decode_tensor(message.feature),
    )


def _translate(error: grpc.RpcError, target: str) -> CentralError:
    """Maps a gRPC status to the edge exception an app can act on."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequestError(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(f"call to central at {target} ran past its deadline")
    if code == grpc.StatusCode.UNAVAILABLE:
        return ConnectionLostError(f"central at {target} is unavailable: {details}")
    if code == grpc.StatusCode.CANCELLED:
        return ConnectionLostError(f"call to central at {target} was cancelled: {details}")
    name = code.name if code is not None else "UNKNOWN"
    return ServerError(f"central at {target} answered {name}: {details}")
