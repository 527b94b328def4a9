"""K candidates for one prompt, with features captured in the same passes.

The prompt is prefilled once and its KV cache copied to K rows; then one
batched decode step per token. Every step already computes the hidden state
of the token it feeds, so features cost nothing extra (the authors' code
runs a second forward pass instead):

- the mean over the response's tokens is a running sum per row, one add a
  step, divided by the token count when the row finishes; the embedding
  mean (on request) is the same sum over hidden state 0, read by one more
  hook on the first decoder layer's input in the same passes;
- a response that ends with EOS: the token before EOS was fed in the step
  that produced EOS, so its hidden state is in hand;
- a response that hits ``max_new_tokens``: its last token has not been fed
  yet, so those rows take one final step that only collects hidden states
  (and stops at the feature layer: the layers above it and the LM head are
  skipped);
- a response that ends at once (EOS first) has no token of its own: it
  stands for the end-of-sequence token fed once after the prompt
  (`forward.empty_response_tokens`), one collect-only pass on a copy of the
  prompt's cache, shared by every row that ends so;
- the mean entropy (on request) is a running sum of the entropy of each
  distribution a token was drawn from, at temperature 1.

All rows share the prompt and advance together, so they always have the
same length: no padding, and "the last token" is the last position for
every row. Finished rows are dropped from the batch (and from the cache).

What makes a step cheap (see `decoding` for the measurements): linears on
oneDNN, a KV cache that appends in place, one hook on the feature layer
instead of all hidden states, the LM head on the last position only, and
one uniform draw per row instead of `torch.multinomial`'s one exponential
per vocabulary entry.

Everything lives on the model's device: the KV cache, the running vectors,
the random draws (a generator on that device). What the host needs crosses
in two copies a step for all rows at once (`central.device`): the tokens
drawn with their log-probabilities and entropies (`CandidateRows.propose`,
then `record`), and the vectors of the rows that finished (`finish`).
"""

from __future__ import annotations

import copy
import itertools
import math
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .decoding import new_cache, select_rows
from .device import tensor_on, to_host
from .features import EMBEDDING_LAYER
from .forward import Forward, Pass, empty_response_tokens
from .model import LoadedModel
from .pooling import entropy

__all__ = [
    "Cancelled",
    "CandidateRows",
    "Draw",
    "EosState",
    "Finishing",
    "SampledCandidate",
    "SamplingConfig",
    "SamplingError",
    "empty_response_state",
    "ended_at_once",
    "finish",
    "pick_next",
    "read_draws",
    "sample",
    "sample_stream",
]


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample; validated by the service before it gets here."""

    k: int = 1  # number of candidates
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus mass; 1.0 disables it
    top_k: int = 0  # keep the k most likely tokens; 0 disables it
    max_new_tokens: int = 128  # per candidate, end-of-sequence excluded
    seed: int | None = None  # None draws a fresh seed
    greedy_first: bool = False  # candidate 0 is the greedy decode; the others sample as above


@dataclass(frozen=True)
class SampledCandidate:
    """One finished response, as the sampler hands it to the service."""

    index: int  # 0..k-1, the row this response was sampled in
    token_ids: list[int]  # generated ids, EOS excluded
    finished_by_eos: bool  # False when max_new_tokens was reached
    cumulative_logprob: float  # sum of log p(token) at temperature 1, EOS included
    feature: np.ndarray  # (hidden,) float32, hidden state of the last token
    mean_feature: np.ndarray  # (hidden,) float32, mean hidden state over the response's tokens
    mean_entropy: float | None  # nats, temperature 1; None unless asked for
    # (hidden,) float32, mean of hidden state 0 over the response's tokens; None unless
    # it was captured (`sample(embedding_mean=True)`)
    embedding_mean_feature: np.ndarray | None = None


class Cancelled(Exception):
    """`should_stop` turned true; generation was abandoned mid-way."""


class SamplingError(ValueError):
    """The model's next-token distribution cannot be sampled (NaN or infinite logits)."""


NO_FEATURE = np.empty(0, dtype=np.float32)  # the feature when features are off


