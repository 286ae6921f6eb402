"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a missing plot, a
page left out of the navigation or an API entry that names nothing fails it), and the README, the
landing page, links only to files that exist. The pages' examples run in test_doc_examples.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages(entries: list[object]) -> set[str]:
    pages: set[str] = set()
    for entry in entries:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages |= nav_pages(value) if isinstance(value, list) else {str(value)}
    return pages


def test_the_site_builds_with_strict_checks(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    api = (tmp_path / "api" / "index.html").read_text()
    # mkdocstrings rendered the docstrings, not just the page's headings.
    assert 'id="redis_checkpoint.RedisSaver"' in api
    assert "A LangGraph checkpoint saver on plain Redis" in api


def test_every_page_is_in_the_navigation() -> None:
    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml uses mkdocs' own tags (!relative); they name paths, not pages.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)
    written = {page.name for page in DOCS.glob("*.md")}
    assert written == nav_pages(config["nav"])


def test_the_readme_links_to_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [target for target in targets if "://" not in target]
    assert any(target.startswith("docs/") for target in local), "the README links no docs page"
    missing = [target for target in local if not (ROOT / target).exists()]
    assert not missing, missing


def test_the_demo_points_at_pages_that_exist() -> None:
    from run import READ_NEXT  # run.py lives at the root, beside tests/

    assert READ_NEXT
    assert all((ROOT / page).is_file() for _, page in READ_NEXT), READ_NEXT
