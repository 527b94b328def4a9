"""One user's fit: the rows of their shown sets, the preferences on them, and the heads.

``TasteFit`` ties the pieces of this room together for one user: a set's
candidates become rows (``rows``), its reactions preference pairs (``pairs``),
and each head of ``TasteConfig.head_priors`` (``heads``) is moved towards the
optimum of its objective by the optimiser (``optimiser``); the user's head is
the heads' Hedge mix, a ``TasteHead`` ready to compose into the ranker graph.
It is built for one update per event at a few hundred events of history: the
rows stay in memory and a warm update continues from the previous optimum.
The model, the objective and the measurements behind each choice are in
docs/taste-learner.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge._errors import FeatureError, TrainingError
from edge.app.learning import FitReport
from edge.app.taste import optimiser
from edge.app.taste.basis import PartBasis, choose_bases
from edge.app.taste.config import TasteConfig
from edge.app.taste.head import TasteHead
from edge.app.taste.heads import HeadState, hedge_mix, root_priors
from edge.app.taste.pairs import Pairs, Reaction, pair_loss, preference_pairs
from edge.app.taste.rows import Rows

__all__ = ["TasteFit"]


@dataclass
class _Set:
    start: int  # first row of the set's candidates
    k: int  # number of candidates
    pairs: Pairs = field(default_factory=Pairs.empty)  # in row indices


class TasteFit:
    """One user's rows, preferences and heads, updated in place per event.

    ``has_global``: the sets come with a global ranker's scores, so (with
    ``config.global_weight``) the rows end with the global score's column and
    ``v``'s last coordinate is ``u``. The fit keeps one head per
    ``config.head_priors`` entry over the same rows (they differ only in how
    much each part is trusted a priori) and ranks with their mix (``mix``).

    ``layout`` maps each block the rows stack to its width, in stacking order:
    ``edge.runtime.parts.part_layout(d, parts)`` for the parts a ranker reads
    (what the learner passes; ``head`` then gives the ``TasteHead`` to compose).
    Any other names work for an offline study of new blocks (``weights`` and
    ``score`` read them; ``TasteConfig.extra_blocks`` lets its priors name them).
    The first block is required in every set.

    A block wider than ``config.reduce_above`` is fitted in a basis
    (``edge.app.taste.basis``): ``shipped`` (the global ranker's, by block name)
    where it has one of the block's width, else the seeded random one. ``v`` and
    the rows are then in the basis's coordinates for that block; ``weights``
    folds them back into raw weights.
    """

    def __init__(
        self,
        layout: Mapping[str, int],
        config: TasteConfig,
        has_global: bool = False,
        shipped: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.config = config
        self.rows = Rows(
            layout,
            global_column=has_global and config.global_weight,
            standardise_each=config.standardise_each,
            variance_prior=config.variance_prior,
            refresh_block=config.refresh_block,
            bases=choose_bases(config, layout, shipped),
        )
        self.parts: tuple[str, ...] = self.rows.parts  # the blocks fitted, in layout order
        self.layout: dict[str, int] = self.rows.layout  # block name -> width
        self.width = self.rows.width  # D: the length of a row and of v
        roots = root_priors(config.head_priors, self.parts, self.rows.groups, self.width)
        if self.rows.global_column is not None:  # u's own pull: global_l2, not l2
            for root in roots:
                root[self.rows.global_column] *= np.sqrt(config.l2 / config.global_l2)
        # one head per distinct prior, in head_priors order
        self.heads = [HeadState.zeros(root, self.rows.capacity, config.memory) for root in roots]
        self._base_roots = [root.copy() for root in roots]  # before any adaptive prior
        self._sets: dict[str, _Set] = {}
        self._pairs: Pairs | None = Pairs.empty()  # all sets' pairs; None when stale

    # -- data ------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return self.rows.count

    @property
    def num_sets(self) -> int:
        return len(self._sets)

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def has_set(self, set_id: str) -> bool:
        return set_id in self._sets

    @property
    def bases(self) -> dict[str, PartBasis]:
        """The blocks fitted in a basis, and their bases (empty: every block whole)."""
        return self.rows.bases

    @property
    def nbytes(self) -> int:
        """Bytes held for this user: the rows and every head's state, capacity
        included (not the bases, which every user of a width shares)."""
        return self.rows.nbytes + sum(head.nbytes for head in self.heads)

    def add_set(
        self,
        set_id: str,
        parts: Mapping[str, np.ndarray | None],
        global_scores: np.ndarray | None = None,
    ) -> None:
        """Append a shown set's K rows from its ``parts`` by block name ((K, width)
        each; the layout's first block required, the others may be absent or None:
        they stay 0, no information).

        ``global_scores`` are the global ranker's scores of the set (None: 0), the
        offset and, when u is fitted, the last column."""
        if set_id in self._sets:
            raise TrainingError(f"set {set_id!r} is already in the fit")
        unknown = {name for name, value in parts.items() if value is not None} - set(self.layout)
        if unknown:
            raise FeatureError(f"set {set_id!r}: parts {sorted(unknown)} are not in the fit")
        new = self.rows.deviations(set_id, parts, global_scores)
        start, grown = self.rows.add(new)
        for head in self.heads:
            if grown is not None:
                head.grow(grown, start)
            head.add_rows(start, new.rows)
        self._sets[set_id] = _Set(start, len(new.rows))

    def set_reactions(self, set_id: str, reactions: Sequence[Reaction]) -> None:
        """Replace a set's preferences with those its reactions (all so far) state.

        A set's first preferences are scored by every head before any head
        learns from them: that loss is the head's prequential evidence (``mix``)."""
        entry = self._sets[set_id]
        for r in reactions:
            if not all(0 <= i < entry.k for i in (r.candidate, *r.rejected)):
                raise TrainingError(f"set {set_id!r}: candidate index out of range in {r}")
        local = preference_pairs(reactions, entry.k, self.config.implicit_weight)
        fresh = not len(entry.pairs.weights)
        entry.pairs = local.shifted(entry.start)
        if fresh:
            for head in self.heads:
                loss = pair_loss(entry.pairs, optimiser.margins(self.rows, entry.pairs, head))
                head.observe(loss, self.config.evidence_decay)
        if fresh and self._pairs is not None:  # the common case: one new set, append
            self._pairs = Pairs.concat([self._pairs, entry.pairs])
        else:
            self._pairs = None

    def pairs(self, set_ids: Iterable[str] | None = None) -> Pairs:
        """The preferences of the given sets (default: all), in row indices."""
        if set_ids is not None:
            return Pairs.concat(self._sets[s].pairs for s in set_ids if s in self._sets)
        if self._pairs is None:
            self._pairs = Pairs.concat(s.pairs for s in self._sets.values())
        return self._pairs

    # -- the heads and their mix ---------------------------------------------------------
    def mix(self) -> np.ndarray:
        """Each head's share of the ranking head: Hedge on the heads' prequential pair
        log-loss, ``exp(-mix_rate * evidence)`` normalised (``edge.app.taste.heads``).

        A head's evidence is the log-loss of every set's preferences as that head
        scored them *before* learning from them, older sets discounted by
        ``evidence_decay``: how well the head's prior generalises for this user
        now, which a training loss cannot say."""
        return hedge_mix(self.evidence, self.config.mix_rate)

    @property
    def evidence(self) -> tuple[float, ...]:
        """Each head's prequential loss so far (see ``mix``), in ``head_priors`` order."""
        return tuple(head.evidence for head in self.heads)

    @property
    def v(self) -> np.ndarray:
        """The ranking head's weights over the rows' columns, the heads' mix: raw
        feature space but for a block fitted in a basis, in its coordinates there
        (``weights`` folds them back)."""
        share = self.mix()
        return np.sum([a * head.v for a, head in zip(share, self.heads, strict=True)], axis=0)

    @property
    def global_weight(self) -> float:
        """u: the global score counts ``1 + u`` times (0 when u is not fitted)."""
        column = self.rows.global_column
        return 0.0 if column is None else float(self.v[column])

    def weights(self) -> dict[str, np.ndarray]:
        """The ranking head (the heads' mix) per block, float32 in raw feature space: a
        block fitted in a basis ``P`` folds in as ``P @ a``."""
        v, out = self.v, {}
        for name, (lo, hi) in self.rows.spans.items():
            out[name] = v[lo:hi].astype(np.float32)
            if name in self.bases:
                out[name] = self.bases[name].matrix @ out[name]
        return out

    def score(
        self, parts: Mapping[str, np.ndarray], global_scores: np.ndarray | None = None
    ) -> np.ndarray:
        """(..., K) scores of (..., K, width) blocks by name, as the composed graph
        computes them: ``(1 + u)`` times the global ranker's scores (when given) plus
        one float32 product per block (every block of the layout needed)."""
        weights = self.weights()
        missing = [name for name in weights if name not in parts]
        if missing:
            raise FeatureError(f"scoring needs the parts {missing}")
        total = np.zeros(np.shape(parts[self.parts[0]])[:-1], np.float32)
        if global_scores is not None:
            total += np.float32(1.0 + self.global_weight) * np.asarray(global_scores, np.float32)
        for name, w in weights.items():
            total += np.asarray(parts[name], np.float32) @ w
        return total

    def head(self) -> TasteHead:
        """The current weights (the heads' mix) as a head for ``compose_ranker`` (every
        block of the layout must be a part of ``edge.runtime.parts``)."""
        return TasteHead(self.weights(), global_weight=self.global_weight)

    def start_from(self, head: TasteHead | None, evidence: Sequence[float] | None = None) -> None:
        """Give every head ``head``'s weights (None: zeros) for the parts both have
        (projected onto a part's basis: exact for a head this basis folded), and its
        u when this fit has one; forget memory. ``evidence`` (one value per
        head, e.g. what a saved version recorded) restores the mix; else it restarts
        even. A part of another width (another model's features) raises FeatureError."""
        v = np.zeros(self.width)
        if head is not None:
            for part, (lo, hi) in self.rows.spans.items():
                if part not in head.weights:
                    continue
                given = head.weights[part]
                if len(given) != self.layout[part]:
                    raise FeatureError(
                        f"saved head's {part} part has {len(given)} values, this fit's has "
                        f"{self.layout[part]}"
                    )
                basis = self.bases.get(part)
                v[lo:hi] = given if basis is None else basis.matrix.T @ given  # nearest in span
            if self.rows.global_column is not None:
                v[self.rows.global_column] = head.global_weight
        restored = evidence is not None and len(evidence) == len(self.heads)
        h = self.rows.times(v)
        for i, state in enumerate(self.heads):
            state.v = v.copy()
            state.h[: self.rows.count] = h
            state.filled = state.next = 0
            state.evidence = float(evidence[i]) if restored and evidence is not None else 0.0

    def _adapt_priors(self) -> None:
        """Sparse groups (``config.sparse_groups``): each coordinate's prior variance is
        the group's times ``(|z_j| + e) / mean(|z| + e)`` (z: the head's standardised
        weights so far, e: ``sparse_floor`` x their mean |z|), a reweighted L2 step
        towards an L1 prior: the group's prior mass goes to the coordinates the
        user's feedback has moved, the rest shrink."""
        groups = [g for g in self.config.sparse_groups if g in self.rows.groups]
        if not groups:
            return
        base_scale = self.rows.scale()
        for head, base in zip(self.heads, self._base_roots, strict=True):
            root = base.copy()
            for group in groups:
                lo, hi = self.rows.groups[group]
                z = np.abs(head.v[lo:hi] / (base_scale[lo:hi] * base[lo:hi]))
                level = float(z.mean())
                if level > 0:
                    weight = z + self.config.sparse_floor * level
                    root[lo:hi] = base[lo:hi] * np.sqrt(weight / weight.mean())
            head.root_prior = root

    # -- the objective and the fit -----------------------------------------------------
    def scale(self, head: HeadState | None = None) -> np.ndarray:
        """Raw -> standardised factor per coordinate (group width and within-set
        spread), times ``head``'s prior (the first head's by default)."""
        return self.rows.scale() * (self.heads[0] if head is None else head).root_prior

    def objective(self, head: HeadState | None = None) -> float:
        """A head's objective over every pair (the first head's by default)."""
        head = self.heads[0] if head is None else head
        return optimiser.objective(self.rows, self.pairs(), head, self.scale(head), self.config.l2)

    def loss(self, set_ids: Iterable[str] | None = None) -> float:
        """Mean pair loss (weighted, no penalty) of the ranking head (the mix) over
        the given sets' pairs; nan if none."""
        pairs = self.pairs(set_ids)
        if not len(pairs.weights):
            return float("nan")
        share = self.mix()
        margins = sum(
            a * optimiser.margins(self.rows, pairs, h)
            for a, h in zip(share, self.heads, strict=True)
        )
        return pair_loss(pairs, np.asarray(margins)) / float(pairs.weights.sum())

    def fit(self, max_passes: int | None = None, refresh: float | None = None) -> FitReport:
        """Move every head towards the optimum of its objective on the current data:
        at most ``max_passes`` outer iterations each (default ``config.passes``),
        fewer once converged.

        ``refresh`` (default ``config.refresh``) is the share of sets whose
        gradient each iteration recomputes, the most stale first; 1 computes the
        exact gradient. Whether to stop is always decided on the exact gradient.
        The heads step in lockstep (a product over the rows per head). The
        report's loss and gradient are those of the head with the largest share
        of the mix."""
        started, cpu = time.perf_counter(), time.process_time()
        pairs = self.pairs()
        total_weight = float(pairs.weights.sum())
        if total_weight == 0:
            return FitReport(0, float("nan"), 0.0, time.perf_counter() - started, 0.0)
        share = self.config.refresh if refresh is None else refresh
        limit = self.config.passes if max_passes is None else max_passes
        self._adapt_priors()
        runs = [optimiser.Run(head, self.scale(head)) for head in self.heads]
        optimiser.iterate(self.rows, runs, pairs, self.config, limit, share)
        mix = self.mix()
        best = runs[int(np.argmax(mix))]
        objective = best.objective
        if objective is None:
            objective = optimiser.objective(self.rows, pairs, best.head, best.scale, self.config.l2)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return FitReport(
            max(run.passes for run in runs),
            objective / total_weight,
            best.gradient / total_weight,
            seconds,
            float(np.mean([run.refreshed / max(run.passes, 1) for run in runs])),
            cpu,
            tuple(float(a) for a in mix),
        )
