"""The optimiser alone: the Newton solve inside a span reaches its exact minimum."""

from __future__ import annotations

import numpy as np

from edge.app.taste.optimiser import newton_in_span


def _objective(a, diffs, margins, weights, linear, quadratic):  # type: ignore[no-untyped-def]
    m = margins + diffs @ a
    return (weights * np.logaddexp(0, -m)).sum() + linear @ a + 0.5 * a @ quadratic @ a


def test_the_span_solve_finds_the_minimum_of_its_convex_objective() -> None:
    rng = np.random.default_rng(0)
    n, c = 60, 4
    diffs, margins = rng.standard_normal((n, c)), rng.standard_normal(n)
    weights = rng.uniform(0.5, 1.5, n)
    root = rng.standard_normal((c, c))
    quadratic, linear = root @ root.T + np.eye(c), rng.standard_normal(c)
    a, value = newton_in_span(diffs, margins, weights, linear, quadratic)
    assert value == _objective(a, diffs, margins, weights, linear, quadratic)
    p = 1 / (1 + np.exp(margins + diffs @ a))  # sigmoid of minus the margins
    gradient = -(diffs.T @ (weights * p)) + linear + quadratic @ a
    assert np.linalg.norm(gradient) < 1e-6
    for _ in range(20):  # and no nearby point is lower
        trial = a + 1e-3 * rng.standard_normal(c)
        assert _objective(trial, diffs, margins, weights, linear, quadratic) >= value
