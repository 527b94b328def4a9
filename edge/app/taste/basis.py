"""Low-rank bases for the wide parts: a user's head for such a part lives in their span.

At 4096-d a user's rows (last-token and mean vectors, K-1 per set) are 8 KB per
part and candidate: 230 MB at 1,000 events, and every update reads them. A part
wider than ``TasteConfig.reduce_above`` is therefore kept as its coordinates in
an orthonormal basis ``P`` (width x rank) of that part: a candidate's ``x``
becomes ``P^T x``, the fit learns ``a`` in those coordinates, and the head it
saves is ``v = P a`` in raw feature space, since ``x . P a = (P^T x) . a``: the
ONNX graph, the head archive and every runtime see a plain linear head over the
raw inputs. ``P`` has orthonormal columns, so ``|v| = |a|`` and the objective is
the documented one restricted to the span of ``P``.

Where the basis comes from (``choose_bases``), per part:

- **shipped with the global ranker** (LoRe-style: Bose et al. 2025, a
  population's low-rank basis that each user's weights live in): the global
  version's head archive carries it (``attach_basis``), fitted by whoever
  publishes the global ranker on the population's shown sets
  (``population_basis``: the principal directions of the candidates'
  deviations from their set's mean, the only differences a ranker sees);
- else a **seeded random orthonormal basis** (``random_basis``), the same for
  every user of a width, re-derived from (seed, width, rank, part) after a
  restart.

Either is re-derivable, so nothing per user is stored beyond the head, and each
version records what it used (``PartBasis.describe``). Why a basis rather than a
sketch of the history, and what each costs, is measured in
docs/taste-learner.md ("Wide parts").
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from edge._cache import BoundedCache
from edge._errors import ConfigError, CorruptModelError, FeatureError
from edge.app.checkpoint import Checkpoint
from edge.app.taste.head import HEAD_KIND
from edge.runtime.parts import PARTS, Part

if TYPE_CHECKING:
    from edge.app.taste.config import TasteConfig

__all__ = [
    "BASIS_KEY",
    "PartBasis",
    "attach_basis",
    "choose_bases",
    "population_basis",
    "random_basis",
    "shipped_basis",
]

BASIS_KEY = "basis."  # a head archive's array "basis.<part>" is that part's shipped basis
_OVERSAMPLE, _POWER_ITERATIONS = 16, 4  # the randomised range finder's (Halko et al. 2011)


@dataclass(frozen=True)
class PartBasis:
    """One part's basis: orthonormal columns, and where they came from."""

    matrix: np.ndarray = field(repr=False)  # (width, rank) float32, orthonormal columns
    source: Literal["global", "random"]  # shipped with the global ranker, or seeded
    seed: int | None = None  # the random basis's seed (None for a shipped one)

    @property
    def width(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def rank(self) -> int:
        return int(self.matrix.shape[1])

    def describe(self) -> dict[str, object]:
        """What a version records of it: enough to re-derive or find it again."""
        out: dict[str, object] = {"source": self.source, "rank": self.rank}
        if self.seed is not None:
            out["seed"] = self.seed
        return out


def choose_bases(
    config: TasteConfig,
    layout: Mapping[str, int],
    shipped: Mapping[str, np.ndarray] | None = None,
) -> dict[str, PartBasis]:
    """The basis of every block of ``layout`` (name -> width) wider than
    ``config.reduce_above``: the one shipped with the global ranker when it has
    one of the block's width, else the seeded random one of ``config.basis_rank``
    directions. Blocks not listed stay whole, and so does a registered part of a
    fixed width (signals, the lexicon): its coordinates are named quantities that
    the learner's priors address one by one, which a rotation would mix."""
    if config.reduce_above is None:
        return {}
    out: dict[str, PartBasis] = {}
    for name, width in layout.items():
        if width <= config.reduce_above or _named_coordinates(name):
            continue
        given = (shipped or {}).get(name)
        if given is not None and given.shape[0] == width:
            out[name] = PartBasis(given, "global")
        else:
            rank = min(config.basis_rank, width)
            matrix = random_basis(width, rank, config.basis_seed, name)
            out[name] = PartBasis(matrix, "random", config.basis_seed)
    return out


def _named_coordinates(block: str) -> bool:
    """Whether ``block`` is a registered part whose width is fixed (not the model's)."""
    spec = PARTS.get(block)  # type: ignore[call-overload]
    return spec is not None and spec.width is not None


# Random bases by (width, rank, seed, part): every user of a width shares one.
_RANDOM: BoundedCache[tuple[int, int, int, str], np.ndarray] = BoundedCache(8)


def random_basis(width: int, rank: int, seed: int, part: str) -> np.ndarray:
    """A (width, rank) float32 orthonormal basis drawn from (seed, width, rank, part):
    the same bytes in every process, so a restarted learner re-derives it.

    Gaussian columns orthonormalised by QR, each column's sign fixed by R's
    diagonal (the QR with a positive diagonal is unique, whatever LAPACK does).
    """
    if not 0 < rank <= width:
        raise ConfigError(f"a basis of {rank} directions for a part of width {width}")
    key = (width, rank, seed, part)
    held = _RANDOM.get(key)
    if held is not None:
        return held
    rng = np.random.default_rng([seed, width, rank, zlib.crc32(part.encode())])
    q, r = np.linalg.qr(rng.standard_normal((width, rank)))
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)
    matrix = q.astype(np.float32)
    matrix.setflags(write=False)
    return _RANDOM.put(key, matrix)


