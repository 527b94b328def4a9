"""One contract every ranker kind passes, checked end to end (like river's ``check_estimator``).

``check_ranker(kind)`` takes one entry of ``RANKER_KINDS`` through a ranker's
whole life and asserts at each step something a broken kind would fail:

1. build: the same seed gives the same weights, another seed other weights;
2. train: on planted data the held-out loss drops and the planted candidate wins;
3. export: the file written is the bytes returned, stamped with kind and size;
4. parity: torch and onnxruntime agree (the family's own parity check);
5. rank: onnxruntime scores held-out groups as torch does;
6. checkpoint: weights -> bytes -> a rebuilt ranker scores bit for bit the same;
7. registry: a saved version, reopened from disk, scores exactly as before;
8. refusals: every entry point of the *other* input families refuses the kind
   with an edge error (a ``RankerError``) naming it, never a raw one.

The check sits above every family it checks (``edge.checks``: above
``edge.training`` and ``edge.swift``), so no family's room imports another's to
test itself.

Kinds differ only in their input family: ``VectorRanker`` (vectors per
candidate: list, point) or ``SwiftRanker`` (per-token features). Each family
is one ``_Family`` subclass below, saying how its rankers are trained,
exported and scored; a new kind of an existing family needs no change here,
a new family one subclass.

``VARIANTS`` names configurations checked besides each kind's defaults, e.g.
list and point rankers reading the last-token and mean vectors and the signals
block: ``check_ranker("list+mean+signals")``. A variant is one table entry; its
planted data carries every part it reads.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import onnx
import torch

from edge._errors import RankerError
from edge.app.checkpoint import Checkpoint
from edge.app.dataset import GroupDataset
from edge.app.registry import Registry
from edge.runtime.onnx_meta import (
    INPUT_CANDIDATES,
    INPUT_INSTRUCTION,
    INPUT_MEAN_CANDIDATES,
    INPUT_SIGNALS,
    META_FEATURE_SIZE,
    META_KIND,
    META_REPRESENTATION,
)
from edge.runtime.scoring import RankingSession
from edge.runtime.signals import SIGNAL_NAMES
from edge.swift.export import check_swift_parity, export_swift_onnx
from edge.swift.head import SwiftRanker
from edge.swift.scoring import TokenRankingSession
from edge.swift.synthetic import planted_token_dataset
from edge.swift.train import (
    SwiftTrainConfig,
    TokenDataset,
    evaluate_swift_loss,
    score_groups,
    train_swift,
)
from edge.training.export import ParityReport, check_parity, export_onnx
from edge.training.learner import LearnerConfig
from edge.training.loop import TrainConfig, evaluate_loss, top1_accuracy, train
from edge.training.rankers import (
    RANKER_KINDS,
    RankerModule,
    Representation,
    VectorRanker,
    build_ranker,
    from_checkpoint,
    make_config,
)
from edge.training.synthetic import planted_dataset

__all__ = ["VARIANTS", "ConformanceReport", "check_ranker"]

_K = 4  # candidates per planted group
_USER = "conformance"  # registry owner of the versions the check saves
_SIGNALS = len(SIGNAL_NAMES)  # signals per planted candidate when a variant reads them

# Configurations checked besides each kind's defaults: name -> (kind, make_config arguments).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "list+mean+signals": ("list", {"vectors": ("last", "mean"), "signals": True}),
    "point+mean+signals": ("point", {"vectors": ("last", "mean"), "signals": True}),
    "point:mean": ("point", {"vectors": ("mean",)}),
    "list:signals-prior": (
        "list",
        {"signals": True, "signal_prior": {"mean_logprob": 1.0}, "relevance": "linear"},
    ),
}

Data = TypeVar("Data")  # a family's dataset type
Session = TypeVar("Session")  # a family's onnxruntime session type
# An entry point of a family, called with a ranker of another family, that
# ranker's ONNX bytes and a scratch directory, to see that it refuses them.
EntryPoint = Callable[[RankerModule, bytes, Path], object]


@dataclass(frozen=True)
class ConformanceReport:
    """What ``check_ranker`` measured; every step passed its assertion."""

    kind: str  # the RANKER_KINDS entry checked
    family: str  # its input family: "vector" or "token"
    variant: str  # the name checked: the kind itself (its defaults) or a VARIANTS entry
    num_parameters: int  # trainable scalars of the built ranker
    loss_before: float  # held-out loss before training
    loss_after: float  # held-out loss after training (lower)
    top1: float  # held-out fraction of groups whose top-scored candidate is correct
    max_abs_diff: float  # largest |torch - onnxruntime| score difference of the parity check
    refusals: dict[str, str] = field(repr=False)  # other families' entry points -> their error
    seconds: float = 0.0  # wall-clock time of the whole check


class _Family(ABC, Generic[Data, Session]):
    """How the rankers of one input family are trained, exported and scored.

    Planted datasets of one family share their planted direction across seeds,
    so a ranker trained on one seed is judged on another; every group has K = 4.
    """

    name: ClassVar[str]  # as reported: "vector", "token"
    module: ClassVar[type[RankerModule]]  # the family's base class
    feature_size: ClassVar[int]  # small, so that a check takes seconds

    @abstractmethod
    def planted(self, num_groups: int, seed: int, config: Any) -> Data:
        """Planted data with every input a ranker of ``config`` reads."""

    @abstractmethod
    def train(self, model: RankerModule, data: Data) -> None: ...

    @abstractmethod
    def loss(self, model: RankerModule, data: Data) -> float: ...

    @abstractmethod
    def scores(self, model: RankerModule, data: Data) -> np.ndarray:
        """(G, K) torch scores of every group of ``data``."""

    @abstractmethod
    def labels(self, data: Data) -> np.ndarray:
        """(G, K) labels of ``data``, 1.0 for a correct candidate."""

    @abstractmethod
    def export(self, model: RankerModule, path: Path) -> bytes: ...

    @abstractmethod
    def parity(self, model: RankerModule, onnx_model: bytes) -> ParityReport: ...

    @abstractmethod
    def session(self, onnx_model: bytes) -> Session: ...

    @abstractmethod
    def saved_session(self, registry: Registry, name: str) -> Session:
        """The session for the current version of ``name`` in ``registry``."""

    @abstractmethod
    def session_scores(self, session: Session, data: Data) -> np.ndarray:
        """(G, K) onnxruntime scores of every group of ``data``."""

    @abstractmethod
    def entry_points(self) -> dict[str, EntryPoint]:
        """Every public function that takes this family's rankers, to try others on."""


