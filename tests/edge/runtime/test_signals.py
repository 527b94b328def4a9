"""On-device signals: documented columns, finite, deterministic, from candidates or texts."""

from __future__ import annotations

import numpy as np
import pytest

import edge.runtime.signals as signals_module
from edge import FeatureError
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION, candidate_signals, text_signals
from edge.runtime.types import Candidate


def _column(table: np.ndarray, name: str) -> np.ndarray:
    return table[:, SIGNAL_NAMES.index(name)]


def test_every_signal_is_documented_and_the_version_is_an_integer() -> None:
    doc = signals_module.__doc__ or ""
    assert isinstance(SIGNALS_VERSION, int) and SIGNALS_VERSION >= 1
    assert len(set(SIGNAL_NAMES)) == len(SIGNAL_NAMES)
    for name in SIGNAL_NAMES:
        assert f"\n{name} " in doc, f"{name} is not described in the module docstring"


def test_empty_and_odd_texts_give_finite_values() -> None:
    texts = ["", "   \n\n", "\u2022", "!" * 10_000, "\x00\ud7ff", "```\ncode\n```"]
    table = text_signals(texts, cumulative_logprobs=[float("-inf"), 1e308, None, -5, 0, -1e9])
    assert table.shape == (len(texts), len(SIGNAL_NAMES)) and table.dtype == np.float32
    assert np.isfinite(table).all()
    np.testing.assert_array_equal(_column(table, "empty"), [1, 1, 0, 0, 0, 0])
    assert _column(table, "cumulative_logprob")[5] == -10_000.0  # clipped
    assert _column(table, "log_code_blocks")[5] == pytest.approx(np.log(2))
    assert np.all(table[0, : SIGNAL_NAMES.index("empty")] == 0)  # nothing known, all 0


def test_format_and_punctuation_signals_read_the_text() -> None:
    prose = "It is fine. We don't know; you'll see."
    listed = "Steps:\n- first\n- second\n1. third\n2) fourth"
    loud = "WOW!!! Really? Yes!"
    table = text_signals([prose, listed, loud])
    assert _column(table, "list_fraction").tolist() == pytest.approx([0.0, 0.8, 0.0])
    assert _column(table, "log_list_lines")[1] == pytest.approx(np.log1p(4))
    assert _column(table, "log_newlines")[1] == pytest.approx(np.log1p(4))
    assert _column(table, "log_contractions")[0] == pytest.approx(np.log1p(2))
    assert _column(table, "log_exclamations")[2] == pytest.approx(np.log1p(4))
    assert _column(table, "log_questions")[2] == pytest.approx(np.log1p(1))
    assert _column(table, "upper_fraction")[2] > 0.3 > _column(table, "upper_fraction")[0]
    words = _column(table, "log_words")
    assert words[1] > words[2] and _column(table, "log_chars")[0] > _column(table, "log_chars")[2]


def test_candidate_scalars_enter_as_likelihood_entropy_and_truncation() -> None:
    features = np.zeros(4, np.float32)
    sure = Candidate(0, "yes", (1, 2), "eos", -0.5, features, mean_entropy=0.25)
    unsure = Candidate(1, "maybe so", (1, 2, 3, 4), "length", -12.0, features)
    table = candidate_signals([sure, unsure])
    np.testing.assert_allclose(_column(table, "mean_logprob"), [-0.25, -3.0])
    np.testing.assert_allclose(_column(table, "cumulative_logprob"), [-0.5, -12.0])
    np.testing.assert_allclose(_column(table, "log_tokens"), np.log1p([2, 4]), rtol=1e-6)
    np.testing.assert_array_equal(_column(table, "mean_entropy"), [0.25, 0.0])
    np.testing.assert_array_equal(_column(table, "has_entropy"), [1.0, 0.0])
    np.testing.assert_array_equal(_column(table, "truncated"), [0.0, 1.0])
    # The same numbers from texts and scalars, as the feedback store recomputes them.
    again = text_signals(
        ["yes", "maybe so"],
        num_tokens=[2, 4],
        cumulative_logprobs=[-0.5, -12.0],
        mean_entropies=[0.25, None],
        finish_reasons=["eos", "length"],
    )
    np.testing.assert_array_equal(again, table)
    np.testing.assert_array_equal(candidate_signals([sure, unsure]), table)  # deterministic


def test_a_scalar_list_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(FeatureError, match="got 1 token counts for 2 texts"):
        text_signals(["a", "b"], num_tokens=[3])


def test_consensus_signals_read_the_other_candidates_of_the_set() -> None:
    names = list(SIGNAL_NAMES)
    agree, similar = names.index("agreement"), names.index("similarity")
    sig = text_signals(["Positive.", "positive", "Negative", "The sentiment is positive"])
    # Two answers agree once punctuation and case are dropped; each has 1 of 3 others.
    assert sig[:2, agree].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert sig[2:, agree].tolist() == [0.0, 0.0]
    # Word overlap: "positive" shares 1 of 4 words with the long answer.
    assert sig[3, similar] == pytest.approx((0.25 + 0.25 + 0.0) / 3)
    assert sig[2, similar] == 0.0
    # A set of one agrees with nobody; an empty set has no rows.
    assert text_signals(["alone"])[0, [agree, similar]].tolist() == [0.0, 0.0]
    assert text_signals([]).shape == (0, len(SIGNAL_NAMES))
