"""The package stays ruff- and mypy-clean, names each thing once and keeps its modules short
(run as part of the suite, so CI enforces it)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return [str(local)]
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return [found]


def test_ruff_finds_nothing() -> None:
    paths = ["redis_checkpoint", "tests", "benchmarks", "examples", "run.py"]
    existing = [p for p in paths if (ROOT / p).exists()]
    result = subprocess.run(
        [*_tool("ruff"), "check", *existing], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    result = subprocess.run(
        [*_tool("mypy"), "redis_checkpoint"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


PACKAGE = ROOT / "redis_checkpoint"
#: Module-level names every module may have its own of: type variables and loggers.
_PER_MODULE = {"TypeVar", "ParamSpec", "TypeVarTuple", "getLogger"}


def _defined_names(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            value = node.value
            if isinstance(value, ast.Call):
                func = value.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in _PER_MODULE:
                    continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id != "__all__"]
    return names


def test_every_module_level_name_is_defined_in_one_module() -> None:
    where: defaultdict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _defined_names(ast.parse(path.read_text())):
            where[name].add(str(path.relative_to(ROOT)))
    twice = {name: sorted(paths) for name, paths in where.items() if len(paths) > 1}
    assert twice == {}


def test_no_package_module_is_over_800_lines() -> None:
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {path: n for path, n in lengths.items() if n > 800} == {}
    assert len(lengths) > 40  # the walk found the package
