"""Sampling K candidates per problem with features at several layers, plus greedy and beam.

Candidates come from `central.sampler.sample` (the same code the service
runs). The sampler captures one layer in-pass; the layer sweep needs four,
so the responses are fed once more, batched, on top of the prompt's KV cache,
and the last-token hidden state is read at every requested layer. For a chat
model that re-extraction reproduces the in-pass feature; for a base model it
also lets the response be cut at the task's stop string first, so the
feature is the one a serving stack with stop sequences would capture.

The greedy response is kept with the same features as a sampled one, so a study
can put it among the candidates, as a request with the greedy row on does.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from central.features import to_float16
from central.model import LoadedModel
from central.pooling import pool_responses
from central.prompting import render_prompt
from central.sampler import SampledCandidate, SamplingConfig, sample
from language_ranker.v1 import ranker_pb2 as pb
from ranker_eval.tasks import Problem, Task

LAYER_FRACTIONS: tuple[float, ...] = (0.1, 0.3, 0.6, 1.0)  # the paper's Table 5 sweep
MAIN_FRACTION = 0.6  # the paper's default layer


@dataclass(frozen=True)
class GenerationConfig:
    """How candidates are drawn for one (model, task)."""

    k: int = 32  # candidates per problem
    temperature: float | None = None  # None: the task's own (the paper uses 1.5 for K=100)
    beam_width: int = 4  # beams for the beam-search baseline; 0 skips it
    seed: int = 0  # base seed; each problem derives its own from its uid


@dataclass(frozen=True)
class GreedyCandidate:
    """The greedy response as one more candidate: what a request with the
    greedy row on (``SamplingParams.greedy_first``) returns as candidate 0."""

    answer: str  # extracted answer (self-consistency votes on it)
    last: np.ndarray  # (L, d) float16 last-token features
    mean: np.ndarray  # (L, d) float16 mean state over the response's tokens
    cumulative: float  # summed token log-probability, temperature 1
    entropy: float  # mean next-token entropy over the response, nats
    num_tokens: int  # tokens, end-of-sequence excluded


@dataclass(frozen=True)
class ProblemRecord:
    """Everything the methods need about one problem, as cached."""

    uid: str  # the problem's id
    instruction: np.ndarray  # (L, d) float16 last-prompt-token features at each layer
    candidates: np.ndarray  # (K, L, d) float16 last-token features of each response
    labels: np.ndarray  # (K,) float32 1.0 when the response is correct
    logprobs: np.ndarray  # (K,) float32 mean token log-probability of the sampled response
    # Representation v2 (records cached before it lack these: they load as None)
    means: np.ndarray | None  # (K, L, d) float16 mean state over each response's tokens
    cumulative: np.ndarray | None  # (K,) float32 summed token log-probability (temperature 1)
    entropies: np.ndarray | None  # (K,) float32 mean next-token entropy over the response, nats
    num_tokens: np.ndarray | None  # (K,) int32 sampled tokens, end-of-sequence excluded
    texts: list[str]  # K response texts (cut at the stop string for base models)
    answers: list[str]  # K extracted answers (self-consistency votes on these)
    greedy: tuple[str, bool]  # greedy response and its label
    beam: tuple[str, bool] | None  # beam-search response and its label, None when skipped
    seconds: float  # wall-clock time spent generating this problem
    # The greedy response's features; None in records cached before they were kept
    greedy_candidate: GreedyCandidate | None = None


def layer_indices(loaded: LoadedModel, fractions: tuple[float, ...] = LAYER_FRACTIONS) -> list[int]:
    """Hidden-state indices for depth fractions, rounded as the service rounds them."""
    return [round(f * loaded.num_layers) for f in fractions]


def problem_seed(seed: int, uid: str) -> int:
    """A per-problem seed that does not depend on which other problems are generated."""
    return (seed * 1_000_003 + zlib.crc32(uid.encode())) % (2**31)


def uses_chat(loaded: LoadedModel, task: Task) -> bool:
    """Chat template unless the model has none or the task asks for raw few-shot prompts."""
    return loaded.has_chat_template and not getattr(task, "raw", False)


def prompt_ids(loaded: LoadedModel, task: Task, problem: Problem) -> list[int]:
    chat = uses_chat(loaded, task)
    return render_prompt(loaded, pb.Prompt(text=task.prompt(problem, chat), raw=not chat))


def cut_at_stop(loaded: LoadedModel, token_ids: list[int], stop: tuple[str, ...]) -> list[int]:
    """Longest token prefix whose text ends before the first stop string (base models ramble on).

    Cutting at a token boundary alone is not enough: with the stop "\\ndef " the
    tokens "\\n", "def" come before the one that completes the stop and would be
    kept, leaving a dangling `def` that makes a correct function a syntax error.
    """
    if not stop:
        return token_ids
    text = loaded.tokenizer.decode(token_ids)
    starts = [text.find(s) for s in stop if s in text]
    if not starts:
        return token_ids
    kept = text[: min(starts)]
    end = 0
    while end < len(token_ids) and kept.startswith(loaded.tokenizer.decode(token_ids[: end + 1])):
        end += 1
    return token_ids[:end]


def extract_features(
    loaded: LoadedModel, prompt: list[int], responses: list[list[int]], layers: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L, d) instruction, (K, L, d) last-token and (K, L, d) mean response features.

    `central.pooling.pool_responses` prefills the prompt once and feeds the
    responses in one right-padded batch on a copy of its cache: the same
    forward primitive the service's Features RPC runs, with the same
    definition of an empty response (its end-of-sequence token, never the prompt).
    """
    instruction, pooled = pool_responses(
        loaded, prompt, responses, layers, batch_size=max(len(responses), 1)
    )
    empty = np.zeros((0, *instruction.shape), dtype=np.float32)
    last = np.stack([p.last for p in pooled]) if pooled else empty
    mean = np.stack([p.mean for p in pooled]) if pooled else empty
    return to_float16(instruction), to_float16(last), to_float16(mean)


