"""The optimiser: sequential subspace steps over the rows, the gradient kept as in SAGA.

Each head minimises, over its weights ``v`` (``u`` last, when fitted),

    f(v) = sum_pairs w * log(1 + exp(-(g_i + x_i.v - g_j - x_j.v))) + l2/2 * |v / s|^2

(the rows ``x``, offsets ``g`` and standardisation ``s`` of ``rows.Rows``, the
head's prior folded into ``s``). An outer iteration takes the gradient, reads
the rows times the new direction, and solves the problem exactly, by Newton's
method, inside the span of that direction and the last ``memory`` steps
(sequential subspace optimisation, SESOP: Narkiss and Zibulevsky 2005), which
costs pairs x directions, not pairs x dimensions. Warm-started from the
previous optimum and its memory, one iteration per new event follows the
optimum (``passes``).

Reading the rows is the whole cost at wide features, so it is read as little as
possible: the gradient is kept as ``rows^T`` times each row's last computed loss
derivative, and an iteration recomputes only the ``refresh`` share of sets whose
derivatives moved most, a new set first (as SAGA does: Defazio, Bach and
Lacoste-Julien 2014); the rest of the read is the product with the new
direction. A cold fit, and any decision to stop, uses the exact gradient. The
derivation and the measurements are in docs/taste-learner.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.app.taste.config import TasteConfig
from edge.app.taste.heads import HeadState
from edge.app.taste.pairs import Pairs, pair_loss, sigmoid
from edge.app.taste.rows import Rows, times_rows

__all__ = [
    "Run",
    "iterate",
    "margins",
    "newton_in_span",
    "objective",
    "refresh",
    "row_gradient",
    "step",
]


@dataclass
class Run:
    """One head's progress through a fit."""

    head: HeadState  # the head being fitted
    scale: np.ndarray  # its raw -> standardised factor per coordinate (prior included)
    passes: int = 0  # iterations run
    refreshed: float = 0.0  # share of rows whose gradient was recomputed, summed over passes
    gradient: float = 0.0  # |standardised gradient| when it stopped
    objective: float | None = None  # objective after its last step (None: not computed)


def margins(rows: Rows, pairs: Pairs, head: HeadState) -> np.ndarray:
    """Each pair's score margin, winner minus loser, under ``head``."""
    total = rows.offsets + head.h[: rows.count]
    return total[pairs.winners] - total[pairs.losers]


def row_gradient(rows: Rows, pairs: Pairs, pair_margins: np.ndarray) -> np.ndarray:
    """d(pair loss)/d(row score) for every row."""
    push = pairs.weights * sigmoid(-pair_margins)  # how hard each pair pulls its winner up
    return np.bincount(pairs.losers, push, rows.count) - np.bincount(
        pairs.winners, push, rows.count
    )


def objective(rows: Rows, pairs: Pairs, head: HeadState, scale: np.ndarray, l2: float) -> float:
    """``f`` of ``head``, whose standardisation (prior included) is ``scale``."""
    data = pair_loss(pairs, margins(rows, pairs, head))
    return data + 0.5 * l2 * float(((head.v / scale) ** 2).sum())


def _gradient(run: Run, l2: float) -> np.ndarray:
    """The head's objective gradient in raw coordinates, with its kept data term."""
    return run.head.g_ref + l2 * run.head.v / run.scale**2


def _gradient_norm(run: Run, l2: float) -> float:
    return float(np.linalg.norm(run.scale * _gradient(run, l2)))


def iterate(
    rows: Rows, runs: Sequence[Run], pairs: Pairs, config: TasteConfig, limit: int, share: float
) -> None:
    """Step every head towards its optimum, in lockstep, at most ``limit`` outer
    iterations each, fewer once converged (its exact gradient small enough)."""
    total_weight = float(pairs.weights.sum())
    l2, tolerance = config.l2, config.tolerance * total_weight
    active = list(runs)
    for passes in range(1, limit + 1):
        if not active:
            break
        grads = [row_gradient(rows, pairs, margins(rows, pairs, run.head)) for run in active]
        read = refresh(rows, [run.head for run in active], grads, share)
        moving: list[Run] = []
        for run, r in zip(active, grads, strict=True):
            run.passes, run.refreshed = passes, run.refreshed + read
            run.gradient = _gradient_norm(run, l2)
            if run.gradient <= tolerance and share < 1:
                run.refreshed += refresh(rows, [run.head], [r], 1.0)  # confirm: exact
                run.gradient = _gradient_norm(run, l2)
            if run.gradient <= tolerance:
                run.objective = None  # converged: computed by the caller
            else:
                moving.append(run)
        if moving:
            directions = np.stack([-(run.scale**2) * _gradient(run, l2) for run in moving])
            products = rows.times(directions.T)
            for j, run in enumerate(moving):
                run.objective = step(rows, run, pairs, directions[j], products[:, j], config)
        active = moving


