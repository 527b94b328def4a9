"""The one forward primitive: every pass central runs over the model goes through here.

`Forward` runs one pass over new tokens on top of a KV cache and hands back
the hidden states at the requested layers and, as asked, the logits of the
last position, of every position, or none. It is what makes a pass cheap
(see `decoding`): linears on oneDNN, the requested hidden states read by one
hook each instead of `output_hidden_states` collecting all of them, and,
when no logits are wanted, the pass ends at the deepest requested layer (the
layers above it and the LM head are skipped).

Two kinds of callers use it:

- the sampler (Generate): the prompt's prefill, then one pass per decode
  step over the K rows' newest tokens, its features read in the same pass;
- `PrefilledPrompt.feed`: responses the caller already has, appended to a
  prefilled prompt in right-padded batches: the Features RPC, per-token
  features (SWIFT) and the quality harness's layer sweep.

Causal attention means right padding after a response cannot change any of
its real positions, so a batch needs no attention mask and each row is what
a pass over that sequence alone gives (up to float rounding).

An empty response (the model ended at once) is fed as one end-of-sequence
token (`empty_response_tokens`), in the sampler and here alike: its vectors
are that token's state, which cannot be mistaken for the prompt's own last
state (the instruction feature), as they were before representation v2.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .decoding import LayerCapture, new_cache, onednn_linears, select_rows
from .device import tensor_on
from .model import LoadedModel

__all__ = [
    "Forward",
    "Pass",
    "PrefilledPrompt",
    "ResponseChunk",
    "ResponsePass",
    "cache_argument",
    "empty_response_tokens",
    "returned_cache",
]

Logits = Literal["none", "last", "all"]  # which positions' logits a pass computes

_PAD = 0  # id right-padding a batch; any id will do, no real position attends to it


def empty_response_tokens(loaded: LoadedModel) -> list[int]:
    """What stands for a response with no tokens: the end-of-sequence token, once.

    It is the tokenizer's own end-of-sequence token (the one a chat model
    ends its turn with) whichever of the model's end tokens was sampled, so
    an empty response's vectors depend on the prompt alone.
    """
    eos = loaded.tokenizer.eos_token_id
    if eos is None:
        if not loaded.eos_token_ids:
            raise ValueError(f"model {loaded.name} has no end-of-sequence token")
        eos = min(loaded.eos_token_ids)
    return [int(eos)]


def cache_argument(model: torch.nn.Module) -> str:
    """The name under which `model.forward` takes its KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name
    warns until 5.40, then goes); a model's own signature says which it is,
    so every supported version gets the name it expects.
    """
    kind = type(model)
    name = _CACHE_ARGUMENT.get(kind)
    if name is None:
        parameters = inspect.signature(kind.forward).parameters
        name = _CACHE_ARGUMENT[kind] = "cache" if "cache" in parameters else "past_key_values"
    return name


_CACHE_ARGUMENT: dict[type, str] = {}  # model class -> its forward's name for the cache


def returned_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (``output.cache``, or ``past_key_values``
    before transformers 5.24), read without the deprecated alias."""
    return output["cache"] if "cache" in output else output["past_key_values"]


@dataclass(frozen=True)
class Pass:
    """What one forward pass produced."""

    hidden: dict[int, torch.Tensor]  # layer -> (batch, new tokens, hidden) float32
    # "last": (batch, vocab); "all": (batch, new tokens, vocab); "none": None. float32
    logits: torch.Tensor | None


