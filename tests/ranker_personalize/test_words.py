"""The content block is a recipe: pinned output, and an independent implementation agrees."""

from __future__ import annotations

import binascii
import math
import unicodedata

import numpy as np
import pytest

from ranker_personalize.words import (
    CONTENT_DIM,
    CONTENT_NAME,
    CONTENT_VERSION,
    ContentSpec,
    content_block,
    content_keys,
    content_words,
)

TEXT = "Don\u2019t worry: go to bed at 10 pm. Go to bed!"

# Version 1's output for TEXT: (column, value) of every non-zero, from the recipe in
# the module docstring. Another language's implementation must print the same.
PINNED = [
    (59, -0.350512), (89, 0.207018), (121, -0.207018), (255, -0.350512),
    (316, 0.207018), (462, 0.350512), (481, -0.207018), (581, -0.207018),
    (696, 0.207018), (708, -0.350512), (748, 0.207018), (837, 0.207018),
    (854, -0.350512), (981, 0.207018),
]  # fmt: skip


def test_version_1_output_is_pinned() -> None:
    assert (CONTENT_NAME, CONTENT_VERSION, CONTENT_DIM) == ("hashed-words", 1, 1024)
    row = content_block([TEXT])[0]
    got = [(int(i), round(float(row[i]), 6)) for i in np.flatnonzero(row)]
    assert got == PINNED


def _independent(text: str, dim: int = CONTENT_DIM) -> np.ndarray:
    """The docstring's five steps, written again without the module's helpers."""
    lowered = text.lower().replace("'", "").replace("\u2019", "")
    words, current = [], ""
    for ch in lowered:
        if unicodedata.category(ch)[0] in "LN":
            current += ch
        elif current:
            words.append(current)
            current = ""
    if current:
        words.append(current)
    keys = words + [words[i] + " " + words[i + 1] for i in range(len(words) - 1)]
    out = np.zeros(dim)
    for key in set(keys):
        weight = 1.0 + math.log(keys.count(key))
        h = binascii.crc32(key.encode("utf-8"))
        out[h % dim] += weight if h < 2**31 else -weight
    norm = np.linalg.norm(out)
    return out / norm if norm else out


@pytest.mark.parametrize(
    "text",
    [
        TEXT,
        "You might want to save money: set a budget, and you'll spend less.",
        "Caf\u00e9 na\u00efve \u00c9COLE 3\u00bd times, 42 km!",
        "- one\n- two\n\n1. three",
        "",
    ],
)
def test_an_independent_implementation_of_the_recipe_agrees(text: str) -> None:
    np.testing.assert_allclose(content_block([text])[0], _independent(text), atol=1e-6)


def test_words_and_keys() -> None:
    assert content_words("It's 10 PM, don\u2019t_stop") == ["its", "10", "pm", "dont", "stop"]
    keys = content_keys("go to bed go to")
    assert keys["go to"] == 2 and keys["to bed"] == 1 and keys["go"] == 2
    assert "go to" not in content_keys("go to", pairs=False)


def test_block_shape_norm_and_empty_answers() -> None:
    block = content_block(["A short answer.", "", "Another, different answer about money."])
    assert block.shape == (3, CONTENT_DIM) and block.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(block, axis=1), [1.0, 0.0, 1.0], atol=1e-6)
    assert content_block([]).shape == (0, CONTENT_DIM)
    # case and apostrophes do not change the words
    np.testing.assert_array_equal(content_block(["Don't GO"]), content_block(["dont go"]))


def test_spec_checks_the_width_and_other_specs_differ() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ContentSpec(dim=1000)
    wide = content_block([TEXT], ContentSpec(dim=4096))
    assert wide.shape == (1, 4096)
    counts = content_block([TEXT], ContentSpec(sublinear=False, normalise=False))[0]
    assert np.abs(counts).max() == 2.0  # "go", "to", "bed" twice