def refresh(
    rows: Rows, heads: Sequence[HeadState], grads: Sequence[np.ndarray], share: float
) -> float:
    """Bring each head's ``g_ref`` closer to the gradient for its row derivatives
    (``grads``, one array per head): recompute it for the ``share`` of sets whose
    derivatives moved most since their last refresh, summed over the heads (all
    of them, exactly, at 1). Returns the rows' share.

    Reading only part of the history per iteration is what keeps one update
    per event cheap at wide features; the sets whose derivatives barely moved
    (old, settled feedback) contribute their last value, as in SAGA, and a new
    set, whose stale value is 0, goes first.
    """
    n, x = rows.count, rows.stored
    r = np.stack(grads, axis=1)  # (rows, heads)
    if share >= 1:
        products = times_rows(rows.stored_weights(r).astype(np.float32), x).astype(np.float64)
        for j, head in enumerate(heads):
            head.r_ref[:n] = r[:, j]
            head.g_ref = products[j]
        return 1.0
    blocks = rows.block_starts
    starts, stored_starts = blocks[:, 0], blocks[:, 1]
    delta = r - np.stack([head.r_ref[:n] for head in heads], axis=1)
    moved = np.abs(delta)  # each head's staleness counts as a share of its own total
    stale = np.add.reduceat(moved / np.maximum(moved.sum(0), 1e-300), starts).sum(1)
    count = min(len(starts), max(1, int(np.ceil(share * len(starts)))))
    chosen = np.sort(np.argpartition(-stale, count - 1)[:count])
    ends = np.append(starts[1:], n)
    stored_ends = np.append(stored_starts[1:], rows.num_stored)
    weights = rows.stored_weights(delta).astype(np.float32)
    # Consecutive chosen blocks (often the newest ones) are read as one run.
    breaks = np.flatnonzero(np.diff(chosen) > 1) + 1
    read, change = 0, np.zeros((len(heads), rows.width), np.float32)
    for run in np.split(chosen, breaks):
        lo, hi = int(stored_starts[run[0]]), int(stored_ends[run[-1]])
        change += times_rows(weights[lo:hi], x[lo:hi])
        lo, hi = int(starts[run[0]]), int(ends[run[-1]])
        for j, head in enumerate(heads):
            head.r_ref[lo:hi] = r[lo:hi, j]
        read += hi - lo
    for j, head in enumerate(heads):
        head.g_ref = head.g_ref + change[j]
    return read / n


def step(
    rows: Rows,
    run: Run,
    pairs: Pairs,
    direction: np.ndarray,
    direction_rows: np.ndarray,
    config: TasteConfig,
) -> float:
    """Minimise exactly over v + [direction, memory] @ a, remember the step, and
    return the objective reached."""
    head, penalty = run.head, 1.0 / run.scale**2
    used = head.filled
    dirs = head.dirs[:used]
    memory_rows = head.dir_rows[: rows.count, :used]
    w, lo = pairs.winners, pairs.losers
    diffs = np.empty((len(w), used + 1))
    diffs[:, 0] = direction_rows[w] - direction_rows[lo]
    diffs[:, 1:] = memory_rows[w] - memory_rows[lo]
    # The L2 term restricted to the span: linear and quadratic coefficients.
    pv, pd = penalty * head.v, penalty * direction
    weighted = dirs * penalty
    quadratic = np.empty((used + 1, used + 1))
    quadratic[0, 0] = direction @ pd
    quadratic[0, 1:] = quadratic[1:, 0] = dirs @ pd
    quadratic[1:, 1:] = weighted @ dirs.T
    linear = np.concatenate([[direction @ pv], dirs @ pv])
    l2 = config.l2
    a, value = newton_in_span(
        diffs, margins(rows, pairs, head), pairs.weights, l2 * linear, l2 * quadratic
    )
    step_v = direction * a[0] + a[1:] @ dirs
    step_rows = direction_rows * a[0] + memory_rows @ a[1:]
    reached = value + 0.5 * l2 * float(head.v @ pv)
    head.v = head.v + step_v
    head.h[: rows.count] += step_rows
    if config.memory:  # overwrite the oldest remembered step
        head.dirs[head.next] = step_v
        head.dir_rows[: rows.count, head.next] = step_rows
        head.next = (head.next + 1) % config.memory
        head.filled = min(head.filled + 1, config.memory)
    return reached


def newton_in_span(
    diffs: np.ndarray,
    margins: np.ndarray,
    weights: np.ndarray,
    linear: np.ndarray,
    quadratic: np.ndarray,
    iterations: int = 30,
) -> tuple[np.ndarray, float]:
    """argmin over a of  sum w * softplus(-(m + diffs @ a)) + linear . a + a Q a / 2,
    and the minimum.

    ``diffs`` (N, c) is each pair's winner-minus-loser row products with the c
    directions; ``linear`` and ``quadratic`` are the L2 penalty's terms. A
    damped Newton method on c <= memory + 1 unknowns.
    """
    c = diffs.shape[1]
    a, m = np.zeros(c), margins
    ridge = 1e-10 * max(1.0, float(np.trace(quadratic)) / max(c, 1)) * np.eye(c)
    enough = 1e-11 * max(1.0, float(weights.sum()))  # predicted decrease at which to stop
    current = float((weights * np.logaddexp(0.0, -m)).sum())
    for _ in range(iterations):
        p = sigmoid(-m)
        grad = -(diffs.T @ (weights * p)) + linear + quadratic @ a
        hess = diffs.T @ (diffs * (weights * p * (1 - p))[:, None]) + quadratic
        try:
            step_a = np.linalg.solve(hess + ridge, -grad)
        except np.linalg.LinAlgError:
            step_a = np.linalg.lstsq(hess, -grad, rcond=None)[0]
        decrease = float(grad @ step_a)
        if -decrease <= enough:
            break
        t = 1.0
        while t > 1e-6:  # backtracking; the full Newton step is nearly always taken
            trial = a + t * step_a
            trial_m = margins + diffs @ trial
            value = float(
                (weights * np.logaddexp(0.0, -trial_m)).sum()
                + linear @ trial
                + 0.5 * trial @ quadratic @ trial
            )
            if value <= current + 1e-4 * t * decrease:
                break
            t *= 0.5
        else:
            break
        a, m, current = trial, trial_m, value
    return a, current