def sample(
    loaded: LoadedModel,
    prompt_ids: list[int],
    config: SamplingConfig,
    layer: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    features: bool = True,
    entropy: bool = False,
    embedding_mean: bool = False,
) -> Iterator[np.ndarray | SampledCandidate]:
    """Yields the instruction feature, then each candidate as it finishes.

    Raises `Cancelled` (between steps) as soon as `should_stop()` is true.
    With `features=False` nothing is captured and every feature is
    `NO_FEATURE` (an empty array): plain generation, for benchmarks and
    callers that only want text. `entropy` adds each candidate's mean
    next-token entropy (a dot product over the vocabulary a step: a few
    percent of a step, so only on request). `embedding_mean` adds each
    candidate's mean of hidden state 0 (`embedding_mean_feature`), captured
    in the same passes. `sample_stream` is the typed view of the same stream.
    """
    with torch.inference_mode():
        yield from _sample(
            loaded, prompt_ids, config, layer, should_stop, features, entropy, embedding_mean
        )


def sample_stream(
    loaded: LoadedModel,
    prompt_ids: list[int],
    config: SamplingConfig,
    layer: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    features: bool = True,
    entropy: bool = False,
    embedding_mean: bool = False,
) -> tuple[np.ndarray, Iterator[SampledCandidate]]:
    """`sample` split into its two parts: (instruction feature, candidates as they finish).

    The prompt is prefilled before this returns; the candidates are sampled
    as the iterator is consumed.
    """
    events = sample(
        loaded,
        prompt_ids,
        config,
        layer,
        should_stop=should_stop,
        features=features,
        entropy=entropy,
        embedding_mean=embedding_mean,
    )
    instruction = next(events)
    assert isinstance(instruction, np.ndarray)
    return instruction, (c for c in events if isinstance(c, SampledCandidate))


@dataclass(frozen=True)
class Draw:
    """One step's tokens for a request's rows (see `CandidateRows.draw`)."""

    picked: list[int]  # the token each batch row drew
    keep: list[int]  # batch rows that go on (they drew no end token)
    # (batch row, entropy of the distribution it drew from) of each row that drew an end token
    ended: list[tuple[int, float]]


