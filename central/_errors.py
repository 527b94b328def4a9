"""Errors raised inside the central service.

The service maps each to a gRPC status: `RequestError` to INVALID_ARGUMENT,
`UnsupportedError` to UNIMPLEMENTED, `ModelLoadError` stops start-up.
"""

from __future__ import annotations

__all__ = ["CentralError", "ModelLoadError", "RequestError", "UnsupportedError"]


class CentralError(Exception):
    """Base class of every error the central package raises on purpose."""


class RequestError(CentralError):
    """A request field is invalid; the message starts with the field's path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnsupportedError(CentralError):
    """The request asks for something this server does not implement."""


class ModelLoadError(CentralError):
    """A model could not be found, converted or loaded."""
