"""What a list or point ranker reads of a candidate, and how each part enters it.

A candidate's representation has up to three parts, each a named graph input:

- ``last``: the hidden state of its last token (input ``candidates`` (B, K, d)),
  the paper's one vector;
- ``mean``: the mean hidden state over its response tokens (input
  ``mean_candidates`` (B, K, d));
- ``signals``: the block of on-device signals of ``edge.runtime.signals``
  (input ``signals`` (B, K, S)): length, layout, punctuation, log-probabilities.

Concatenating 8 statistics to 1,152 hidden dimensions under one projection and
one regulariser loses most of their benefit (issue 14), so each part enters on
its own terms:

- each vector part has its own projection d -> h followed by a LayerNorm, so the
  parts add up at one scale whatever their norms (a last-token state is often
  dominated by a few huge dimensions, a mean state is not);
- the signals are standardised (``signal_shift``/``signal_scale`` buffers fit on
  the training data, as SWIFT does for tokens), then a small projection S -> h
  adds them to the candidate's embedding, where attention and the MLP see them,
  *and* a direct linear term ``w . z`` adds them to the score, so a few signals
  (mean log-probability) can carry the ranking by themselves;
- with signals, the hidden-state score is multiplied by a learnt gate. A
  ``signal_prior`` sets the direct term's initial weights (e.g. +1 on
  ``mean_logprob``) and closes the gate, so an untrained ranker ranks exactly by
  the prior ("highest mean log-probability") and leaves it only as the data
  pulls the gate open.

A config that reads ``last`` alone and no signals is the paper's ranker, built
(same parameters, same names, same random draws) and computed exactly as before,
so old configs and checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edge._errors import ConfigError
from edge.runtime.onnx_meta import (
    INPUT_CANDIDATES,
    INPUT_INSTRUCTION,
    INPUT_MEAN_CANDIDATES,
    INPUT_SIGNALS,
)
from edge.runtime.parts import VECTOR_PARTS, Part, VectorPart
from edge.training._contract import VectorRanker

__all__ = ["VECTOR_PARTS", "PartRanker", "Representation", "VectorPart"]


class Representation:
    """Which parts of a candidate a ranker reads: the fields list and point configs share.

    A mixin of the config dataclasses, which declare the fields themselves
    (``vectors``, ``signal_names``, ``signals_version``, ``signal_prior``); this
    class checks them and derives what the ranker, the loop and the exporter
    need. The defaults read the last-token vector alone, the paper's
    representation (and that of every config written before representation
    v2). ``make_config(kind, d, signals=True)`` fills ``signal_names`` and
    ``signals_version`` with the current ``edge.runtime.signals`` block.
    """

    vectors: tuple[VectorPart, ...]  # hidden-state vectors per candidate, of VECTOR_PARTS
    signal_names: tuple[str, ...]  # columns of the signals input (S of them); () reads none
    signals_version: int  # SIGNALS_VERSION the columns were computed by; 0 without signals
    signal_prior: dict[str, float]  # initial direct weight per signal name (standardised)

    def __post_init__(self) -> None:
        # Configs come back from JSON (checkpoints, metadata) with lists for tuples; the
        # dataclasses are frozen, so the normal forms are set through object.__setattr__.
        vectors = tuple(self.vectors)
        object.__setattr__(self, "vectors", tuple(p for p in VECTOR_PARTS if p in vectors))
        if not self.vectors or len(self.vectors) != len(vectors):
            raise ConfigError(
                f"vectors must be distinct parts of {list(VECTOR_PARTS)}, at least one, "
                f"got {list(vectors)}"
            )
        object.__setattr__(self, "signal_names", tuple(str(n) for n in self.signal_names))
        if len(set(self.signal_names)) != len(self.signal_names):
            raise ConfigError(f"signal_names repeat a name: {list(self.signal_names)}")
        if bool(self.signal_names) != (self.signals_version > 0):
            raise ConfigError(
                "signal_names and signals_version go together: both set or neither "
                f"(got {len(self.signal_names)} names, version {self.signals_version})"
            )
        unknown = sorted(set(self.signal_prior) - set(self.signal_names))
        if unknown:
            raise ConfigError(f"signal_prior names signals the ranker does not read: {unknown}")
        prior = {str(k): float(v) for k, v in self.signal_prior.items()}
        object.__setattr__(self, "signal_prior", prior)

    @property
    def num_signals(self) -> int:
        """S, the width of the signals input (0: the ranker reads none)."""
        return len(self.signal_names)

    @property
    def parts(self) -> tuple[Part, ...]:
        """The parts read, e.g. ("last", "mean", "signals"): the graph's representation."""
        signals: tuple[Part, ...] = ("signals",) if self.signal_names else ()
        return (*self.vectors, *signals)

    @property
    def is_paper(self) -> bool:
        """True for the paper's (and pre-v2) representation: the last-token vector alone."""
        return self.vectors == ("last",) and not self.signal_names

    @property
    def input_names(self) -> tuple[str, ...]:
        """The graph's inputs, in order: always instruction and candidates, then the others.

        ``candidates`` is declared even by a ranker that reads ``mean`` alone,
        because every ranker graph takes it (``edge.runtime.RankingSession``).
        """
        extra = [INPUT_MEAN_CANDIDATES] if "mean" in self.vectors else []
        extra += [INPUT_SIGNALS] if self.signal_names else []
        return (INPUT_INSTRUCTION, INPUT_CANDIDATES, *extra)


