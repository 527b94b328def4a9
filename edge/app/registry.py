"""Versioned per-user rankers on disk, with checksums and rollback (torch-free).

Layout under ``root``::

    users/<user>/<name>/manifest.json       versions, checksums, the current one
    users/<user>/<name>/manifest.backup.json  the same, written after it
    users/<user>/<name>/v000001.onnx        what the runtime loads
    users/<user>/<name>/v000001.weights.npz what the next incremental update starts from
    global/<name>/...                        the same for shared (global/task) rankers

Every file is written with ``atomic_write`` and the manifest is updated last, so
a crash at any point leaves the previous version current and intact; a version
file that never made it into the manifest is simply ignored (and its number is
skipped). Loading verifies the sha256 recorded in the manifest, so a damaged
file raises CorruptModelError naming it instead of ranking with garbage. The
manifest is written twice, the backup after the manifest: a damaged manifest is
read from its backup (with a ``CorruptVersionWarning``) and rewritten whole by the
next save. Pass ``user=None`` to address the global rankers.

Rollback and feedback: rolling back from version C to T forgets the feedback
C's line learned that T's did not, so the next update never learns it again
(``edge.app.lineage`` says how; ``forgotten(user, name)`` gives the ranges).

Over time and under concurrency:

- every write to a ranker's directory happens under one lock file (``.lock``),
  between processes too; ``save(expect_current=n)`` is a compare-and-swap that
  refuses to save when another writer made a different version current, and
  ``locked(user, name)`` is the lock a learner holds across read-fit-save, so
  two learners of one user never lose each other's update;
- ``keep`` bounds the versions kept (default 10): older ones are pruned at each
  save, never the current version nor the one ``rollback`` would return to;
- temp files of an interrupted write and version files no manifest lists (a
  crash between writing and committing, or between committing and pruning) are
  removed when the directory is next opened or saved to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge._atomic import atomic_write, file_lock
from edge._errors import CorruptModelError, CorruptVersionWarning, RegistryError, UnknownUserError
from edge.app.ids import validate_id
from edge.app.lineage import FORGOTTEN_KEY, EventRanges, forgotten_on_leaving, merged, ranges_of
from edge.runtime.scoring import Ranker, RankingSession

__all__ = ["Registry", "VersionInfo"]

_MANIFEST = "manifest.json"
_BACKUP = "manifest.backup.json"  # the same manifest, written after it
_FORMAT = 1
_LOCK = ".lock"  # held for every write to a ranker directory
_LEARN_LOCK = ".learn.lock"  # held by a learner across read-fit-save (see Registry.locked)
_VERSION_FILE = re.compile(r"^v(\d{6})\.(?:onnx|weights\.npz)$")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class VersionInfo:
    """One saved version of a ranker, as recorded in its manifest."""

    user: str | None  # owner, None for a global ranker
    name: str  # ranker name, e.g. "chat" or "math"
    version: int  # 1, 2, ... in save order
    model_file: str  # ONNX file name inside the ranker directory
    model_sha256: str  # checksum verified on every load
    weights_file: str | None = None  # trainable weights (.npz), None if not saved
    weights_sha256: str | None = None  # checksum of the weights file
    created: float = 0.0  # unix time of the save
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. store cursor, metrics


class Registry:
    """Per-user, per-name versioned rankers under one root directory."""

    def __init__(self, root: str | Path, *, keep: int = 10) -> None:
        if keep < 1:
            raise RegistryError(f"keep must be at least 1 version, got {keep}")
        self.root = Path(root)
        self.keep = keep  # versions kept per ranker (plus current and its rollback target)

    # -- paths ---------------------------------------------------------------------
    def _dir(self, user: str | None, name: str) -> Path:
        validate_id(name, "ranker name")
        if user is None:
            return self.root / "global" / name
        return self.root / "users" / validate_id(user, "user id") / name

    def _user_dir(self, user: str) -> Path:
        return self.root / "users" / validate_id(user, "user id")

    def model_path(self, user: str | None, name: str, version: int | None = None) -> Path:
        info = self.version(user, name, version)
        return self._dir(user, name) / info.model_file

    # -- manifest ------------------------------------------------------------------
    def _read_manifest(self, user: str | None, name: str) -> dict[str, Any]:
        """The manifest, or its backup (with a warning) when the manifest is damaged."""
        directory = self._dir(user, name)
        if not self.has(user, name):
            if user is not None and not self._user_dir(user).exists():
                raise UnknownUserError(user, f"registry {self.root}")
            who = "global" if user is None else f"user {user!r}"
            raise RegistryError(f"no ranker named {name!r} for {who} in {self.root}")
        try:
            return self._parse_manifest(directory / _MANIFEST)
        except CorruptModelError as damage:
            try:
                manifest = self._parse_manifest(directory / _BACKUP)
            except CorruptModelError:
                raise damage from None
            warnings.warn(
                f"{damage}; read its backup {_BACKUP} instead (version "
                f"{manifest['current']} current); the next save rewrites both",
                CorruptVersionWarning,
                stacklevel=3,
            )
            return manifest

    @staticmethod
    def _parse_manifest(path: Path) -> dict[str, Any]:
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise CorruptModelError("manifest is missing", path) from exc
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise CorruptModelError(f"unreadable manifest ({exc})", path) from exc
        if not (
            isinstance(manifest, dict)
            and isinstance(manifest.get("versions"), list)
            and isinstance(manifest.get("current"), int)
        ):
            raise CorruptModelError("manifest lacks 'versions' or 'current'", path)
        return manifest

    def _infos(self, user: str | None, name: str, manifest: Mapping[str, Any]) -> list[VersionInfo]:
        try:
            return [VersionInfo(user=user, name=name, **v) for v in manifest["versions"]]
        except TypeError as exc:
            path = self._dir(user, name) / _MANIFEST
            raise CorruptModelError(
                f"manifest has a malformed version entry ({exc})", path
            ) from exc

    def _write_manifest(
        self,
        user: str | None,
        name: str,
        versions: list[VersionInfo],
        current: int,
        last_number: int = 0,
        forgotten: Mapping[int, EventRanges] | None = None,
    ) -> None:
        """Write the manifest, then its backup (same bytes): a crash between the two
        leaves a good manifest, and damage to one leaves the other."""
        kept = {v.version for v in versions}
        body = {
            "format": _FORMAT,
            "user": user,
            "name": name,
            "current": current,
            "last_number": max([last_number, *(v.version for v in versions)]),
            "versions": [
                {k: v for k, v in asdict(info).items() if k not in ("user", "name")}
                for info in versions
            ],
            # events a rollback made each version's line forget (see the module doc)
            "forgotten": {
                str(n): [list(r) for r in ranges]
                for n, ranges in sorted((forgotten or {}).items())
                if n in kept and ranges
            },
        }
        data = json.dumps(body, indent=1, sort_keys=True).encode()
        directory = self._dir(user, name)
        atomic_write(directory / _MANIFEST, data)
        atomic_write(directory / _BACKUP, data)

    @staticmethod
    def _forgotten_map(manifest: Mapping[str, Any]) -> dict[int, EventRanges]:
        value = manifest.get("forgotten")
        if not isinstance(value, dict):
            return {}
        return {int(k): ranges_of(v) for k, v in value.items() if str(k).isdigit()}

    # -- queries -------------------------------------------------------------------
    def users(self) -> list[str]:
        base = self.root / "users"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.exists() else []

    def rankers(self, user: str | None) -> list[str]:
        """Names of the rankers saved for ``user`` (None: the global ones)."""
        base = self.root / "global" if user is None else self._user_dir(user)
        if not base.exists():
            if user is None:
                return []
            raise UnknownUserError(user, f"registry {self.root}")
        return sorted(p.name for p in base.iterdir() if self.has(user, p.name))

    def has(self, user: str | None, name: str) -> bool:
        directory = self._dir(user, name)
        return (directory / _MANIFEST).exists() or (directory / _BACKUP).exists()

    def versions(self, user: str | None, name: str) -> list[VersionInfo]:
        return self._infos(user, name, self._read_manifest(user, name))

    def version(self, user: str | None, name: str, version: int | None = None) -> VersionInfo:
        """The given version's record, or the current one when ``version`` is None."""
        manifest = self._read_manifest(user, name)
        wanted = manifest["current"] if version is None else version
        for info in self._infos(user, name, manifest):
            if info.version == wanted:
                return info
        raise RegistryError(f"ranker {name!r} of {user!r} has no version {wanted}")

    def current(self, user: str | None, name: str) -> VersionInfo:
        return self.version(user, name)

    def forgotten(self, user: str | None, name: str) -> EventRanges:
        """Feedback events the current version's line does not learn: the ranges
        rollbacks forgot (``edge.app.lineage``); none before the first version."""
        if not self.has(user, name):
            return ()
        manifest = self._read_manifest(user, name)
        current = self.version(user, name)
        return self._line_forgotten(current, self._forgotten_map(manifest))

    @staticmethod
    def _line_forgotten(info: VersionInfo, forgotten: Mapping[int, EventRanges]) -> EventRanges:
        """A version's line's ranges: those it was saved with, plus its rollbacks'."""
        saved = ranges_of(info.metadata.get(FORGOTTEN_KEY))
        return merged([*saved, *forgotten.get(info.version, ())])

    def verify(
        self, user: str | None, name: str, version: int | None = None
    ) -> CorruptModelError | None:
        """Why a version (default: current) cannot be loaded, or None when its model
        file is there and matches its checksum."""
        try:
            self.load_model(user, name, version)
        except CorruptModelError as damage:
            return damage
        return None

    # -- save / rollback -----------------------------------------------------------
    def save(
        self,
        user: str | None,
        name: str,
        model: bytes,
        *,
        weights: bytes | None = None,
        metadata: Mapping[str, Any] | None = None,
        expect_current: int | None = None,
    ) -> VersionInfo:
        """Store a new version (ONNX bytes, optional weights) and make it current.

        With ``expect_current`` (0: no version yet) the save is a compare-and-swap:
        it raises RegistryError, writing nothing, when the current version is
        another one, e.g. because a second learner saved in the meantime.
        """
        if not model:
            raise RegistryError("refusing to save an empty model")
        directory = self._dir(user, name)
        with file_lock(directory / _LOCK):
            manifest = self._read_manifest(user, name) if self.has(user, name) else {}
            versions = self._infos(user, name, manifest) if manifest else []
            current = int(manifest.get("current", 0))
            if expect_current is not None and current != expect_current:
                raise RegistryError(
                    f"ranker {name!r} of {user!r}: version {current} is current, expected "
                    f"{expect_current}; another writer saved first"
                )
            number = self._next_number(directory, versions, manifest.get("last_number", 0))
            self._clean_locked(directory, versions)
            stem = f"v{number:06d}"
            info = VersionInfo(
                user=user,
                name=name,
                version=number,
                model_file=f"{stem}.onnx",
                model_sha256=_sha256(model),
                weights_file=f"{stem}.weights.npz" if weights is not None else None,
                weights_sha256=_sha256(weights) if weights is not None else None,
                created=time.time(),
                metadata=dict(metadata or {}),
            )
            atomic_write(directory / info.model_file, model)
            if weights is not None and info.weights_file is not None:
                atomic_write(directory / info.weights_file, weights)
            kept = self._pruned([*versions, info], number)
            forgotten = self._forgotten_map(manifest) if manifest else {}
            self._write_manifest(user, name, kept, number, number, forgotten)
            self._clean_locked(directory, kept)  # the pruned versions' files
        return info

    def save_global(
        self, name: str, model: bytes, *, weights: bytes | None = None, **kw: Any
    ) -> VersionInfo:
        """Save a shared ranker that new users' rankers start from."""
        return self.save(None, name, model, weights=weights, **kw)

    @staticmethod
    def _next_number(directory: Path, versions: list[VersionInfo], last_number: object) -> int:
        """One past the highest number ever used: manifest, high-water mark, or on disk."""
        on_disk = [
            int(m.group(1)) for p in directory.glob("v*") if (m := _VERSION_FILE.match(p.name))
        ]
        last = last_number if isinstance(last_number, int) else 0
        return max([0, last, *(v.version for v in versions), *on_disk]) + 1

    def _pruned(self, versions: list[VersionInfo], current: int) -> list[VersionInfo]:
        """The newest ``keep`` versions, plus the current one and its rollback target."""
        numbers = sorted(v.version for v in versions)
        older = [n for n in numbers if n < current]
        keep = set(numbers[-self.keep :]) | {current, *older[-1:]}
        return [v for v in versions if v.version in keep]

    # -- maintenance ---------------------------------------------------------------
    def clean(self, user: str | None, name: str) -> list[Path]:
        """Remove interrupted writes' temp files and unlisted version files; return them."""
        directory = self._dir(user, name)
        if not self.has(user, name):
            return []
        try:
            with file_lock(directory / _LOCK):
                return self._clean_locked(directory, self.versions(user, name))
        except OSError:  # best effort: e.g. a read-only registry shipped with the app
            return []

    @staticmethod
    def _clean_locked(directory: Path, versions: list[VersionInfo]) -> list[Path]:
        """Delete what no manifest entry names (the caller holds the directory lock)."""
        listed = {f for v in versions for f in (v.model_file, v.weights_file) if f}
        removed = []
        for path in directory.iterdir() if directory.exists() else ():
            orphan = _VERSION_FILE.match(path.name) and path.name not in listed
            if orphan or (path.name.startswith(".") and path.name.endswith(".tmp")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
        return removed

    @contextlib.contextmanager
    def locked(self, user: str | None, name: str) -> Iterator[None]:
        """Exclusive between processes and threads: what a learner holds to read,
        fit and save without another learner of the same ranker in between."""
        with file_lock(self._dir(user, name) / _LEARN_LOCK):
            yield

    def rollback(self, user: str | None, name: str, to: int | None = None) -> VersionInfo:
        """Make an earlier version current (default: the one before the current one).

        The feedback the versions left behind learned after the target's cursor is
        forgotten by the target's line (``edge.app.lineage``): the next update does
        not learn it again. A target whose model file is damaged is refused
        (CorruptModelError naming it) and nothing changes; ``to`` picks another.
        """
        directory = self._dir(user, name)
        with file_lock(directory / _LOCK):
            manifest = self._read_manifest(user, name)
            versions = self._infos(user, name, manifest)
            by_number = {v.version: v for v in versions}
            current = manifest["current"]
            older = [v.version for v in versions if v.version < current]
            target = to if to is not None else (max(older) if older else None)
            if target is None:
                raise RegistryError(f"ranker {name!r} of {user!r} has no version before {current}")
            if target not in by_number:
                raise RegistryError(f"ranker {name!r} of {user!r} has no version {target}")
            info = by_number[target]
            self._verified(directory, info.model_file, info.model_sha256)
            forgotten = self._forgotten_map(manifest)
            if current in by_number and target != current:
                left = by_number[current]
                forgotten[target] = forgotten_on_leaving(
                    info.metadata,
                    self._line_forgotten(info, forgotten),
                    left.metadata,
                    self._line_forgotten(left, forgotten),
                )
            last = manifest.get("last_number", 0)
            self._write_manifest(
                user, name, versions, target, last if isinstance(last, int) else 0, forgotten
            )
        return self.version(user, name, target)

    # -- loading -------------------------------------------------------------------
    def _verified(self, directory: Path, file: str, sha: str | None) -> bytes:
        path = directory / file
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise CorruptModelError("file listed in the manifest is missing", path) from exc
        if sha is not None and _sha256(data) != sha:
            raise CorruptModelError(
                f"checksum mismatch: sha256 {_sha256(data)[:12]}..., manifest says {sha[:12]}...",
                path,
            )
        return data

    def load_model(self, user: str | None, name: str, version: int | None = None) -> bytes:
        """ONNX bytes of a version (default: current), checksum-verified."""
        info = self.version(user, name, version)
        return self._verified(self._dir(user, name), info.model_file, info.model_sha256)

    def load_weights(self, user: str | None, name: str, version: int | None = None) -> bytes | None:
        """Weights archive of a version (None if it was saved without), verified."""
        info = self.version(user, name, version)
        if info.weights_file is None:
            return None
        return self._verified(self._dir(user, name), info.weights_file, info.weights_sha256)

    def last_good_weights(self, user: str | None, name: str) -> tuple[VersionInfo, bytes] | None:
        """The newest weights, from the current version back, whose checksum verifies.

        What a learner continues from: a damaged or missing weights file of the
        current version falls back to the version before it, as ``open(fallback=True)``
        does for ranking. None when no version at or before the current one has
        intact weights.
        """
        current = self.current(user, name).version
        older = [v for v in self.versions(user, name) if v.version <= current and v.weights_file]
        for info in sorted(older, key=lambda v: v.version, reverse=True):
            try:
                weights = self.load_weights(user, name, info.version)
            except CorruptModelError:
                continue
            if weights is not None:
                return info, weights
        return None

    def open(
        self, user: str | None, name: str, version: int | None = None, *, fallback: bool = False
    ) -> Ranker:
        """A runtime Ranker for a version (default: current).

        With ``fallback=True`` a corrupt current version is skipped for the newest
        older one that verifies and loads, so an app keeps ranking after a bad write;
        the damage is reported with a ``CorruptVersionWarning`` naming both
        versions (the returned ranker's ``version`` is the one that ranks).
        Leftovers of interrupted writes in the ranker's directory are removed first.
        """
        self.clean(user, name)
        info = self.version(user, name, version)
        candidates = [info]
        if fallback:
            older = [v for v in self.versions(user, name) if v.version < info.version]
            candidates += sorted(older, key=lambda v: v.version, reverse=True)
        error: CorruptModelError | None = None
        for cand in candidates:
            try:
                data = self.load_model(user, name, cand.version)
                path = str(self._dir(user, name) / cand.model_file)
                ranker = Ranker(RankingSession(data, path), version=cand.version)
            except CorruptModelError as exc:
                error = error or exc
                continue
            if error is not None:
                who = "global" if user is None else repr(user)
                warnings.warn(
                    f"ranker {name!r} of {who}: version {info.version} is corrupt ({error}); "
                    f"ranking with version {cand.version}",
                    CorruptVersionWarning,
                    stacklevel=2,
                )
            return ranker
        assert error is not None
        raise error
