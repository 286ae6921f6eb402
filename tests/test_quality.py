"""The package stays ruff- and mypy-clean (run as part of the suite, so CI enforces it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
