"""Lazy package exports (PEP 562), so importing a package imports nothing heavy.

Each room of ``edge`` lists its public names and the module that defines each.
A name's module is imported on first attribute access: ``import edge`` or
``import edge.app.store`` never loads onnxruntime, grpc or torch until the
code that needs them is used.

A name that moved (to another room, or under another name) can stay reachable
at its old address for the users who hold it: ``moved`` maps it to its new
public address, which it resolves with a DeprecationWarning naming that
address. Moved names are not listed in ``__all__`` nor ``dir()``, and nothing
in the package itself uses them.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], moved: Mapping[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``; ``exports`` maps name -> module,
    ``moved`` an old name -> its new address (``"edge.swift.SwiftRanker"``)."""
    namespace = importlib.import_module(package).__dict__
    old_names = dict(moved or {})

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
            namespace[name] = value
            return value
        address = old_names.get(name)
        if address is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        home, _, new_name = address.rpartition(".")
        warnings.warn(
            f"{package}.{name} is {address} now; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), new_name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
