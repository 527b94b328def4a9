"""Several heads over the same rows, and their mix: which prior a user's taste fits.

How much each part should be trusted is a property of the user's taste (a
length or list taste lives in two signals, a topic in the vectors), and with a
few hundred pairs the prior decides most of the fit. So the fit keeps one head
per ``TasteConfig.head_priors`` entry over the same rows, each the optimum of
the objective with its groups' prior variances multiplied by a factor, and
ranks with their Hedge mix (Freund and Schapire 1997): each new set's
preferences are scored by every head *before* any head learns from them
(progressive validation), the summed pair log-loss is each head's evidence
(decaying by ``evidence_decay`` per set), and the shares are
``exp(-mix_rate * evidence)`` normalised. A convex mix of linear heads over the
same inputs is itself a linear head, so the ONNX graph and the files are the
same whatever the mix. The measurements behind the default heads and the decay
are in docs/taste-learner.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge.app.taste.rows import resized

__all__ = ["HeadState", "hedge_mix", "root_priors"]


@dataclass
class HeadState:
    """One head's weights and optimiser state over the fit's shared rows."""

    root_prior: np.ndarray  # (D,) sqrt of each coordinate's prior-variance factor
    v: np.ndarray  # (D,) weights in raw feature space (u last, when fitted)
    h: np.ndarray  # (row capacity,) rows @ v, up to a constant per set
    dirs: np.ndarray  # (memory, D) remembered steps, overwritten oldest first
    dir_rows: np.ndarray  # (row capacity, memory) the rows times each remembered step
    r_ref: np.ndarray  # (row capacity,) each row's loss derivative as last computed
    g_ref: np.ndarray  # (D,) rows^T @ r_ref: the data term's gradient as kept
    filled: int = 0  # remembered steps in use
    next: int = 0  # memory slot the next step overwrites
    evidence: float = 0.0  # prequential loss: each new set's pair log-loss before learning it

    @classmethod
    def zeros(cls, root_prior: np.ndarray, capacity: int, memory: int) -> HeadState:
        """A head at v = 0 over ``capacity`` rows, remembering ``memory`` steps."""
        width = len(root_prior)
        return cls(
            root_prior,
            v=np.zeros(width),
            h=np.zeros(capacity),
            dirs=np.zeros((memory, width)),
            dir_rows=np.zeros((capacity, memory)),
            r_ref=np.zeros(capacity),
            g_ref=np.zeros(width),
        )

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays (per-row ones at their capacity)."""
        arrays = (self.root_prior, self.v, self.h, self.dirs, self.dir_rows, self.r_ref, self.g_ref)
        return sum(a.nbytes for a in arrays)

    def grow(self, capacity: int, used: int) -> None:
        """Room for ``capacity`` rows in every per-row array, the first ``used`` kept."""
        for name in ("h", "dir_rows", "r_ref"):
            setattr(self, name, resized(getattr(self, name), capacity, used))

    def add_rows(self, start: int, rows: np.ndarray) -> None:
        """The products of a new set's rows with v and the remembered steps."""
        k = len(rows)
        self.h[start : start + k] = rows @ self.v.astype(np.float32)
        if self.filled:
            dirs = self.dirs[: self.filled].T.astype(np.float32)
            self.dir_rows[start : start + k, : self.filled] = rows @ dirs

    def observe(self, loss: float, decay: float) -> None:
        """A new set's pair log-loss as this head scored it before learning it."""
        self.evidence = decay * self.evidence + loss


def root_priors(
    head_priors: Sequence[Mapping[str, float]],
    parts: Sequence[str],
    groups: Mapping[str, tuple[int, int]],
    width: int,
) -> list[np.ndarray]:
    """sqrt of each head's prior factor per coordinate. A head is dropped when it
    equals an earlier one on this fit's groups (two heads that differ only on a
    part this fit lacks), or when it scales every part of the fit alike: another
    ``l2``, not another weighting of the parts (e.g. last x0.01 where 'last' is
    the only part). The first head is always kept: without signals the
    signals-heavy head is the balanced one."""
    roots: list[np.ndarray] = []
    for prior in head_priors:
        factors = {prior.get(p, 1.0) for p in parts}
        if roots and len(factors) == 1 and factors != {1.0}:
            continue
        root = np.ones(width)
        for group, (lo, hi) in groups.items():
            root[lo:hi] = np.sqrt(prior.get(group, 1.0))
        if not any(np.array_equal(root, r) for r in roots):
            roots.append(root)
    return roots


def hedge_mix(evidence: Sequence[float], rate: float) -> np.ndarray:
    """Each head's share: ``exp(-rate * evidence)`` normalised (``inf``: the best head
    alone). At rate 1 and no decay, a Bayesian posterior over the heads read as
    predictive models."""
    values = np.asarray(evidence, np.float64)
    if np.isinf(rate):
        share = np.zeros(len(values))
        share[int(np.argmin(values))] = 1.0
        return share
    weights = np.exp(-rate * (values - values.min()))
    return weights / weights.sum()