def population_basis(
    sets: Iterable[Mapping[str, np.ndarray | None]],
    rank: int,
    parts: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[Part, np.ndarray]:
    """A population's basis per hidden-state part: the ``rank`` principal directions
    of the candidates' deviations from their set's mean, over ``sets`` (each a
    mapping of part name to a (K, width) array, e.g. ``{"last": shown.candidates,
    "mean": shown.mean_candidates}`` of many users' shown sets).

    What a publisher of the global ranker ships (``attach_basis``): the
    directions along which a population's answers to one prompt differ are
    where tastes can tell them apart. ``parts`` limits the parts (default: every
    part the sets carry); those no wider than ``rank`` are left out (their basis
    would be the identity). A randomised range finder with power
    iterations (Halko, Martinsson and Tropp 2011), seeded: the same sets give
    the same basis.
    """
    deviations: dict[Part, list[np.ndarray]] = {}
    for given in sets:
        for name, value in given.items():
            if value is None or name not in PARTS or (parts is not None and name not in parts):
                continue
            arr = np.asarray(value, np.float64)
            if arr.ndim != 2 or arr.shape[1] <= rank:
                continue
            part: Part = name
            deviations.setdefault(part, []).append((arr - arr.mean(0)).astype(np.float32))
    out: dict[Part, np.ndarray] = {}
    for part, blocks in deviations.items():
        if len({b.shape[1] for b in blocks}) != 1:
            raise FeatureError(f"the sets' {part} parts differ in width")
        out[part] = _principal_directions(np.concatenate(blocks), rank, seed)
    return out


def _principal_directions(x: np.ndarray, rank: int, seed: int) -> np.ndarray:
    """(width, rank) float32: the top right singular vectors of ``x`` (rows x width)."""
    rows, width = x.shape
    if rows < rank:
        raise FeatureError(f"{rows} deviations cannot give {rank} directions")
    sample = min(width, rank + _OVERSAMPLE)
    omega = np.random.default_rng(seed).standard_normal((width, sample)).astype(np.float32)
    y = np.linalg.qr(x @ omega)[0]
    for _ in range(_POWER_ITERATIONS):
        y = np.linalg.qr(x @ np.linalg.qr(x.T @ y)[0])[0]
    _, _, vt = np.linalg.svd((y.T @ x).astype(np.float64), full_matrices=False)
    top = vt[:rank].T
    # each direction's sign fixed: its largest entry positive
    top *= np.where(top[np.argmax(np.abs(top), axis=0), np.arange(rank)] < 0, -1.0, 1.0)
    return top.astype(np.float32)


def attach_basis(weights: bytes, basis: Mapping[Part, np.ndarray]) -> bytes:
    """A taste head archive (the global ranker's weights) with ``basis`` in it: what a
    publisher saves as the global version's weights, so that every user's learner
    fits its wide parts in that basis. Readers of the head ignore the extra arrays."""
    ckpt = Checkpoint.from_bytes(weights, "global head")
    if ckpt.kind != HEAD_KIND:
        raise CorruptModelError(f"a basis rides in a taste head archive, not a {ckpt.kind!r}")
    arrays = dict(ckpt.weights)
    for part, matrix in basis.items():
        arrays[BASIS_KEY + part] = _checked(part, np.asarray(matrix, np.float32), "given")
    config = {**ckpt.config, "basis_parts": sorted(p for p in basis)}
    return Checkpoint(ckpt.kind, config, arrays).to_bytes()


def shipped_basis(weights: bytes | None, source: str = "global head") -> dict[str, np.ndarray]:
    """The basis a global ranker's weights archive carries, by part ({} when it has
    none, or the archive is not a taste head's); a malformed one raises
    CorruptModelError."""
    if not weights:
        return {}
    ckpt = Checkpoint.from_bytes(weights, source)
    if ckpt.kind != HEAD_KIND:
        return {}
    out: dict[str, np.ndarray] = {}
    for key, matrix in ckpt.weights.items():
        if key.startswith(BASIS_KEY):
            name = key[len(BASIS_KEY) :]
            if name not in PARTS:
                raise CorruptModelError(f"{source} ships a basis for an unknown part {name!r}")
            out[name] = _checked(name, np.asarray(matrix, np.float32), source)
    return out


def _checked(part: str, matrix: np.ndarray, source: str) -> np.ndarray:
    """``matrix`` if it is a (width, rank) basis with orthonormal columns."""
    if matrix.ndim != 2 or not 0 < matrix.shape[1] <= matrix.shape[0]:
        raise CorruptModelError(f"{source}: the {part} basis has shape {matrix.shape}")
    gram = matrix.T.astype(np.float64) @ matrix
    if not np.all(np.isfinite(gram)) or not np.allclose(gram, np.eye(len(gram)), atol=1e-3):
        raise CorruptModelError(f"{source}: the {part} basis is not orthonormal")
    return matrix
