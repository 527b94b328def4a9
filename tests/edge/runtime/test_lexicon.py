"""The on-device lexicon block: its recipe (the module doc), case by case."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from edge.runtime.lexicon import (
    LEXICON_WIDTH,
    candidate_lexicon,
    category_counts,
    category_names,
    lexicon_block,
)
from edge.runtime.types import Candidate


def _counts(text: str, singular: bool = True) -> dict[str, float]:
    counts, _ = category_counts([text], singular)
    return {n: float(c) for n, c in zip(category_names(), counts[0], strict=True) if c}


def test_the_block_has_every_category_once_in_file_order() -> None:
    names = category_names()
    assert len(names) == len(set(names)) == LEXICON_WIDTH
    assert names[:2] == ("help", "office")  # Empath's file order first
    assert names[-2:] == ("@number", "@name")
    assert {"hedges", "reader_address", "money", "negative_emotion"} <= set(names)


def test_a_word_counts_once_in_every_category_listing_it() -> None:
    counts = _counts("You should perhaps save money. Money, money!")
    assert counts["money"] == 3  # case folded, every occurrence
    assert counts["hedges"] == 1 and counts["reader_address"] == 1
    assert counts["directives"] == 1  # "should"


def test_apostrophes_join_words_and_the_typographic_one_is_folded() -> None:
    straight, curly = (
        _counts("You're right, don't worry."),
        _counts("You\u2019re right, don\u2019t worry."),
    )
    assert straight == curly
    assert straight["reader_address"] == 1  # "you're" is one listed word, not "you" + "re"
    assert straight["negation"] == 1  # "don't"


def test_unlisted_plurals_count_in_their_singulars_categories() -> None:
    # Empath lists "dollar" and "penny", not their plurals
    exact, singular = _counts("Dollars and pennies.", False), _counts("Dollars and pennies.")
    assert singular.get("money", 0) > exact.get("money", 0)


def test_numbers_and_names_but_not_sentence_starts_or_the_pronoun_i() -> None:
    counts = _counts("Paris has 2 million people. I think Berlin is big; it costs 3.5 euros")
    assert counts["@number"] == 3  # "2", "3", "5": a word is a run of letters and digits
    assert counts["@name"] == 1  # Berlin; Paris and I start a sentence or are the pronoun
    assert "@name" not in _counts("I'm sure. Yes: Indeed.")


def test_the_block_is_log_one_plus_counts_per_candidate() -> None:
    texts = ["Money money money.", "", "Perhaps you could."]
    block = lexicon_block(texts)
    assert block.shape == (3, LEXICON_WIDTH) and block.dtype == np.float32
    counts, words = category_counts(texts)
    np.testing.assert_allclose(block, np.log1p(counts), rtol=1e-6)
    np.testing.assert_array_equal(words, [3, 0, 3])
    assert not block[1].any()  # an empty answer says nothing
    cands = [Candidate(i, t, (), "eos", 0.0, np.zeros(2, np.float32)) for i, t in enumerate(texts)]
    np.testing.assert_array_equal(candidate_lexicon(cands), block)


def test_the_lexicon_data_ships_with_the_package() -> None:
    """Installed as package data: a fresh interpreter reads it through importlib.resources."""
    code = "from edge.runtime.lexicon import category_names; print(len(category_names()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(LEXICON_WIDTH)