class CandidateRows:
    """The rows of one request still being sampled, and what each has gathered so far.

    Batch row b holds candidate `index[b]`. Token ids and sums of scalars are
    kept per candidate on the host; the hidden-state tensors per batch row on
    the model's device, shrinking with the batch. With `embedding`, the sum of
    hidden state 0 is kept too.
    """

    def __init__(
        self, k: int, width: int, embedding: bool = False, device: torch.device | None = None
    ) -> None:
        self.device = device or torch.device("cpu")  # where the vectors accumulate
        self.index = list(range(k))  # candidate index of each batch row
        self.tokens: list[list[int]] = [[] for _ in range(k)]  # response ids, EOS excluded
        self.logprob = [0.0] * k  # sum of log p of each token drawn, EOS included
        self.entropy = [0.0] * k  # sum of the entropies the response's tokens were drawn from
        self.last = torch.zeros(k, width, device=self.device)  # state of each row's newest token
        self.total = torch.zeros(k, width, device=self.device)  # sum of its fed tokens' states
        # sum of the hidden states 0 of each row's fed tokens; None unless asked for
        self.embedded = torch.zeros(k, width, device=self.device) if embedding else None

    def draw(
        self,
        logits: torch.Tensor,
        config: SamplingConfig,
        generator: torch.Generator,
        end_tokens: frozenset[int],
        entropy: bool,
    ) -> Draw:
        """Draws each row's next token from `logits` (rows, vocab) and records it.

        `propose` then `record`, with the one copy to the host between them;
        the engine makes the two calls itself to copy every request's draws
        at once. A row that draws an end token gets its log-probability
        added and is listed in `Draw.ended`; the caller turns it into a
        candidate (with `finish`) before calling `keep(draw.keep)`. The
        sampler and the engine both step through here, so a request samples
        the same alone or batched.
        """
        return self.record(to_host(self.propose(logits, config, generator, entropy)), end_tokens)

    def propose(
        self,
        logits: torch.Tensor,
        config: SamplingConfig,
        generator: torch.Generator,
        entropy: bool,
    ) -> torch.Tensor:
        """Each row's next token from `logits` (rows, vocab), not yet recorded: a (3, rows)
        float64 tensor on the device (see `pick_next`). Nothing waits for the device."""
        greedy = [b for b, row in enumerate(self.index) if row == 0] if config.greedy_first else []
        return pick_next(logits, config, generator, entropy, greedy)

    def record(self, drawn: np.ndarray, end_tokens: frozenset[int]) -> Draw:
        """Records the draws of `propose`, copied to the host (`read_draws`); a
        `SamplingError` if they are not finite, before anything is recorded."""
        picked, logprobs, entropies = read_draws(drawn)
        keep: list[int] = []
        ended: list[tuple[int, float]] = []
        for b, row in enumerate(self.index):
            self.logprob[row] += logprobs[b]
            if picked[b] in end_tokens:
                ended.append((b, entropies[b]))
                continue
            self.tokens[row].append(picked[b])
            self.entropy[row] += entropies[b]
            keep.append(b)
        return Draw(picked, keep, ended)

    def keep(self, rows: list[int]) -> None:
        """Keeps batch rows `rows` (in order) and drops the others."""
        if len(rows) < len(self.index):
            self.index = [self.index[b] for b in rows]
            index = tensor_on(rows, self.device)
            self.last, self.total = self.last[index], self.total[index]
            if self.embedded is not None:
                self.embedded = self.embedded[index]

    def fed(self, newest: torch.Tensor, embedded: torch.Tensor | None = None) -> None:
        """`newest` (rows, hidden): the feature-layer state of the token each row was just
        fed; `embedded` (rows, hidden): its hidden state 0, when the rows keep that sum."""
        self.last = newest
        self.total += newest
        if self.embedded is not None:
            assert embedded is not None, "these rows keep the embedding mean: pass hidden state 0"
            self.embedded += embedded

    def fed_pass(self, step: Pass, layer: int) -> None:
        """`fed` with the newest tokens' states from `step`, a pass over these rows alone."""
        embedded = None if self.embedded is None else _newest(step, EMBEDDING_LAYER)
        self.fed(_newest(step, layer), embedded)

    def vectors(self, rows: Sequence[int]) -> torch.Tensor:
        """(len(rows), 2 or 3, hidden) on the device: the last state, the sum of the states
        and, with the embedding mean, the sum of hidden states 0 of batch rows `rows`
        (what `finished` turns into the candidate's vectors)."""
        index = tensor_on(list(rows), self.device)
        sums = [self.last, self.total]
        if self.embedded is not None:
            sums.append(self.embedded)
        return torch.stack([t.index_select(0, index) for t in sums], 1)

    def finished(
        self, b: int, by_eos: bool, entropy: bool, vectors: np.ndarray
    ) -> SampledCandidate:
        """Batch row b as a candidate; `vectors` is its row of `vectors`, on the host."""
        row = self.index[b]
        n = max(len(self.tokens[row]), 1)  # 0 only with features off (nothing to average)
        return SampledCandidate(
            index=row,
            token_ids=list(self.tokens[row]),
            finished_by_eos=by_eos,
            cumulative_logprob=self.logprob[row],
            feature=vectors[0],
            mean_feature=vectors[1] / np.float32(n),
            mean_entropy=self.entropy[row] / n if entropy else None,
            embedding_mean_feature=None if self.embedded is None else vectors[2] / np.float32(n),
        )


@dataclass(frozen=True)
class Finishing:
    """Rows of one request that finished in a step (see `finish`)."""

    rows: CandidateRows  # the request's rows
    batch_rows: list[int]  # which of them finished, by batch row
    by_eos: bool  # they drew an end token (else they reached max_new_tokens)
    entropy: bool  # the request asked for the mean entropy


def finish(finishing: Sequence[Finishing]) -> list[list[SampledCandidate]]:
    """The candidates of every finishing row, per `Finishing` in order.

    Their vectors come to the host in one copy, whatever the number of rows
    and requests (requests with and without the embedding mean alike).
    """
    vectors = [f.rows.vectors(f.batch_rows) if f.batch_rows else None for f in finishing]
    sent = [v for v in vectors if v is not None]
    if not sent:
        return [[] for _ in finishing]
    host = to_host(torch.cat([v.flatten() for v in sent]))
    pieces = iter(np.split(host, list(itertools.accumulate(v.numel() for v in sent))[:-1]))
    candidates: list[list[SampledCandidate]] = []
    for f, v in zip(finishing, vectors, strict=True):
        if v is None:
            candidates.append([])
            continue
        rows = next(pieces).reshape(v.shape)  # (rows, 2 or 3, hidden)
        candidates.append(
            [f.rows.finished(b, f.by_eos, f.entropy, rows[i]) for i, b in enumerate(f.batch_rows)]
        )
    return candidates