class _Vector(_Family[GroupDataset, Any]):
    """List and point rankers: ``edge.training`` trains them, ``RankingSession`` scores them."""

    name = "vector"
    module = VectorRanker
    feature_size = 16

    def planted(self, num_groups: int, seed: int, config: Any) -> GroupDataset:
        parts = config.parts if isinstance(config, Representation) else ("last",)
        return planted_dataset(
            num_groups,
            _K,
            self.feature_size,
            seed=seed,
            mean="mean" in parts,
            signals=_SIGNALS if "signals" in parts else 0,
        )

    def train(self, model: RankerModule, data: GroupDataset) -> None:
        train(model, data, TrainConfig(min_steps=60, batch_candidates=64))

    def loss(self, model: RankerModule, data: GroupDataset) -> float:
        return evaluate_loss(model, data)

    @torch.no_grad()
    def scores(self, model: RankerModule, data: GroupDataset) -> np.ndarray:
        inputs = _block_inputs(data)
        names = model.input_names if isinstance(model, VectorRanker) else list(inputs)[:2]
        tensors = {n: torch.from_numpy(inputs[n].astype(np.float32)) for n in names}
        return np.asarray(model.eval()(**tensors).numpy())

    def labels(self, data: GroupDataset) -> np.ndarray:
        return np.asarray(data.blocks[0].labels)

    def export(self, model: RankerModule, path: Path) -> bytes:
        return export_onnx(model, path, exporter="torchscript")

    def parity(self, model: RankerModule, onnx_model: bytes) -> ParityReport:
        return check_parity(model, onnx_model, ks=(1, 3, 7))

    def session(self, onnx_model: bytes) -> RankingSession:
        return RankingSession.load(onnx_model)

    def saved_session(self, registry: Registry, name: str) -> Any:
        return registry.open(_USER, name)  # a hot-swappable Ranker, scored like a session

    def session_scores(self, session: Any, data: GroupDataset) -> np.ndarray:
        block = data.blocks[0]
        return np.asarray(
            session.score_batch(
                block.instructions,
                block.candidates,
                mean_candidates=block.mean_candidates,
                signals=block.signals,
            )
        )

    def entry_points(self) -> dict[str, EntryPoint]:
        def data(model: RankerModule) -> GroupDataset:
            return planted_dataset(4, _K, model.feature_size)

        def registry_open(model: RankerModule, onnx_model: bytes, tmp: Path) -> object:
            registry = Registry(tmp / "refusals")
            registry.save(_USER, model.kind, onnx_model)
            return registry.open(_USER, model.kind)

        return {
            "edge.training.train()": lambda m, _, __: train(m, data(m)),
            "edge.training.evaluate_loss()": lambda m, _, __: evaluate_loss(m, data(m)),
            "edge.training.top1_accuracy()": lambda m, _, __: top1_accuracy(m, data(m)),
            "edge.training.export_onnx()": lambda m, _, __: export_onnx(m),
            "edge.training.check_parity()": lambda m, onnx_model, _: check_parity(m, onnx_model),
            "edge.training.LearnerConfig()": lambda m, _, __: LearnerConfig(kind=m.kind),
            "edge.runtime.RankingSession": lambda _, onnx_model, __: RankingSession.load(
                onnx_model
            ),
            "edge.app.Registry.open()": registry_open,
        }