class Forward:
    """Runs the model one pass at a time, reading hidden states at `layers`.

    With no layers no hook is installed: the pass is exactly what plain
    generation costs (the baseline the feature capture is measured against).
    """

    def __init__(self, loaded: LoadedModel, layers: Sequence[int] = ()) -> None:
        self.model = loaded.model
        self.layers = tuple(dict.fromkeys(layers))  # distinct layers, in request order
        self._capture = LayerCapture(loaded.model, self.layers) if self.layers else None
        self._cache_name = cache_argument(loaded.model)

    def __call__(
        self,
        input_ids: torch.Tensor,
        cache: Any,
        *,
        logits: Logits = "last",
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache_position: torch.Tensor | None = None,
    ) -> Pass:
        """One pass of `input_ids` (batch, new tokens) on top of `cache`, which it extends.

        Rows of different lengths (`central.batch`) pass their padding mask
        (batch, cached + new columns), their own position ids and the
        column the new tokens go in; a batch of equal rows needs none.
        Every tensor is on the model's device; what comes back stays there.
        """
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            self._cache_name: cache,
            "use_cache": True,
            "logits_to_keep": 0 if logits == "all" else 1,  # the LM head where it is read
        }
        extra = {
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "cache_position": cache_position,
        }
        inputs.update({name: value for name, value in extra.items() if value is not None})
        with onednn_linears(self.model):
            if self._capture is None:
                return Pass({}, _read_logits(self.model(**inputs), logits))
            if not self._capture.supported:  # no hookable layer list: let HF collect them
                out = self.model(**inputs, output_hidden_states=True)
                hidden = {layer: out.hidden_states[layer].float() for layer in self.layers}
                return Pass(hidden, _read_logits(out, logits))
            self._capture.stop_after = logits == "none"
            with self._capture.active():
                out = self._capture.run(**inputs)
        hidden = {layer: h.float() for layer, h in self._capture.hidden.items()}
        return Pass(hidden, None if out is None else _read_logits(out, logits))


def _read_logits(out: Any, logits: Logits) -> torch.Tensor | None:
    if logits == "none":
        return None
    return (out.logits[:, -1] if logits == "last" else out.logits).float()


@dataclass(frozen=True)
class ResponsePass:
    """One response as the model saw it, fed after the prompt.

    One row per fed token: the response's tokens, or for an empty response
    the one end-of-sequence token that stands for it (`num_tokens` is 0 then,
    and the first `num_tokens` rows are always the response's own).
    """

    num_tokens: int  # the response's tokens, end-of-sequence excluded
    hidden: dict[int, torch.Tensor]  # layer -> (fed tokens, hidden) float32
    # (fed tokens, vocab) float32: the next-token logits each fed token was drawn from
    # (the first from the prompt's last position); None unless logits were asked for
    logits: torch.Tensor | None


@dataclass(frozen=True)
class ResponseChunk:
    """One pass over a slice of columns of a right-padded batch of responses.

    Row r's real columns are those before ``lengths[r]`` (its fed tokens);
    the rest of the slice is padding. Long responses are fed as several
    chunks on the same cache (`PrefilledPrompt.chunks`), so a pass's cost
    and memory are bounded whatever a response's length.
    """

    start: int  # the response position of the slice's first column
    columns: int  # the slice's width
    lengths: list[int]  # fed tokens of each row (1 for an empty response: its EOS)
    hidden: dict[int, torch.Tensor]  # layer -> (rows, columns, hidden) float32
    # (rows, columns, vocab) float32 logits at each column; None without logits
    logits: torch.Tensor | None
    # (rows, vocab) the logits at the position before the slice (the prompt's last
    # for the first slice); None without logits
    before: torch.Tensor | None

    def real_columns(self, row: int) -> int:
        """How many of the slice's columns hold row `row`'s own tokens."""
        return max(0, min(self.columns, self.lengths[row] - self.start))

    def drawn_from(self, row: int) -> torch.Tensor:
        """(real columns, vocab): the logits each of row `row`'s tokens here was drawn from
        (token j's from position j - 1)."""
        assert self.logits is not None and self.before is not None, "fed without logits"
        n = self.real_columns(row)
        return torch.cat([self.before[row, None], self.logits[row, : n - 1]])[:n]