def _sample(
    loaded: LoadedModel,
    prompt_ids: list[int],
    config: SamplingConfig,
    layer: int,
    should_stop: Callable[[], bool],
    features: bool,
    entropy: bool,
    embedding_mean: bool,
) -> Iterator[np.ndarray | SampledCandidate]:
    device = loaded.device
    generator = torch.Generator(device=device).manual_seed(
        config.seed if config.seed is not None else secrets.randbits(63)
    )
    entropy, embedding_mean = entropy and features, embedding_mean and features
    layers = [layer, EMBEDDING_LAYER] if embedding_mean else [layer]
    forward = Forward(loaded, layers if features else [])
    cache = new_cache(loaded.model)
    prefill = forward(tensor_on([prompt_ids], device), cache)
    instruction = to_host(_newest(prefill, layer)[0]) if features else NO_FEATURE
    yield instruction

    rows = CandidateRows(config.k, instruction.shape[0], embedding_mean, device)
    assert prefill.logits is not None
    logits = prefill.logits.expand(config.k, -1)
    shared = True  # the cache holds the prompt once, for every row, until the first step
    at_once: EosState | None = None  # the states standing for an empty response, once needed
    while rows.index:
        if should_stop():
            raise Cancelled
        draw = rows.draw(logits, config, generator, loaded.eos_token_ids, entropy)
        ended: list[int] = []  # rows that end with tokens of their own
        for b, last_entropy in draw.ended:
            row = rows.index[b]
            if rows.tokens[row] or not features:
                ended.append(b)
                continue
            # Ended at once: only in the first step, while the cache is still the prompt's.
            if at_once is None:
                at_once = empty_response_state(loaded, forward, cache, layer)
            yield ended_at_once(row, rows.logprob[row], at_once, last_entropy if entropy else None)
        yield from finish([Finishing(rows, ended, True, entropy)])[0]
        keep = draw.keep
        if not keep:
            return
        next_ids = tensor_on([draw.picked[b] for b in keep], device)
        if shared or len(keep) < len(rows.index):
            select_rows(cache, [0] * len(keep) if shared else keep, device)
            rows.keep(keep)
            shared = False
        if len(rows.tokens[rows.index[0]]) >= config.max_new_tokens:  # all rows are this long
            if features:  # the newest tokens are not fed yet: one pass up to the feature layer
                rows.fed_pass(forward(next_ids[:, None], cache, logits="none"), layer)
            yield from finish([Finishing(rows, list(range(len(rows.index))), False, entropy)])[0]
            return
        step = forward(next_ids[:, None], cache)
        if features:
            rows.fed_pass(step, layer)
        assert step.logits is not None
        logits = step.logits


def _newest(step: Pass, layer: int) -> torch.Tensor:
    """(batch, hidden) state of each row's newest token at `layer`."""
    return step.hidden[layer][:, -1]


@dataclass(frozen=True)
class EosState:
    """What stands for an empty response: the end-of-sequence token fed once after the prompt."""

    feature: np.ndarray  # (hidden,) float32, its state at the feature layer
    embedded: np.ndarray | None  # (hidden,) float32, its hidden state 0; None unless captured


def empty_response_state(
    loaded: LoadedModel, forward: Forward, prompt_cache: Any, layer: int
) -> EosState:
    """The states of the end-of-sequence token fed once after the prompt.

    Runs on a copy of the one-row prompt cache, which the rows still need,
    and stops at the feature layer. Hidden state 0 is read when `forward`
    captures it.
    """
    alone = copy.deepcopy(prompt_cache)
    ids = tensor_on([empty_response_tokens(loaded)], loaded.device)
    step = forward(ids, alone, logits="none")
    embedded = step.hidden.get(EMBEDDING_LAYER)
    states = [_newest(step, layer)[0]] + ([] if embedded is None else [embedded[0, -1]])
    host = to_host(torch.stack(states))  # one copy for both
    return EosState(feature=host[0], embedded=None if embedded is None else host[1])