class _Token(_Family[TokenDataset, TokenRankingSession]):
    """SWIFT: ``edge.swift`` trains and exports it, ``TokenRankingSession`` scores it."""

    name = "token"
    module = SwiftRanker
    feature_size = 8

    def planted(self, num_groups: int, seed: int, config: Any) -> TokenDataset:
        return planted_token_dataset(num_groups, _K, self.feature_size, max_tokens=8, seed=seed)

    def train(self, model: RankerModule, data: TokenDataset) -> None:
        train_swift(model, data, SwiftTrainConfig(epochs=8))

    def loss(self, model: RankerModule, data: TokenDataset) -> float:
        return evaluate_swift_loss(model, data)

    def scores(self, model: RankerModule, data: TokenDataset) -> np.ndarray:
        return np.stack(score_groups(model, data))

    def labels(self, data: TokenDataset) -> np.ndarray:
        return np.stack([g.labels for g in data.groups])

    def export(self, model: RankerModule, path: Path) -> bytes:
        return export_swift_onnx(model, path)

    def parity(self, model: RankerModule, onnx_model: bytes) -> ParityReport:
        return check_swift_parity(model, onnx_model, ((1, 1), (3, 5), (7, 2)))

    def session(self, onnx_model: bytes) -> TokenRankingSession:
        return TokenRankingSession.load(onnx_model)

    def saved_session(self, registry: Registry, name: str) -> TokenRankingSession:
        # Registry.open serves vector rankers; a SWIFT version is loaded from its bytes.
        return TokenRankingSession.load(registry.load_model(_USER, name))

    def session_scores(self, session: TokenRankingSession, data: TokenDataset) -> np.ndarray:
        return np.stack([session.score(g.tokens) for g in data.groups])

    def entry_points(self) -> dict[str, EntryPoint]:
        def data(model: RankerModule) -> TokenDataset:
            return planted_token_dataset(4, _K, model.feature_size, max_tokens=4)

        return {
            "edge.swift.train_swift()": lambda m, _, __: train_swift(m, data(m)),
            "edge.swift.evaluate_swift_loss()": lambda m, _, __: evaluate_swift_loss(m, data(m)),
            "edge.swift.score_groups()": lambda m, _, __: score_groups(m, data(m)),
            "edge.swift.export_swift_onnx()": lambda m, _, __: export_swift_onnx(m),
            "edge.swift.check_swift_parity()": lambda m, onnx_model, _: check_swift_parity(
                m, onnx_model
            ),
            "edge.swift.TokenRankingSession": lambda _, onnx_model, __: TokenRankingSession.load(
                onnx_model
            ),
        }


_FAMILIES: tuple[_Family[Any, Any], ...] = (_Vector(), _Token())


def _block_inputs(data: GroupDataset) -> dict[str, np.ndarray]:
    """The arrays of a planted dataset's one block, by graph input name."""
    block = data.blocks[0]
    inputs = {INPUT_INSTRUCTION: block.instructions, INPUT_CANDIDATES: block.candidates}
    if block.mean_candidates is not None:
        inputs[INPUT_MEAN_CANDIDATES] = block.mean_candidates
    if block.signals is not None:
        inputs[INPUT_SIGNALS] = block.signals
    return inputs