class PartRanker(VectorRanker):
    """A VectorRanker whose candidates may be several parts: the input layers and the gate.

    Subclasses call ``_init_inputs`` first in ``__init__`` (it makes ``proj``,
    the instruction's and last-token vectors' projection, exactly as the paper's
    rankers did), embed with ``embed_instruction`` / ``embed_candidates`` and
    turn their relevance into the final score with ``combine``.
    """

    config: Any  # a dataclass deriving from Representation
    signal_shift: torch.Tensor  # (S,) buffer: mean of each signal on the training data
    signal_scale: torch.Tensor  # (S,) buffer: its standard deviation (1 where constant)

    def _init_inputs(self, config: Representation, feature_size: int, hidden: int) -> None:
        self.proj = nn.Linear(feature_size, hidden)
        if config.is_paper:
            return
        # "last" always: the instruction is a last-token state and takes that part's path.
        self.norms = nn.ModuleDict({p: nn.LayerNorm(hidden) for p in ("last", *config.vectors)})
        if "mean" in config.vectors:
            self.proj_mean = nn.Linear(feature_size, hidden)
        s = config.num_signals
        if s == 0:
            return
        self.register_buffer("signal_shift", torch.zeros(s))
        self.register_buffer("signal_scale", torch.ones(s))
        self.signal_proj = nn.Linear(s, hidden)
        self.signal_direct = nn.Linear(s, 1, bias=False)
        prior = [config.signal_prior.get(name, 0.0) for name in config.signal_names]
        gate = 0.0 if config.signal_prior else 1.0
        with torch.no_grad():
            self.signal_direct.weight.copy_(torch.tensor([prior]))
        self.vector_gate = nn.Parameter(torch.full((1,), gate))

    # -- what the ranker reads -------------------------------------------------------
    @property
    def representation(self) -> Representation:
        config: Representation = self.config
        return config

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.representation.input_names

    @property
    def parts(self) -> tuple[Part, ...]:
        return self.representation.parts

    # -- the signals' standardisation ------------------------------------------------
    @property
    def signals_fitted(self) -> bool:
        """Whether the standardisation was fit (False: still the identity it starts as)."""
        if self.representation.num_signals == 0:
            return True
        return bool((self.signal_shift != 0).any() or (self.signal_scale != 1).any())

    def fit_signal_scaling(self, rows: np.ndarray) -> None:
        """Set shift/scale to the mean/std of signal rows ``(N, S)`` (training data only)."""
        s = self.representation.num_signals
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, s)
        if len(rows) == 0:
            return
        mean, std = rows.mean(0), rows.std(0)
        with torch.no_grad():
            self.signal_shift.copy_(torch.from_numpy(mean.astype(np.float32)))
            scale = np.where(std > 1e-6, std, 1.0).astype(np.float32)
            self.signal_scale.copy_(torch.from_numpy(scale))

    def _standardised(self, signals: torch.Tensor) -> torch.Tensor:
        return (signals - self.signal_shift) / self.signal_scale

    # -- embeddings and the score ----------------------------------------------------
    def embed_instruction(self, instruction: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, h): the last-token projection (and its norm, past the paper's)."""
        x = self.proj(instruction)
        return x if self.representation.is_paper else self.norms["last"](x)

    def embed_candidates(
        self,
        candidates: torch.Tensor,
        mean_candidates: torch.Tensor | None,
        signals: torch.Tensor | None,
    ) -> torch.Tensor:
        """(B, K, ...) parts -> (B, K, h): the sum of each part's own embedding."""
        rep = self.representation
        if rep.is_paper:
            return self.proj(candidates)
        terms: list[torch.Tensor] = []
        if "last" in rep.vectors:
            terms.append(self.norms["last"](self.proj(candidates)))
        if "mean" in rep.vectors:
            terms.append(self.norms["mean"](self.proj_mean(_given(mean_candidates, "mean"))))
        if rep.num_signals:
            terms.append(self.signal_proj(self._standardised(_given(signals, "signals"))))
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def combine(self, relevance: torch.Tensor, signals: torch.Tensor | None) -> torch.Tensor:
        """(B, K) hidden-state relevance -> (B, K) scores: gated, plus the direct signal term."""
        if self.representation.num_signals == 0:
            return relevance
        direct = self.signal_direct(self._standardised(_given(signals, "signals"))).squeeze(-1)
        return self.vector_gate * relevance + direct


def _given(tensor: torch.Tensor | None, part: str) -> torch.Tensor:
    if tensor is None:
        names = {"mean": INPUT_MEAN_CANDIDATES, "signals": INPUT_SIGNALS}
        raise ValueError(f"this ranker reads the {part!r} part: pass {names[part]}=")
    return tensor
