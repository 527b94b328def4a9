"""Every exception the edge package raises, in one place.

Apps embed the edge SDK and need to react differently to "the caller passed a bad
vector" (a bug to fix), "this file on disk is damaged" (restore or retrain) and
"the central service is unreachable" (retry later). One hierarchy rooted at
``RankerError`` lets them catch everything from the SDK with a single clause and
still tell those cases apart.

    RankerError
    ├── ConfigError               a config value out of range or unknown (also ValueError)
    ├── FeatureError              wrong size, wrong dtype, NaN/inf in a feature
    ├── UnknownUserError          no data or ranker stored for this user
    ├── UnknownCandidateSetError  feedback for a candidate set never recorded as shown
    ├── CorruptModelError         unreadable / truncated ONNX, checksum mismatch
    ├── StoreError                misuse of the feedback store (duplicate set, bad index)
    │   └── CorruptStoreError     unreadable / truncated SQLite feedback store
    ├── RegistryError             bad user id or ranker name, missing version, ...
    ├── DiskFullError             no space left to write a store, a version or an export
    ├── TrainingError             nothing to learn from, inconsistent training data
    ├── ExportError               ONNX export failed or disagrees with the torch ranker
    ├── MissingDependencyError    a part needs an extra that is not installed (also ImportError)
    └── CentralError              talking to the central feature service failed
        ├── ConnectionLostError   the channel broke or the service is unavailable
        ├── DeadlineExceededError the call ran past its deadline
        ├── ServerError           the service failed while handling a valid request
        └── InvalidRequestError   the service rejected the request as malformed

Messages name the offending value and what was expected, e.g.
``feature has 512 values, ranker expects 576``.

One warning, ``CorruptVersionWarning``, says that a damaged file was stepped
over rather than raised (a ranker version, or a registry manifest read from its
backup): the app keeps working, and the damage is still reported.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = [
    "CentralError",
    "ConfigError",
    "ConnectionLostError",
    "CorruptModelError",
    "CorruptStoreError",
    "CorruptVersionWarning",
    "DeadlineExceededError",
    "DiskFullError",
    "ExportError",
    "FeatureError",
    "InvalidRequestError",
    "MissingDependencyError",
    "RankerError",
    "RegistryError",
    "ServerError",
    "StoreError",
    "TrainingError",
    "UnknownCandidateSetError",
    "UnknownUserError",
    "require_extra",
]


class RankerError(Exception):
    """Base class of every error raised by the edge SDK."""


class ConfigError(RankerError, ValueError):
    """A config value is invalid: out of range, an unknown name, fields that contradict.

    Raised by every edge config when it is built (``TasteConfig``,
    ``LearnerConfig``, ``TrainConfig``, the ranker configs, ``DemoConfig``,
    ...), naming the field and the value; configs are frozen, so a value
    checked once stays valid."""


class FeatureError(RankerError, ValueError):
    """A feature vector or matrix has the wrong shape, dtype, or non-finite values."""


class UnknownUserError(RankerError, LookupError):
    """The user has no stored ranker or feedback."""

    def __init__(self, user: str, where: str = "") -> None:
        self.user = user
        suffix = f" in {where}" if where else ""
        super().__init__(f"unknown user {user!r}{suffix}")


class UnknownCandidateSetError(RankerError, LookupError):
    """Feedback refers to a candidate set that was never recorded as shown."""

    def __init__(self, user: str, set_id: str) -> None:
        self.user = user
        self.set_id = set_id
        super().__init__(
            f"candidate set {set_id!r} was never recorded as shown to user {user!r}; "
            "call record_shown() before recording feedback on it"
        )


class CorruptModelError(RankerError):
    """An ONNX ranker cannot be loaded: damaged bytes, truncation, or checksum mismatch."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{message}")


class StoreError(RankerError):
    """The feedback store refused an event: duplicate set id, candidate index out of range."""


class CorruptStoreError(StoreError):
    """The SQLite feedback store is damaged or is not a database at all."""

    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = Path(path)
        super().__init__(f"feedback store {self.path} is corrupt or truncated: {detail}")


class RegistryError(RankerError):
    """A registry operation is invalid: bad id, unknown ranker name or version."""


class DiskFullError(RankerError):
    """No space left on the device (or over a quota) while writing a file.

    Nothing was half-written: the feedback store rolled the event back, and a
    registry version or an exported file was never made current; free space and
    retry."""

    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = Path(path)
        super().__init__(f"no space left to write {self.path} ({detail}); free space and retry")


class CorruptVersionWarning(UserWarning):
    """A damaged file was stepped over, not raised: a corrupt ranker version the
    registry fell back from, or a damaged manifest read from its backup."""


class TrainingError(RankerError):
    """Training cannot run on the data given (empty, mixed feature sizes, ...)."""


class ExportError(RankerError):
    """Exporting a ranker to ONNX failed, or the ONNX graph disagrees with torch."""


class MissingDependencyError(RankerError, ImportError):
    """A part of the SDK needs an optional extra (``train``: torch, onnx) that is not installed."""

    def __init__(self, what: str, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{what} needs {module}, which is not installed: "
            f"pip install 'language-ranker[{extra}]'",
            name=module,
        )


def require_extra(module: str, *, extra: str, what: str) -> None:
    """Import ``module`` or raise MissingDependencyError naming the extra that provides it."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(what, module, extra) from error


class CentralError(RankerError):
    """Base class of failures talking to the central feature service."""


class ConnectionLostError(CentralError):
    """The connection to central broke, or central is unavailable."""


class DeadlineExceededError(CentralError):
    """A call to central did not finish before its deadline."""


class ServerError(CentralError):
    """Central failed internally while serving a request."""


class InvalidRequestError(CentralError):
    """Central rejected the request as malformed (bad prompt, K, limits...)."""