def ended_at_once(
    row: int, logprob: float, state: EosState, entropy: float | None
) -> SampledCandidate:
    """A candidate whose first token was EOS: its vectors are the EOS state (see `forward`)."""
    return SampledCandidate(
        index=row,
        token_ids=[],
        finished_by_eos=True,
        cumulative_logprob=logprob,
        feature=state.feature,
        mean_feature=state.feature,
        mean_entropy=entropy,
        embedding_mean_feature=state.embedded,
    )


def pick_next(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    with_entropy: bool,
    greedy_rows: Sequence[int] = (),
) -> torch.Tensor:
    """Next token per row, its log-probability and (when asked, else 0) the entropy, at
    temperature 1: one (3, rows) float64 tensor on the logits' device, so that the caller
    brings all three to the host in one copy (token ids are exact in float64) and reads
    them with `read_draws`.

    Rows in `greedy_rows` take the most likely token, whatever the sampling settings.
    """
    logp = torch.log_softmax(logits, dim=-1)
    probs = logp.exp() if with_entropy or _draws_from_model(config, logits.shape[-1]) else None
    next_ids = _pick_tokens(logits, config, generator, probs)
    if greedy_rows:
        rows = tensor_on(list(greedy_rows), logits.device)
        next_ids[rows] = logits[rows].argmax(dim=-1)
    chosen = logp.gather(1, next_ids[:, None])[:, 0]
    entropies = entropy(logp, probs) if with_entropy else torch.zeros_like(chosen)
    return torch.stack([next_ids.double(), chosen.double(), entropies.double()])


def read_draws(drawn: np.ndarray) -> tuple[list[int], list[float], list[float]]:
    """`pick_next`'s (3, rows) draws, copied to the host, as (token ids, log-probabilities,
    entropies); `SamplingError` if the model's output was broken (a log-probability that is
    not finite: NaN or infinite logits; on a GPU, where `_draw` does not stop to check,
    this is where they show)."""
    logprobs = drawn[1].tolist()
    if not all(math.isfinite(value) for value in logprobs):
        raise SamplingError("the model's next-token logits are not finite (NaN or inf)")
    return drawn[0].astype(np.int64).tolist(), logprobs, drawn[2].tolist()


def _draws_from_model(config: SamplingConfig, vocab: int) -> bool:
    """True when sampling draws from the model's own distribution (temperature 1, no filter)."""
    unfiltered = config.top_p >= 1.0 and not 0 < config.top_k < vocab
    return config.temperature == 1.0 and unfiltered