class PrefilledPrompt:
    """A prompt run through the model once, ready to have responses appended to it.

    The prompt's KV cache is computed once; each batch of responses runs on
    a copy of it, replicated to the batch. With ``prefill=False`` the prompt
    is fed later, `prefill(tokens)` at a time (the engine cuts long prompts
    so that other work goes on between the pieces); `ready` says when the
    whole prompt is in.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        prompt_ids: Sequence[int],
        layers: Sequence[int],
        *,
        logits: bool = False,
        prefill: bool = True,
    ) -> None:
        self.loaded = loaded
        self._forward = Forward(loaded, layers)
        self._logits = logits
        self._prompt = list(prompt_ids)
        self._fed = 0  # prompt tokens in the cache so far
        self._cache = new_cache(loaded.model)
        # layer -> (hidden,) state of the prompt's last token (set once the prompt is in)
        self.hidden: dict[int, torch.Tensor] = {}
        # (vocab,) logits at the prompt's last position (what the first token is drawn from)
        self.last_logits: torch.Tensor | None = None
        if prefill:
            self.prefill()

    @property
    def ready(self) -> bool:
        """True once the whole prompt is in the cache."""
        return self._fed >= len(self._prompt)

    @torch.inference_mode()
    def prefill(self, tokens: int | None = None) -> int:
        """Feeds the next `tokens` prompt tokens (the rest when None); returns how many."""
        piece = self._prompt[self._fed : None if tokens is None else self._fed + tokens]
        if not piece:
            return 0
        self._fed += len(piece)
        # Without logits the pass ends at the deepest layer asked for, every piece
        # alike: the layers above it are never read, so their cache is never needed.
        wanted: Logits = "last" if self._logits else "none"
        out = self._forward(tensor_on([piece], self.loaded.device), self._cache, logits=wanted)
        if self.ready:
            self.hidden = {layer: h[0, -1] for layer, h in out.hidden.items()}
            self.last_logits = None if out.logits is None else out.logits[0]
        return len(piece)

    @torch.inference_mode()
    def feed(self, responses: Sequence[Sequence[int]], batch_size: int) -> Iterator[ResponsePass]:
        """One `ResponsePass` per response, in order, `batch_size` responses per pass."""
        for start in range(0, len(responses), batch_size):
            batch = [list(r) for r in responses[start : start + batch_size]]
            (whole,) = self.chunks(batch, columns=None)
            for row, response in enumerate(batch):
                n = whole.lengths[row]
                hidden = {layer: h[row, :n] for layer, h in whole.hidden.items()}
                drawn_from = None if whole.logits is None else whole.drawn_from(row)
                yield ResponsePass(len(response), hidden, drawn_from)

    @torch.inference_mode()
    def chunks(
        self, batch: Sequence[Sequence[int]], columns: int | None
    ) -> Iterator[ResponseChunk]:
        """`batch`'s responses fed after the prompt, `columns` positions a pass (all at
        once when None), the cache carried from one pass to the next."""
        assert self.ready, "the prompt is not prefilled yet"
        fed = [list(r) or empty_response_tokens(self.loaded) for r in batch]
        lengths = [len(tokens) for tokens in fed]
        longest = max(lengths)
        cache = copy.deepcopy(self._cache)  # the prompt's own cache stays for the next batch
        device = self.loaded.device
        select_rows(cache, [0] * len(batch), device)
        ids = tensor_on([tokens + [_PAD] * (longest - len(tokens)) for tokens in fed], device)
        before = None if self.last_logits is None else self.last_logits.expand(len(batch), -1)
        step = longest if columns is None else max(1, columns)
        for start in range(0, longest, step):
            piece = ids[:, start : start + step]
            out = self._forward(piece, cache, logits="all" if self._logits else "none")
            yield ResponseChunk(start, piece.shape[1], lengths, out.hidden, out.logits, before)
            before = None if out.logits is None else out.logits[:, -1]
