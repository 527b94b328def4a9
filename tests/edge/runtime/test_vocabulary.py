"""One vocabulary: the registry of a candidate's parts and the columnar scalars type."""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import pytest

from edge import FeatureError
from edge.runtime.onnx_meta import INPUT_CANDIDATES, INPUT_DESCRIPTIONS
from edge.runtime.parts import PARTS, VECTOR_PARTS, Part, VectorPart
from edge.runtime.scalars import Scalars
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION, candidate_signals, text_signals
from edge.runtime.types import Candidate


def test_every_part_is_one_registry_entry_with_its_input_width_and_version() -> None:
    assert tuple(PARTS) == get_args(Part) and get_args(VectorPart) == VECTOR_PARTS
    assert [spec.name for spec in PARTS.values()] == list(PARTS)
    assert PARTS["last"].input == INPUT_CANDIDATES
    assert len({spec.input for spec in PARTS.values()}) == len(PARTS)
    for spec in PARTS.values():
        assert spec.input in INPUT_DESCRIPTIONS  # the exporters document it
        assert spec.size(576) == (576 if spec.name in VECTOR_PARTS else spec.width)
        assert (spec.source == "central") == (spec.name in VECTOR_PARTS)
    assert PARTS["signals"].width == len(SIGNAL_NAMES)
    assert PARTS["signals"].version == SIGNALS_VERSION


def test_scalars_keep_one_normal_form_whatever_comes_in() -> None:
    scalars = Scalars(
        num_tokens=[3, -1, 2.0, True],
        cumulative_logprobs=np.array([-1.5, np.nan, np.inf, -2.0]),
        mean_entropies=[0.5, None, math.nan, 1],
        finish_reasons=["eos", "length", None, "eos"],
    )
    assert scalars.num_tokens == (3, None, 2, None)  # a count is a non-negative number
    assert scalars.cumulative_logprobs == (-1.5, None, None, -2.0)  # finite or unknown
    assert scalars.mean_entropies == (0.5, None, None, 1.0)
    assert scalars.finish_reasons == ("eos", "length", None, "eos")
    assert Scalars.from_json(scalars.to_json()) == scalars  # what the store writes and reads
    assert Scalars().to_json() is None and not Scalars.from_json(None).known
    with pytest.raises(ValueError, match="not a JSON object"):
        Scalars.from_json("[1, 2]")


def test_the_signals_read_the_scalars_type_or_its_columns_alike() -> None:
    features = np.zeros(4, np.float32)
    cands = [
        Candidate(0, "yes", (1, 2), "eos", -0.5, features, mean_entropy=0.25),
        Candidate(1, "- a\n- b", (1, 2, 3), "length", -4.0, features),
    ]
    scalars = Scalars.of(cands)
    assert scalars == Scalars((2, 3), (-0.5, -4.0), (0.25, None), ("eos", "length"))
    table = text_signals([c.text for c in cands], scalars)
    np.testing.assert_array_equal(table, candidate_signals(cands))
    by_column = text_signals(
        [c.text for c in cands],
        num_tokens=[2, 3],
        cumulative_logprobs=[-0.5, -4.0],
        mean_entropies=[0.25, None],
        finish_reasons=["eos", "length"],
    )
    np.testing.assert_array_equal(by_column, table)
    with pytest.raises(FeatureError, match="not both"):
        text_signals(["a"], Scalars(num_tokens=[1]), num_tokens=[1])
    with pytest.raises(FeatureError, match="got 1 finish reasons for 2 texts"):
        text_signals(["a", "b"], Scalars(finish_reasons=["eos"]))
