"""Every Python example in README.md runs as written, in a fresh interpreter, against a
test-started redis-server (REDIS_URL points at it; the examples read it like any app would),
and passes ``mypy --strict``: the public API's types carry a user's code, README included."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cache_helpers import unique

from redis_checkpoint.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def examples() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block."""
    text = README.read_text()
    found = [
        (text.count("\n", 0, match.start()) + 1, match.group(1))
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    ]
    assert found, "README.md has no Python example"
    return found


EXAMPLES = examples()


@pytest.mark.parametrize(("line", "code"), EXAMPLES, ids=[f"README.md:{n}" for n, _ in EXAMPLES])
def test_a_readme_example_runs_as_written(
    line: int, code: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    script = tmp_path / f"readme_{line}.py"
    script.write_text(code)
    env = {**os.environ, "REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": unique("readme")}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"README.md:{line}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def test_the_readme_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for line, code in EXAMPLES:
        files.append(f"readme_{line}.py")
        (tmp_path / files[-1]).write_text(code)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".cache"), *files],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},  # the package as its users import it
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert f"checked {len(files)} source files" in done.stdout, done.stdout + done.stderr
    # Findings inside the package belong to tests/test_quality.py (with the project's config).
    ours = [line for line in done.stdout.splitlines() if line.startswith("readme_")]
    assert not ours, "\n".join(ours)
