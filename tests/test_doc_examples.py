"""Every Python example in README.md and on every page of the docs site (docs/*.md) runs as
written, in a fresh interpreter, against a test-started redis-server (REDIS_URL points at it; the
examples read it like any app would), and passes ``mypy --strict``: the public API's types carry a
user's code, the documentation's included."""

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
# The site's own pages; docs/results is the benchmarks' output, linked in, not written by hand.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def examples() -> list[tuple[str, str]]:
    """(where: page and line, code) of every ```python block of every page."""
    found = []
    for page in PAGES:
        text = page.read_text()
        found += [
            (f"{page.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}", match[1])
            for match in re.finditer(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
        ]
    return found


EXAMPLES = examples()


def script_name(where: str) -> str:
    """docs/saver.md:12 -> docs_saver_12.py: a module name mypy accepts."""
    return re.sub(r"\W", "_", where.replace(".md:", "_")) + ".py"


def test_the_examples_of_the_readme_and_the_docs_pages_are_collected() -> None:
    pages = {where.partition(":")[0] for where, _ in EXAMPLES}
    assert {"README.md", "docs/saver.md", "docs/http-cache.md"} <= pages, pages


@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_an_example_runs_as_written(
    where: str, code: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    script = tmp_path / script_name(where)
    script.write_text(code)
    env = {**os.environ, "REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": unique("docs")}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{where}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def test_the_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for where, code in EXAMPLES:
        files.append(script_name(where))
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
    ours = [line for line in done.stdout.splitlines() if line.startswith(("README_", "docs_"))]
    assert not ours, "\n".join(ours)