def _family_of(kind: str) -> _Family[Any, Any]:
    module = RANKER_KINDS[kind][0]
    for family in _FAMILIES:
        if issubclass(module, family.module):
            return family
    known = [f.module.__name__ for f in _FAMILIES]
    raise AssertionError(f"ranker kind {kind!r}: {module.__name__} derives from none of {known}")


class _Check:
    """One kind's walk through the steps; each step keeps what the later ones need."""

    model: RankerModule  # built by build(), trained by train()
    loss_before: float  # train(): held-out loss before and after training
    loss_after: float
    top1: float  # train(): held-out top-1 accuracy after training
    onnx: bytes  # export(): the exported graph
    max_abs_diff: float  # parity(): worst torch vs onnxruntime difference
    onnx_scores: np.ndarray  # rank(): held-out scores from onnxruntime
    weights: bytes  # checkpoint(): the serialised checkpoint

    def __init__(self, kind: str, root: Path, overrides: dict[str, Any]) -> None:
        self.kind = kind
        self.root = root
        self.overrides = overrides
        self.family = _family_of(kind)
        self.config = make_config(kind, self.family.feature_size, **overrides)
        self.held_out = self.family.planted(48, 1, self.config)

    def expect(self, condition: bool, step: str, message: str) -> None:
        """Fail the check (an AssertionError, as river's checks do) naming kind and step."""
        if not condition:
            raise AssertionError(f"ranker kind {self.kind!r} fails {step}: {message}")

    def same_scores(self, model: RankerModule) -> bool:
        """Whether ``model`` scores the held-out groups bit for bit as the trained ranker."""
        return np.array_equal(
            self.family.scores(model, self.held_out), self.family.scores(self.model, self.held_out)
        )

    def build(self) -> None:
        self.model, twin, other = (build_ranker(self.config, seed=s) for s in (0, 0, 1))
        family = self.family.module
        self.expect(isinstance(self.model, family), "build", f"not a {family.__name__}")
        self.expect(self.model.kind == self.kind, "build", f"its kind is {self.model.kind!r}")
        self.expect(self.model.num_parameters() > 0, "build", "no trainable parameters")
        pairs = zip(self.model.state_dict().values(), twin.state_dict().values(), strict=True)
        same = all(torch.equal(a, b) for a, b in pairs)
        pairs = zip(self.model.parameters(), other.parameters(), strict=True)
        differs = any(not torch.equal(a, b) for a, b in pairs)
        self.expect(same and differs, "build", "the weights are not a function of the seed")

    def train(self) -> None:
        self.loss_before = self.family.loss(self.model, self.held_out)
        self.family.train(self.model, self.family.planted(96, 0, self.config))
        self.loss_after = self.family.loss(self.model, self.held_out)
        self.expect(
            self.loss_after < self.loss_before,
            "train",
            f"held-out loss went from {self.loss_before:.4f} to {self.loss_after:.4f}",
        )
        labels = self.family.labels(self.held_out)
        best = self.family.scores(self.model, self.held_out).argmax(-1)
        self.top1 = float(labels[np.arange(len(best)), best].mean())
        self.expect(self.top1 >= 0.75, "train", f"the planted candidate wins {self.top1:.0%}")

    def export(self) -> None:
        path = self.root / "export" / f"{self.kind}.onnx"
        self.onnx = self.family.export(self.model, path)
        self.expect(path.read_bytes() == self.onnx, "export", f"{path} is not the bytes returned")
        others = sorted(p.name for p in path.parent.iterdir() if p != path)
        self.expect(not others, "export", f"temporary files left beside {path.name}: {others}")
        graph = onnx.load_from_string(self.onnx)
        meta = {p.key: p.value for p in graph.metadata_props}
        stamped = (meta.get(META_KIND), meta.get(META_FEATURE_SIZE))
        wanted = (self.kind, str(self.model.feature_size))
        self.expect(stamped == wanted, "export", f"metadata says {stamped}, expected {wanted}")
        if isinstance(self.model, VectorRanker):
            inputs = tuple(i.name for i in graph.graph.input)
            self.expect(
                inputs == self.model.input_names,
                "export",
                f"the graph's inputs are {inputs}, the ranker reads {self.model.input_names}",
            )
            parts = json.loads(meta.get(META_REPRESENTATION, "[]"))
            self.expect(
                tuple(parts) == self.model.parts,
                "export",
                f"metadata says it reads {parts}, the ranker reads {list(self.model.parts)}",
            )

    def parity(self) -> None:
        report = self.family.parity(self.model, self.onnx)
        self.expect(report.ok, "parity", f"differences {report.max_abs_diff}")
        self.max_abs_diff = max(report.max_abs_diff.values())

    def rank(self) -> None:
        self.onnx_scores = self.family.session_scores(self.family.session(self.onnx), self.held_out)
        diff = float(np.abs(self.onnx_scores - self.family.scores(self.model, self.held_out)).max())
        self.expect(diff <= 1e-4, "rank", f"onnxruntime scores differ from torch by {diff:.2e}")

    def checkpoint(self) -> None:
        self.weights = self.model.to_checkpoint().to_bytes()
        restored = from_checkpoint(Checkpoint.from_bytes(self.weights))
        self.expect(type(restored) is type(self.model), "checkpoint", f"rebuilt a {type(restored)}")
        self.expect(restored.config == self.model.config, "checkpoint", "the config changed")
        self.expect(
            self.same_scores(restored), "checkpoint", "the rebuilt ranker scores differently"
        )

    def registry(self) -> None:
        root = self.root / "registry"
        Registry(root).save(_USER, self.kind, self.onnx, weights=self.weights)
        registry = Registry(root)  # opened afresh, as an app restarting would
        session = self.family.saved_session(registry, self.kind)
        reopened = self.family.session_scores(session, self.held_out)
        self.expect(
            np.array_equal(reopened, self.onnx_scores),
            "registry",
            "the saved graph scores differently",
        )
        saved = registry.load_weights(_USER, self.kind)
        self.expect(saved == self.weights, "registry", "the saved weights are not those given")
        restored = from_checkpoint(Checkpoint.from_bytes(saved or b""))
        self.expect(self.same_scores(restored), "registry", "the saved weights score differently")

    def refusals(self) -> dict[str, str]:
        refused: dict[str, str] = {}
        for family in _FAMILIES:
            if family is self.family:
                continue
            for name, entry_point in family.entry_points().items():
                refused[name] = self.refused_by(name, entry_point)
        return refused

    def refused_by(self, name: str, entry_point: EntryPoint) -> str:
        try:
            entry_point(self.model, self.onnx, self.root)
        except RankerError as exc:
            said = f"{type(exc).__name__}: {exc}"
            self.expect(repr(self.kind) in str(exc), "refusals", f"{name} did not name it: {said}")
            return said
        except Exception as exc:
            raise AssertionError(
                f"ranker kind {self.kind!r} fails refusals: {name} raised a raw "
                f"{type(exc).__name__} instead of an edge error naming the kind: {exc}"
            ) from exc
        raise AssertionError(
            f"ranker kind {self.kind!r} fails refusals: {name} accepted a {self.family.name} ranker"
        )