def _pick_tokens(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    model_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next token per row: greedy at temperature 0, else temperature/top-k/top-p sampling.

    `model_probs`, the softmax of `logits` when the caller has it, is drawn
    from directly when sampling is unmodified.
    """
    if config.temperature == 0.0:
        return logits.argmax(dim=-1)
    vocab = logits.shape[-1]
    if model_probs is not None and _draws_from_model(config, vocab):
        return _draw(model_probs, generator)
    scores = _tempered(logits, config.temperature)
    if 0 < config.top_k < vocab:
        kth = torch.topk(scores, config.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if config.top_p < 1.0:
        scores = scores.masked_fill(
            ~_nucleus(torch.softmax(scores, dim=-1), config.top_p), float("-inf")
        )
    return _draw(torch.softmax(scores, dim=-1), generator)


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(rows, vocab) bool: the tokens top-p sampling keeps, for each row of `probs`.

    A token is kept while the mass of the tokens before it (most likely
    first) is below `top_p`, so the most likely token always stays. The
    nucleus is nearly always a few dozen tokens, so it is looked for among
    the `_NUCLEUS_FIRST` most likely ones first, widening only while some
    row's nucleus runs past them (a partial sort: a K=1 draw takes ~0.5 ms,
    where sorting a 49k vocabulary made it ~4.5 ms, a fifth of a K=1 int8
    step on one CPU thread). What is kept is every token at least as likely
    as the least likely one in the nucleus: tokens tied with it stay too, so
    the set depends on the probabilities alone, never on how a sort ordered
    ties, and a row keeps the same tokens whatever else is in its batch.
    """
    vocab = probs.shape[-1]
    # On a GPU, where a full sort is cheap and asking whether to widen would wait for it,
    # the search starts (and ends) with the whole vocabulary.
    width = min(_NUCLEUS_FIRST, vocab) if probs.device.type == "cpu" else vocab
    while True:
        likeliest = torch.topk(probs, width, dim=-1).values  # (rows, width), descending
        # The mass up to each: a running sum, so it never decreases, and a token past
        # the candidates has at least the mass of all of them ahead of it.
        mass = likeliest.cumsum(dim=-1)
        if width == vocab or bool((mass[:, -1] >= top_p).all()):
            break
        width = min(width * 8, vocab)
    before = torch.nn.functional.pad(mass[:, :-1], (1, 0))  # the mass ahead of each
    # The least likely kept probability; +inf keeps nothing (a broken row, NaN:
    # its draw then fails as a `SamplingError`).
    kept = torch.where(before < top_p, likeliest, torch.inf)
    return probs >= kept.amin(dim=-1, keepdim=True)


_NUCLEUS_FIRST = 256  # candidates `_nucleus` looks among first; 8x more each time they fall short


def _tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`logits / temperature`, safe for any temperature in (0, inf).

    A plain division overflows once |logit| / temperature passes float32's
    range (temperature 1e-38 turned every score into +-inf, and the softmax
    into NaN). Shifting each row by its maximum first makes the best score
    exactly 0 whatever the temperature, and the others at worst -inf, so the
    softmax stays defined: a tiny temperature draws the most likely token
    (uniformly among ties), a huge one draws uniformly. The temperature is
    held at float32's smallest normal number, so a denormal one cannot be
    flushed to zero (0 / 0) by a CPU that flushes denormals.
    """
    if temperature >= 1.0:  # nothing can overflow: keep the plain division's rounding
        return logits / temperature
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    return shifted / max(temperature, _SMALLEST_NORMAL)


_SMALLEST_NORMAL = float(torch.finfo(torch.float32).tiny)


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row, drawn with probability `probs` by inverting the CDF.

    One uniform number per row, where `torch.multinomial` draws one
    exponential per vocabulary entry (~11-20 ms a step at K=16 and a 49k
    vocabulary, 10-15% of a step). The CDF is inverted in two levels, over
    blocks of `_BLOCK` tokens and then inside the chosen block, so no
    vocabulary-sized cumulative sum is written (that alone took ~5 ms a
    step); sums are float64 so tail tokens keep their own mass. Each search
    uses `right=True` with the target kept strictly below the total, so it
    never lands on a zero-probability token (its CDF equals its
    predecessor's) or on padding.
    """
    rows, vocab = probs.shape
    blocks = torch.nn.functional.pad(probs, (0, (-vocab) % _BLOCK)).view(rows, -1, _BLOCK)
    block_cdf = blocks.sum(dim=-1, dtype=torch.float64).cumsum(dim=-1)  # (rows, blocks)
    if probs.device.type == "cpu":  # on a GPU, asking would wait for it: `read_draws` tells
        totals = block_cdf[:, -1]
        if not bool(((totals > 0) & torch.isfinite(totals)).all()):  # NaN logits, say
            raise SamplingError(
                "the next-token distribution is not a distribution (NaN, infinite or zero mass)"
            )
    u = torch.rand((rows, 1), dtype=torch.float64, generator=generator, device=probs.device)
    target = _below(u * block_cdf[:, -1:], block_cdf[:, -1:])
    # A real distribution never lands past the last block or on padding; a broken one
    # (NaN) might, and is kept in range so that it fails as a `SamplingError`, not as
    # an out-of-bounds index (a device-side assert on a GPU).
    block = torch.searchsorted(block_cdf, target, right=True).clamp_(max=block_cdf.shape[1] - 1)
    before = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp(min=0)), 0.0)
    inner_cdf = blocks[torch.arange(rows, device=probs.device), block[:, 0]].double().cumsum(-1)
    inner = torch.searchsorted(inner_cdf, _below(target - before, inner_cdf[:, -1:]), right=True)
    return (block * _BLOCK + inner)[:, 0].clamp_(max=vocab - 1)


_BLOCK = 256  # tokens per block in `_draw`


def _below(value: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """`value` clamped into [0, total): a float rounding can reach the total itself."""
    return torch.minimum(value, total * (1.0 - 2.0**-40)).clamp_(min=0.0)