def _sampled(
    loaded: LoadedModel,
    prompt: list[int],
    config: SamplingConfig,
    layer: int,
    *,
    entropy: bool = False,
) -> list[SampledCandidate]:
    items = list(sample(loaded, prompt, config, layer, entropy=entropy))
    cands = [c for c in items[1:] if isinstance(c, SampledCandidate)]
    return sorted(cands, key=lambda c: c.index)


@torch.inference_mode()
def beam_search(loaded: LoadedModel, prompt: list[int], width: int, max_new: int) -> list[int]:
    """The top beam's new tokens (transformers' beam search, length penalty 1)."""
    eos = sorted(loaded.eos_token_ids)
    out = loaded.model.generate(
        input_ids=torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        num_beams=width,
        do_sample=False,
        max_new_tokens=max_new,
        eos_token_id=eos,
        pad_token_id=eos[0],
    )
    new = out[0, len(prompt) :].tolist()
    return [t for t in new if t not in loaded.eos_token_ids]


def generate_problem(
    loaded: LoadedModel, task: Task, problem: Problem, config: GenerationConfig
) -> ProblemRecord:
    """Samples, cuts, labels and featurises the K candidates of one problem."""
    import time

    start = time.perf_counter()
    ids = prompt_ids(loaded, task, problem)
    stop = () if uses_chat(loaded, task) else task.stop
    layers = layer_indices(loaded)
    main = round(MAIN_FRACTION * loaded.num_layers)
    sampling = SamplingConfig(
        k=config.k,
        temperature=config.temperature or task.temperature,
        max_new_tokens=task.max_new_tokens,
        seed=problem_seed(config.seed, problem.uid),
    )
    cands = _sampled(loaded, ids, sampling, main, entropy=True)
    responses = [cut_at_stop(loaded, c.token_ids, stop) for c in cands]
    texts = [loaded.tokenizer.decode(r) for r in responses]
    instruction, features, means = extract_features(loaded, ids, responses, layers)
    greedy, greedy_candidate = greedy_response(loaded, task, problem)
    beam: tuple[str, bool] | None = None
    if config.beam_width > 1:
        beam_ids = beam_search(loaded, ids, config.beam_width, task.max_new_tokens)
        beam_text = loaded.tokenizer.decode(cut_at_stop(loaded, beam_ids, stop))
        beam = (beam_text, task.is_correct(problem, beam_text))
    return ProblemRecord(
        uid=problem.uid,
        instruction=instruction,
        candidates=features,
        labels=np.array([task.is_correct(problem, t) for t in texts], dtype=np.float32),
        logprobs=np.array(
            [c.cumulative_logprob / max(len(c.token_ids), 1) for c in cands], dtype=np.float32
        ),
        # The sampler's scalars describe the sampled tokens; for a base model whose
        # response was cut at a stop string they include the cut-off tail.
        means=means,
        cumulative=np.array([c.cumulative_logprob for c in cands], dtype=np.float32),
        entropies=np.array([c.mean_entropy or 0.0 for c in cands], dtype=np.float32),
        num_tokens=np.array([len(r) for r in responses], dtype=np.int32),
        texts=texts,
        answers=[task.extract(problem, t) for t in texts],
        greedy=greedy,
        beam=beam,
        seconds=time.perf_counter() - start,
        greedy_candidate=greedy_candidate,
    )


def greedy_response(
    loaded: LoadedModel, task: Task, problem: Problem
) -> tuple[tuple[str, bool], GreedyCandidate]:
    """The greedy response, its label and its features (as a sampled candidate's)."""
    ids = prompt_ids(loaded, task, problem)
    stop = () if uses_chat(loaded, task) else task.stop
    main = round(MAIN_FRACTION * loaded.num_layers)
    config = SamplingConfig(k=1, temperature=0.0, max_new_tokens=task.max_new_tokens, seed=0)
    drawn = _sampled(loaded, ids, config, main, entropy=True)[0]
    response = cut_at_stop(loaded, drawn.token_ids, stop)
    text = loaded.tokenizer.decode(response)
    _, last, mean = extract_features(loaded, ids, [response], layer_indices(loaded))
    candidate = GreedyCandidate(
        answer=task.extract(problem, text),
        last=last[0],
        mean=mean[0],
        cumulative=float(drawn.cumulative_logprob),
        entropy=float(drawn.mean_entropy or 0.0),
        num_tokens=len(response),
    )
    return (text, task.is_correct(problem, text)), candidate
