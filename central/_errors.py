"""Every exception the central service raises on purpose, in one place.

The servicer turns them into gRPC statuses; the command line turns them into
a one-line message and an exit code. The root is ``ServiceError``, not
``CentralError``: in the edge SDK ``edge.CentralError`` means "talking to the
central service failed", which is what a client sees when central raises one
of these, so no name means two things.

    ServiceError          anything central raises on purpose
    ├── ModelLoadError    a model could not be found, converted or loaded (start-up stops)
    └── RequestError      a request field is invalid -> INVALID_ARGUMENT; the message
                          starts with the field's path (``k: must be between 1 and 64``),
                          and edge raises it as ``edge.InvalidRequestError``
"""

from __future__ import annotations

__all__ = ["ModelLoadError", "RequestError", "ServiceError"]


class ServiceError(Exception):
    """Base class of every error the central package raises on purpose."""


class ModelLoadError(ServiceError):
    """A model could not be found, converted or loaded."""


class RequestError(ServiceError):
    """A request field is invalid; the message starts with the field's path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field  # dotted path of the offending field, e.g. "sampling.top_p"
        self.problem = problem  # what is wrong with it, e.g. "must be in (0, 1], got 0.0"
