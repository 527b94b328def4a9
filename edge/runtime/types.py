"""The values the edge SDK hands to apps: candidates with decoded features."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "Candidate",
    "FeatureIdentity",
    "FinishReason",
    "Generation",
    "ResponseVectors",
    "Usage",
]

FinishReason = Literal["eos", "length"]
SHA_DIGITS = 16  # hex digits of the weights' sha256 an identity keeps (64 bits)


@dataclass(frozen=True)
class FeatureIdentity:
    """Which feature space vectors live in: the model whose hidden states they are,
    the layer they were taken at, and the parts of a candidate at hand.

    Two models of the same width (or two layers of one model, or one model run
    with int8 and with fp32 linears) give vectors a ranker cannot tell apart
    by shape, yet scoring one with a ranker trained on the other is
    meaningless (across weight formats: quietly a little off). So an exported
    ranker records the identity it was trained on (``edge.runtime.onnx_meta``),
    a `Generation` from the client carries the one central produced, and
    ranking a generation asks `mismatch` first. A field left unknown ("" or
    None) is not compared: a ranker saved before identities (or weight
    formats) were recorded, or a generation built by hand, is accepted.
    """

    model_name: str = ""  # central's Info.model_name, for messages only; "" unknown
    # the first SHA_DIGITS hex digits of the weights' sha256 (Info.model_sha256); "" unknown
    model_sha256: str = ""
    layer_index: int | None = None  # hidden-state index (0: the embeddings); None unknown
    # parts of a candidate: what a ranker reads, or what a generation's candidates carry
    # ("last", "mean", "embedding_mean", "signals"); () unknown
    parts: tuple[str, ...] = ()
    signals_version: int | None = None  # version of the "signals" part; None: none or unknown
    # how central computed them: Info.weights_format ("int8", "int8-upper@18", "float32",
    # ...); "" unknown
    # (a ranker exported, or a server running, before formats were recorded)
    weights_format: str = ""

    def __post_init__(self) -> None:
        short = self.model_sha256.strip().lower()[:SHA_DIGITS]
        object.__setattr__(self, "model_sha256", short)  # any length in, one form kept

    @property
    def known(self) -> bool:
        """Whether anything checkable is recorded (checksum, layer or weight format)."""
        return bool(self.model_sha256) or self.layer_index is not None or bool(self.weights_format)

    def to_dict(self) -> dict[str, object]:
        """The model and layer as JSON-ready values (e.g. for a registry version's metadata)."""
        return {
            "model_name": self.model_name,
            "model_sha256": self.model_sha256,
            "layer_index": self.layer_index,
            "weights_format": self.weights_format,
        }

    @classmethod
    def from_dict(cls, record: object) -> FeatureIdentity | None:
        """Parse `to_dict` output; None for anything else or an identity with nothing known."""
        if not isinstance(record, dict):
            return None
        layer = record.get("layer_index")
        identity = cls(
            model_name=str(record.get("model_name") or ""),
            model_sha256=str(record.get("model_sha256") or ""),
            layer_index=layer if isinstance(layer, int) and not isinstance(layer, bool) else None,
            weights_format=str(record.get("weights_format") or ""),
        )
        return identity if identity.known else None

    def describe(self) -> str:
        """E.g. ``SmolLM2-135M-Instruct (sha 1a2b3c4d5e6f7a8b, int8 weights) layer 18``."""
        model = self.model_name or "an unknown model"
        facts = [f"sha {self.model_sha256}"] if self.model_sha256 else []
        facts += [f"{self.weights_format} weights"] if self.weights_format else []
        details = f" ({', '.join(facts)})" if facts else ""
        layer = f" layer {self.layer_index}" if self.layer_index is not None else ""
        return f"{model}{details}{layer}"

    def mismatch(self, features: FeatureIdentity) -> str | None:
        """Why a ranker trained on this identity must not score `features`; None if it may.

        Compares the weights' checksums, the layers and the weight formats
        where both sides know them, and asks that the features carry every
        vector part the ranker reads (signals are computed on the device, and
        checked by version where they are computed).
        """
        both_sha = self.model_sha256 and features.model_sha256
        both_layer = self.layer_index is not None and features.layer_index is not None
        if (both_sha and self.model_sha256 != features.model_sha256) or (
            both_layer and self.layer_index != features.layer_index
        ):
            return (
                f"ranker was trained on features of {self.describe()}; "
                f"these features come from {features.describe()}"
            )
        both_format = self.weights_format and features.weights_format
        if both_format and self.weights_format != features.weights_format:
            return (
                f"ranker was trained on features of {self.describe()}; these come from "
                f"{features.weights_format} weights of the same model, whose hidden states "
                f"differ: serve it with `ranker-central serve --weights "
                f"{_weights_flag(self.weights_format)}`, or retrain on these features"
            )
        vectors = [p for p in self.parts if p != "signals"]  # what central must send
        missing = [p for p in vectors if p not in features.parts]
        if features.parts and missing:
            return (
                f"ranker reads the {missing} vectors of each candidate; these candidates "
                f"carry only {list(features.parts)} (ask central for vectors={vectors})"
            )
        return None


def _weights_flag(weights_format: str) -> str:
    """The `ranker-central --weights` value that serves `weights_format` ("int8",
    "int8-upper@18": int8 above a boundary layer, which is central's default feature layer,
    or a dense dtype)."""
    name = weights_format.partition("@")[0]
    return name if name in ("int8", "int8-upper") else f"dense --dtype {weights_format}"


@dataclass(frozen=True)
class Candidate:
    """One sampled response with its feature vector."""

    index: int  # position among the K candidates of its generation, 0-based
    text: str  # the response text, end-of-sequence token excluded
    token_ids: tuple[int, ...]  # generated token ids, end-of-sequence excluded
    finish_reason: FinishReason  # "eos" (the model stopped) or "length" (hit the limit)
    cumulative_logprob: float  # sum of token log-probabilities under the model
    # (hidden,) float32, last token of prompt+response; (0,) when the request's `vectors`
    # left "last" out
    feature: np.ndarray = field(repr=False)
    # (T, D) float32 per-token features (SWIFT), one row per response token; None unless
    # the request asked for them (CentralClient.generate(token_features=...) or a ranker
    # with needs_token_features)
    token_features: np.ndarray | None = field(default=None, repr=False)
    # (hidden,) float32 mean of the feature layer's hidden state over the response tokens
    # (prompt and end-of-sequence excluded); None when the request did not ask for it or the
    # server predates it (representation v2)
    mean_feature: np.ndarray | None = field(default=None, repr=False)
    # mean entropy (nats) of the model's next-token distribution over the response tokens at
    # temperature 1; None when the server did not send it
    mean_entropy: float | None = None
    # (hidden,) float32 mean of hidden state 0 (the input embeddings, whatever the feature
    # layer) over the same tokens as `mean_feature`; None when the request did not ask for
    # it (vectors=(..., "embedding_mean")) or the server predates it
    embedding_mean_feature: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_tokens(self) -> int:
        """Generated tokens, end-of-sequence excluded."""
        return len(self.token_ids)

    @property
    def mean_logprob(self) -> float:
        """Average token log-probability at temperature 1 (0.0 for an empty response)."""
        return self.cumulative_logprob / len(self.token_ids) if self.token_ids else 0.0


@dataclass(frozen=True)
class Usage:
    """What one Generate call cost central: the last event of its stream."""

    prompt_tokens: int  # prompt length after the chat template
    generated_tokens: int  # response tokens over all K candidates
    seconds: float  # wall time central spent on the request


@dataclass(frozen=True)
class Generation:
    """K candidates for one prompt, plus the instruction feature they share."""

    prompt: str  # the prompt as the app gave it
    instruction: np.ndarray = field(repr=False)  # (hidden,) float32, last prompt token
    candidates: tuple[Candidate, ...] = ()  # sorted by index
    layer_index: int = 0  # hidden-state layer the features come from
    usage: Usage | None = None  # what the call cost central; None when the stream sent none
    # the model, layer and vectors of these features, filled by the client from central's
    # Info and the stream; None for a generation built by hand (then never checked)
    identity: FeatureIdentity | None = None

    @property
    def features(self) -> np.ndarray:
        """The candidates' features stacked, shape (K, hidden)."""
        return np.stack([c.feature for c in self.candidates])

    @property
    def token_features(self) -> list[np.ndarray]:
        """Each candidate's (T_k, D) per-token features; empty when they were not requested."""
        return [c.token_features for c in self.candidates if c.token_features is not None]

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.candidates]


@dataclass(frozen=True)
class ResponseVectors:
    """The vectors of responses the app already has (labelled data to import), one row per
    response in the order given: what `CentralClient.response_vectors` returns.

    Each array is None when it was not asked for (or the server predates it); a row is
    what a sampled `Candidate` with that text would carry (``last`` its ``feature``,
    ``mean`` its ``mean_feature``, ``embedding_mean`` its ``embedding_mean_feature``).
    """

    instruction: np.ndarray = field(repr=False)  # (hidden,) float32, last prompt token
    layer_index: int = 0  # hidden-state layer of `instruction`, `last` and `mean`
    last: np.ndarray | None = field(default=None, repr=False)  # (n, hidden) float32
    mean: np.ndarray | None = field(default=None, repr=False)  # (n, hidden) float32
    embedding_mean: np.ndarray | None = field(default=None, repr=False)  # (n, hidden) float32
    mean_entropy: np.ndarray | None = None  # (n,) float32, nats
    # the model, layer and parts of these vectors (as `Generation.identity`); None unknown
    identity: FeatureIdentity | None = None
