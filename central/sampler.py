"""K candidates for one prompt, with features captured in the same passes.

The prompt is prefilled once and its KV cache copied to K rows; then one
batched decode step per token. Every step already computes the hidden state
of the token it feeds, so features cost nothing extra (the authors' code
runs a second forward pass instead):

- a response that ends with EOS: the token before EOS was fed in the step
  that produced EOS, so its hidden state is in hand;
- a response that hits ``max_new_tokens``: its last token has not been fed
  yet, so those rows take one final step that only collects hidden states.

All rows share the prompt and advance together, so they always have the
same length: no padding, and "the last token" is the last position for
every row. Finished rows are dropped from the batch (and from the cache).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .model import LoadedModel


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample; validated by the service before it gets here."""

    k: int = 1  # number of candidates
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus mass; 1.0 disables it
    top_k: int = 0  # keep the k most likely tokens; 0 disables it
    max_new_tokens: int = 128  # per candidate, end-of-sequence excluded
    seed: int | None = None  # None draws a fresh seed


@dataclass(frozen=True)
class SampledCandidate:
    """One finished response, as the sampler hands it to the service."""

    index: int  # 0..k-1, the row this response was sampled in
    token_ids: list[int]  # generated ids, EOS excluded
    finished_by_eos: bool  # False when max_new_tokens was reached
    cumulative_logprob: float  # sum of log p(token) at temperature 1
    feature: np.ndarray  # (hidden,) float32, hidden state of the last token


class Cancelled(Exception):
    """`should_stop` turned true; generation was abandoned mid-way."""


def prompt_feature_pass(
    loaded: LoadedModel, prompt_ids: list[int], layer: int
) -> tuple[np.ndarray, torch.Tensor, object]:
    """Prefills the prompt; returns its last-token feature, next-token logits and cache."""
    input_ids = torch.tensor([prompt_ids], dtype=torch.long)
    out = loaded.model(input_ids=input_ids, use_cache=True, output_hidden_states=True)
    feature = out.hidden_states[layer][0, -1].float().numpy().copy()
    return feature, out.logits[:, -1, :].float(), out.past_key_values


def sample(
    loaded: LoadedModel,
    prompt_ids: list[int],
    config: SamplingConfig,
    layer: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[np.ndarray | SampledCandidate]:
    """Yields the instruction feature, then each candidate as it finishes.

    Raises `Cancelled` (between steps) as soon as `should_stop()` is true.
    """
    with torch.inference_mode():
        yield from _sample(loaded, prompt_ids, config, layer, should_stop)


def _sample(
    loaded: LoadedModel,
    prompt_ids: list[int],
    config: SamplingConfig,
    layer: int,
    should_stop: Callable[[], bool],
) -> Iterator[np.ndarray | SampledCandidate]:
    generator = torch.Generator().manual_seed(
        config.seed if config.seed is not None else secrets.randbits(63)
    )
    instruction, logits, cache = prompt_feature_pass(loaded, prompt_ids, layer)
    yield instruction

    k = config.k
    cache.reorder_cache(torch.zeros(k, dtype=torch.long))  # share the prefill across rows
    logits = logits.expand(k, -1)
    rows = list(range(k))  # candidate index of each batch row
    tokens: list[list[int]] = [[] for _ in range(k)]
    logprobs = [0.0] * k
    # Hidden state of the last fed token per row; before any response token
    # that is the prompt's last token (an empty response's feature).
    last_hidden = np.broadcast_to(instruction, (k, instruction.shape[0]))
    eos = torch.tensor(sorted(loaded.eos_token_ids), dtype=torch.long)

    while rows:
        if should_stop():
            raise Cancelled
        next_ids = _pick_tokens(logits, config, generator)
        step_logprobs = (
            torch.log_softmax(logits, dim=-1).gather(1, next_ids[:, None])[:, 0].tolist()
        )
        is_eos = torch.isin(next_ids, eos).tolist()
        keep: list[int] = []
        for b, row in enumerate(rows):
            logprobs[row] += step_logprobs[b]
            if is_eos[b]:
                yield _finished(row, tokens[row], True, logprobs[row], last_hidden[b])
            else:
                tokens[row].append(int(next_ids[b]))
                keep.append(b)
        if not keep:
            return
        if len(keep) < len(rows):
            cache.reorder_cache(torch.tensor(keep, dtype=torch.long))
        rows = [rows[b] for b in keep]
        fed = next_ids[keep][:, None]
        out = loaded.model(
            input_ids=fed, past_key_values=cache, use_cache=True, output_hidden_states=True
        )
        last_hidden = out.hidden_states[layer][:, -1].float().numpy()
        logits = out.logits[:, -1, :].float()
        if len(tokens[rows[0]]) >= config.max_new_tokens:  # all rows have the same length
            for b, row in enumerate(rows):
                yield _finished(row, tokens[row], False, logprobs[row], last_hidden[b])
            return


def _finished(
    row: int, token_ids: list[int], by_eos: bool, logprob: float, hidden: np.ndarray
) -> SampledCandidate:
    return SampledCandidate(
        index=row,
        token_ids=list(token_ids),
        finished_by_eos=by_eos,
        cumulative_logprob=logprob,
        feature=np.array(hidden, dtype=np.float32),
    )


def _pick_tokens(
    logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator
) -> torch.Tensor:
    """Next token per row: greedy at temperature 0, else temperature/top-k/top-p sampling."""
    if config.temperature == 0.0:
        return logits.argmax(dim=-1)
    scores = logits / config.temperature
    if config.top_k > 0 and config.top_k < scores.shape[-1]:
        kth = torch.topk(scores, config.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
        # Drop a token once the mass before it already reaches top_p; the most
        # likely token always stays.
        drop_sorted = (cumulative - torch.softmax(sorted_scores, dim=-1)) >= config.top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
