"""Every package says what it exports, completely and truthfully.

Three rules, checked over every module of ``edge`` and ``central``:

1. each module has an ``__all__`` and every name in it resolves;
2. ``__all__`` is complete: every public class and function a module defines
   (not imports) is listed, so a new public name cannot be forgotten;
3. each room of ``edge`` (``edge.runtime``, ``edge.app``, ...) exports exactly
   the union of its modules' ``__all__``, each name from the module that
   defines it, and ``edge`` itself exports only names its rooms export;
4. one name, one object: where two modules of a room (or two rooms) list the
   same name, it is the same object, never two things under one name.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import edge

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("runtime", "app", "training", "swift", "checks", "eval")


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def _source(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    return ast.parse(Path(spec.origin).read_text())


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert isinstance(node, ast.Assign | ast.AnnAssign)
            assert isinstance(node.value, ast.List)
            return [ast.literal_eval(e) for e in node.value.elts]
    return None


def _defined_public(tree: ast.Module) -> set[str]:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {n.name for n in tree.body if isinstance(n, kinds) and not n.name.startswith("_")}


ALL_MODULES = _modules("edge") + _modules("central")


@pytest.mark.parametrize("module", ALL_MODULES)
def test_module_all_is_declared_complete_and_resolves(module: str) -> None:
    tree = _source(module)
    declared = _declared_all(tree)
    assert declared is not None, f"{module} has no __all__"
    assert len(declared) == len(set(declared)), f"{module}.__all__ lists a name twice"
    missing = _defined_public(tree) - set(declared)
    assert not missing, f"{module} defines public names missing from __all__: {sorted(missing)}"
    mod = importlib.import_module(module)
    stale = [name for name in declared if not hasattr(mod, name)]
    assert not stale, f"{module}.__all__ lists names that do not exist: {stale}"


def _one_object_per_name(owners: dict[str, dict[str, object]]) -> dict[str, object]:
    """name -> its object, from name -> {exporter: object}; fails on a name that two
    exporters bind to two different objects."""
    clashes = {
        name: sorted(by)
        for name, by in owners.items()
        if len({id(value) for value in by.values()}) > 1
    }
    assert not clashes, f"one name bound to two objects: {clashes}"
    return {name: next(iter(by.values())) for name, by in owners.items()}


@pytest.mark.parametrize("room", ROOMS)
def test_room_exports_exactly_its_modules_names(room: str) -> None:
    package = importlib.import_module(f"edge.{room}")
    owners: dict[str, dict[str, object]] = {}
    for module in _modules(f"edge.{room}")[1:]:
        if module.rsplit(".", 1)[-1].startswith("_") or module.count(".") > 2:
            continue  # private modules, and the subpackages' own files (rankers/, taste/)
        mod = importlib.import_module(module)
        for name in mod.__all__:
            owners.setdefault(name, {})[module] = getattr(mod, name)
    expected = _one_object_per_name(owners)
    assert sorted(package.__all__) == sorted(expected), f"edge.{room}.__all__ is out of date"
    for name, value in expected.items():
        assert getattr(package, name) is value, f"edge.{room}.{name} is not {value!r}"


def test_a_name_bound_to_two_objects_is_caught() -> None:
    class Block:  # e.g. a dataset's stack of groups
        pass

    part = ("last", "mean", "signals")  # and a candidate's parts, under the same name
    with pytest.raises(AssertionError, match=r"one name bound to two objects: \{'Block'"):
        _one_object_per_name({"Block": {"edge.app.dataset": Block, "edge.app.taste": part}})
    same = {"Part": {"edge.runtime.parts": part, "edge.app.dataset": part}}
    assert _one_object_per_name(same) == {"Part": part}  # a re-export is one object


def test_top_level_exports_come_from_the_rooms() -> None:
    owners: dict[str, dict[str, object]] = {}
    for room in ROOMS:
        package = importlib.import_module(f"edge.{room}")
        for name in package.__all__:
            owners.setdefault(name, {})[room] = getattr(package, name)
    room_names = _one_object_per_name(owners)
    errors = importlib.import_module("edge._errors")
    for name in edge.__all__:
        value = getattr(edge, name)
        assert value is room_names.get(name, getattr(errors, name, None)), name
    with pytest.raises(AttributeError, match="no_such_name"):
        edge.no_such_name  # noqa: B018
    assert sorted(dir(edge)) == sorted(edge.__all__)
