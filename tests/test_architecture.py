"""The package map's rules, read from the source: every import points one way, with no circle;
``radfusion.data`` imports no model package; the configuration and the CLI stay thin."""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import radfusion

ROOT = Path(radfusion.__file__).parent
MODEL_PACKAGES = {"imaging", "ehr", "synthetic", "fusion", "evaluation", "report", "pipeline"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every radfusion module each module imports, at any depth of its code."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    found: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found[name].update(t for t in targets if t in modules and t != name)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_circle_between_modules():
    graph = _imports()
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        pytest.fail(f"import circle: {err.args[1]}")


def test_packages_import_one_way():
    edges = {
        (_package(a), _package(b))
        for a, targets in _imports().items()
        for b in targets
        if _package(a) != _package(b) and _package(a) and _package(b)
    }
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        pytest.fail(f"packages importing each other: {err.args[1]}")
    # The front end sits on top: nothing below imports the CLI or the pipeline.
    assert not {a for a, b in edges if b == "cli"}
    assert {a for a, b in edges if b == "pipeline"} <= {"cli"}


def test_data_imports_no_model_package():
    offending = {
        (a, b)
        for a, targets in _imports().items()
        if _package(a) == "data"
        for b in targets
        if _package(b) in MODEL_PACKAGES
    }
    assert not offending


def test_the_configuration_imports_only_the_bottom_layer():
    targets = {_package(b) for b in _imports()["radfusion.config"]}
    assert targets <= {"errors", "io", "devices"}  # devices: where it runs, imports nothing of ours


def test_the_cli_holds_no_policy():
    """The command line parses and prints: each of its modules is short, and no command's
    body is more than a few lines of calls into the library."""
    import importlib
    import pkgutil

    from radfusion import cli

    for info in pkgutil.iter_modules(cli.__path__):
        if info.name == "__main__":  # importing it runs the CLI
            continue
        module = importlib.import_module(f"radfusion.cli.{info.name}")
        assert len(inspect.getsource(module).splitlines()) < 300, info.name
        for name, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__:
                source = inspect.cleandoc("\n" + inspect.getsource(inspect.unwrap(fn)))
                node = ast.parse(source).body[0]
                body = node.end_lineno - node.body[0].lineno + 1  # without the signature
                assert body < 40, f"{info.name}.{name}: {body} lines"
