"""The rooms of ``edge`` import one way: each module imports only what sits below it.

Read from the source, not from a running interpreter: every ``import`` and
``from ... import`` statement of every module counts, at module level, inside a
function (a lazy import still is a dependency) and under ``TYPE_CHECKING``.
The order, lowest first (``LAYERS``)::

    edge._errors                              the exception hierarchy (imports nothing)
    edge._lazy, edge._atomic, edge._cache     package infrastructure
    edge.runtime, edge.eval                   rank and talk to central; statistics
    edge.app                                  store, registry, datasets, the learner seam
    edge.app.taste                            the torch-free taste learner
    edge.app.personal_base                    what both PersonalRanker front ends share
    edge.app.personal, edge.app.async_personal  PersonalRanker, AsyncPersonalRanker (and the
                                              old taste module paths)
    edge.training                             torch rankers, loop, export, torch learner
    edge.swift                                SWIFT, whose head derives from training's contract
    edge.checks, edge.demo                    what exercises the rooms below
    edge.cli                                  ranker-edge

A module may import its own layer and the layers below; a package's
``__init__`` may also re-export its own submodules. Private modules and names
(a leading underscore) are for their own layer: another layer importing
``edge.app._x`` or ``from edge.runtime.scoring import _y`` is refused too. A
module named by a string (the lazy exports, the kinds table's lazy entries) is
a registration, not an import, and is not read here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

EDGE = Path(__file__).resolve().parents[2] / "edge"

# Lowest first; a module belongs to the longest prefix listed.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("edge._errors",),
    ("edge._lazy", "edge._atomic", "edge._cache"),
    ("edge.runtime", "edge.eval"),
    ("edge.app",),
    ("edge.app.taste",),
    ("edge.app.personal_base",),
    (
        "edge.app.personal",
        "edge.app.async_personal",
        "edge.app.taste_fit",
        "edge.app.personal_learner",
    ),
    ("edge.training",),
    ("edge.swift",),
    ("edge.checks", "edge.demo"),
    ("edge.cli",),
)
_RANK = {prefix: rank for rank, prefixes in enumerate(LAYERS) for prefix in prefixes}
# Private modules every room may import: the package's own infrastructure.
INFRASTRUCTURE = (*LAYERS[0], *LAYERS[1])
_TOP = len(LAYERS)  # the package itself (edge/__init__.py): above every room


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    line: int
    target: str  # the module imported (for ``from m import n``: m.n when that is a module)
    names: tuple[str, ...] = ()  # for ``from m import a, b``: a, b


def layer_of(module: str) -> str:
    """The longest ``LAYERS`` prefix of ``module`` ("edge" for the package itself)."""
    best = "edge"
    for prefix in _RANK:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return best


def rank_of(module: str) -> int:
    return _RANK.get(layer_of(module), _TOP)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(EDGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (EDGE.parent / relative).with_suffix(".py").exists() or (
        EDGE.parent / relative / "__init__.py"
    ).exists()


def imports_of(module: str, source: str, is_package: bool = False) -> Iterator[Import]:
    """Every edge import in ``source``, wherever it stands."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "edge" or alias.name.startswith("edge."):
                    yield Import(module, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base != "edge" and not base.startswith("edge."):
                continue
            names = tuple(alias.name for alias in node.names)
            submodules = [f"{base}.{n}" for n in names if _is_module(f"{base}.{n}")]
            for target in submodules:
                yield Import(module, node.lineno, target)
            rest = tuple(n for n in names if f"{base}.{n}" not in submodules)
            if rest:
                yield Import(module, node.lineno, base, rest)


def problem(imp: Import) -> str | None:
    """Why ``imp`` goes the wrong way; None when it may stand."""
    importer, target = imp.module, imp.target
    if target.startswith(importer + "."):  # a package re-exporting its own submodules
        return None
    here, there = layer_of(importer), layer_of(target)
    where = f"{importer} ({here}) imports {target}"
    if here != there and rank_of(target) >= rank_of(importer):
        return f"{where}: {there} is not below {here}"
    private_module = any(p.startswith("_") for p in target.split(".")[1:])
    if here != there and private_module and there not in INFRASTRUCTURE:
        return f"{where}: a private module of {there}"
    private_names = [n for n in imp.names if n.startswith("_")]
    if here != there and private_names:
        return f"{where}: private names {private_names} of {there}"
    return None


def violations(root: Path = EDGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path)
        for imp in imports_of(module, path.read_text(), path.name == "__init__.py"):
            why = problem(imp)
            if why is not None:
                found.append(f"{path.relative_to(root.parent)}:{imp.line}: {why}")
    return found


def test_every_edge_module_imports_only_the_layers_below_it() -> None:
    modules = [module_name(p) for p in EDGE.rglob("*.py")]
    assert len(modules) > 50  # the walk sees the whole package
    unplaced = sorted({m for m in modules if layer_of(m) == "edge" and m != "edge"})
    assert not unplaced, f"modules in no layer of LAYERS: {unplaced}"
    found = violations()
    assert not found, "imports against the direction of the rooms:\n" + "\n".join(found)


def test_the_reader_sees_lazy_type_only_and_private_imports() -> None:
    """The checker itself: each wrong import below is caught, wherever it stands."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from edge._errors import RankerError\n"  # infrastructure: fine anywhere
        "from edge.runtime.types import Generation\n"  # below: fine
        "if TYPE_CHECKING:\n"
        "    from edge.training.learner import LearnerConfig\n"  # above, type-only
        "def learn():\n"
        "    import edge.swift.head\n"  # above, function-local
        "    from edge.runtime.scoring import _options\n"  # a private name of a lower room
        "    from edge.runtime import session\n"  # a submodule, below: fine
    )
    found = [problem(i) for i in imports_of("edge.app.store", source)]
    wrong = [p for p in found if p is not None]
    assert len(found) == 6 and len(wrong) == 3, wrong
    assert "edge.training.learner" in wrong[0] and "edge.swift.head" in wrong[1]
    assert "private names ['_options']" in wrong[2]
    assert problem(Import("edge.training.export", 1, "edge.app._atomic")) is not None
    assert problem(Import("edge.app.registry", 1, "edge._atomic")) is None


def test_no_module_of_the_app_room_outgrows_one_concern() -> None:
    """The feedback path stays readable: every module of ``edge.app`` (the taste room
    included) stays within ~500 lines; one that grows past it holds two concerns."""
    sizes = {
        str(path.relative_to(EDGE.parent)): len(path.read_text().splitlines())
        for path in (EDGE / "app").rglob("*.py")
    }
    assert len(sizes) > 15
    assert not {path: n for path, n in sizes.items() if n > 500}
