"""Every ranker kind passes one contract, and a broken kind fails it at the broken step.

``check_ranker`` (edge.checks.conformance) is parametrised over ``RANKER_KINDS``:
a kind added to that table is checked here without touching this file. The
refusal tests pin the messages a user sees when a kind meets a path that does
not serve it: the edge error of that step, naming the kind and the way out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from edge import ConfigError, CorruptModelError, ExportError, TrainingError
from edge.app.registry import Registry
from edge.checks import VARIANTS, check_ranker
from edge.runtime.scoring import Ranker
from edge.swift import (
    TokenRankingSession,
    build_swift,
    check_swift_parity,
    export_swift_onnx,
    planted_token_dataset,
    train_swift,
)
from edge.training import (
    RANKER_KINDS,
    LearnerConfig,
    RankerModule,
    VectorRanker,
    build_ranker,
    check_parity,
    export_onnx,
    make_config,
    planted_dataset,
    train,
)


@pytest.mark.parametrize("kind", sorted(RANKER_KINDS))
@pytest.mark.slow  # several seconds; CI runs it
def test_every_kind_conforms(kind: str, tmp_path: Path) -> None:
    report = check_ranker(kind, tmp_path)
    assert report.kind == kind == report.variant and report.num_parameters > 0
    assert report.loss_after < report.loss_before
    assert report.top1 >= 0.75  # chance is at most about a half on the planted data
    assert report.max_abs_diff < 1e-4
    # every entry point of the other families refused it, naming it
    assert len(report.refusals) >= 6
    assert all(repr(kind) in message for message in report.refusals.values())
    assert not any(m.startswith(("RuntimeError", "TypeError")) for m in report.refusals.values())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.slow  # several seconds; CI runs it
def test_every_multi_part_variant_conforms(variant: str, tmp_path: Path) -> None:
    """List and point rankers reading mean vectors and signals pass the same contract."""
    report = check_ranker(variant, tmp_path)
    kind, _ = VARIANTS[variant]
    assert (report.kind, report.variant, report.family) == (kind, variant, "vector")
    default = build_ranker(make_config(kind, 16)).num_parameters()
    assert report.num_parameters > default  # each extra part brings its own layers
    assert report.loss_after < report.loss_before
    assert report.top1 >= 0.75
    assert report.max_abs_diff < 1e-4
    assert len(report.refusals) >= 6
    assert all(repr(kind) in message for message in report.refusals.values())


def test_the_variants_cover_both_kinds_with_every_part() -> None:
    covered = {
        (kind, part)
        for kind, overrides in VARIANTS.values()
        for part in make_config(kind, 16, **overrides).parts  # type: ignore[union-attr]
    }
    assert {(k, p) for k in ("list", "point") for p in ("last", "mean", "signals")} <= covered


def test_a_variant_whose_graph_hides_its_parts_fails_at_export(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An exporter that forgets to say which parts the graph reads: the contract catches it,
    # naming the variant's kind and the step.
    from edge.runtime.onnx_meta import META_REPRESENTATION
    from edge.training import export as export_module

    real = export_module.ranker_metadata

    def forgetful(model: RankerModule) -> dict[str, str]:
        return {k: v for k, v in real(model).items() if k != META_REPRESENTATION}

    monkeypatch.setattr(export_module, "ranker_metadata", forgetful)
    with pytest.raises(AssertionError, match=r"'point' fails export: metadata says it reads \[\]"):
        check_ranker("point+mean+signals", tmp_path)


@dataclass
class _ForgetfulConfig:
    feature_size: int  # d
    hidden_size: int = 8  # unused; a config field other than d, as every kind has


class _ForgetfulRanker(VectorRanker):
    """Scores shifted by a running mean kept in a buffer its checkpoint leaves out."""

    kind: ClassVar[str] = "forgetful"
    offset: torch.Tensor

    def __init__(self, config: _ForgetfulConfig) -> None:
        super().__init__()
        self.config = config
        self.score = nn.Linear(config.feature_size, 1)
        self.register_buffer("offset", torch.zeros(()), persistent=False)

    def forward(self, instruction: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.offset.fill_(float(candidates.mean()))
        return self.score(candidates - instruction.unsqueeze(1)).squeeze(-1) + self.offset


def test_a_kind_is_one_table_entry_and_a_broken_one_fails_where_it_breaks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(RANKER_KINDS, "forgetful", (_ForgetfulRanker, _ForgetfulConfig))
    with pytest.raises(AssertionError, match="'forgetful' fails checkpoint: the rebuilt"):
        check_ranker("forgetful", tmp_path)


class _Familyless(RankerModule):
    kind: ClassVar[str] = "familyless"


def test_a_kind_outside_every_family_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RANKER_KINDS, "familyless", (_Familyless, _ForgetfulConfig))
    with pytest.raises(AssertionError, match="derives from none of"):
        check_ranker("familyless")


@pytest.fixture(scope="module")
def swift_head() -> RankerModule:
    return build_ranker(make_config("swift", 8), seed=0)


@pytest.fixture(scope="module")
def swift_onnx(swift_head: RankerModule) -> bytes:
    return export_swift_onnx(swift_head)


def _needs(kind: str, entry_point: str) -> str:
    """The end of a refusal: which function serves ``kind`` instead."""
    return re.escape(f"{kind!r} needs {entry_point}()")


def test_language_ranker_paths_refuse_swift_and_name_its_own(
    swift_head: RankerModule, swift_onnx: bytes
) -> None:
    data = planted_dataset(4, 3, 8)
    with pytest.raises(TrainingError) as err:
        train(swift_head, data)
    assert str(err.value) == (
        "train() takes 'list' or 'point' rankers; 'swift' needs edge.swift.train_swift()"
    )
    with pytest.raises(ExportError, match=_needs("swift", "edge.swift.export_swift_onnx")):
        export_onnx(swift_head)
    with pytest.raises(ExportError, match=_needs("swift", "edge.swift.check_swift_parity")):
        check_parity(swift_head, swift_onnx)
    with pytest.raises(ConfigError, match="Learner takes 'list' or 'point' rankers; 'swift'"):
        LearnerConfig(kind="swift")
    with pytest.raises(ConfigError, match="unknown ranker kind 'tree'"):
        LearnerConfig(kind="tree")


def test_the_runtime_and_the_registry_refuse_a_swift_graph_by_name(
    swift_onnx: bytes, tmp_path: Path
) -> None:
    by_name = r"'swift' ranker.*edge\.swift\.TokenRankingSession"
    with pytest.raises(CorruptModelError, match=by_name):
        Ranker(swift_onnx)
    registry = Registry(tmp_path)
    registry.save("alice", "math", swift_onnx, weights=b"not read here")
    with pytest.raises(CorruptModelError, match=by_name):
        registry.open("alice", "math", fallback=True)
    session = TokenRankingSession.load(registry.load_model("alice", "math"))
    assert session.feature_size == 8  # the saved SWIFT graph itself is fine


@pytest.mark.parametrize("kind", ["list", "point"])
def test_swift_paths_refuse_language_rankers_and_name_their_own(kind: str) -> None:
    model = build_ranker(make_config(kind, 8))
    data = planted_token_dataset(4, 3, 8)
    with pytest.raises(TrainingError, match=_needs(kind, "edge.training.train")):
        train_swift(model, data)
    with pytest.raises(ExportError, match=_needs(kind, "edge.training.export_onnx")):
        export_swift_onnx(model)
    onnx_model = export_swift_onnx(build_swift(8))
    with pytest.raises(ExportError, match=_needs(kind, "edge.training.check_parity")):
        check_swift_parity(model, onnx_model)
    by_name = rf"'{kind}' ranker.*edge\.runtime\.RankingSession"
    with pytest.raises(CorruptModelError, match=by_name):
        TokenRankingSession.load(export_onnx(model, exporter="torchscript"))