def check_ranker(kind: str, workdir: str | Path | None = None) -> ConformanceReport:
    """Walk ``kind`` through build, train, export, parity, rank, checkpoint, registry, refusals.

    ``kind`` is a ``RANKER_KINDS`` entry (its default config) or a ``VARIANTS``
    name. Raises ``AssertionError`` naming the kind and the first step it fails.
    Files go under ``workdir`` (a temporary directory when None). A few seconds.
    """
    if workdir is None:
        with TemporaryDirectory(prefix="check-ranker-") as tmp:
            return check_ranker(kind, tmp)
    start = time.perf_counter()
    variant = kind
    kind, overrides = VARIANTS.get(variant, (variant, {}))
    check = _Check(kind, Path(workdir), overrides)
    steps = (check.build, check.train, check.export, check.parity, check.rank)
    for step in (*steps, check.checkpoint, check.registry):
        try:
            step()
        except AssertionError:
            raise
        except Exception as exc:  # a step that crashes fails like one that asserts
            raise AssertionError(
                f"ranker kind {kind!r} fails {step.__name__}: {type(exc).__name__}: {exc}"
            ) from exc
    refusals = check.refusals()
    return ConformanceReport(
        kind=kind,
        family=check.family.name,
        variant=variant,
        num_parameters=check.model.num_parameters(),
        loss_before=check.loss_before,
        loss_after=check.loss_after,
        top1=check.top1,
        max_abs_diff=check.max_abs_diff,
        refusals=refusals,
        seconds=time.perf_counter() - start,
    )
