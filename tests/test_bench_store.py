"""benchmarks/store.py, quick: every store gets a row, and ours (on plain Redis and, when the
wheels are installed, on the search modules) finds InMemoryStore's top 10.

Counts and rows only: no wall-clock assertion.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import report, store


def test_the_store_benchmark_runs_quick_and_ours_matches_in_memory_top_ten(
    redis_server_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)  # not the committed results
    assert store.main(["--quick"]) == 0
    payload = json.loads((tmp_path / "store.json").read_text())
    assert payload["top10_mismatches"] == 0
    assert payload["max_score_difference"] <= 1e-5
    [size] = payload["sizes"]
    assert size["items"] == 1000 and size["queries"] == 10
    assert size["rows"]["ours"]["top10_mismatches"] == 0
    assert size["rows"]["ours_module"].get("top10_mismatches", 0) == 0  # 0 also when skipped
    text = (tmp_path / "store.md").read_text()
    for label in ("InMemoryStore", "PostgresStore", "RedisStore (ours)"):
        assert f"| {label} " in text
    # Measured or skipped with the reason, these rows are always in the table.
    for label in ("RedisStore (langgraph-checkpoint-redis)", "RedisStore (ours, search module)"):
        assert f"| {label} " in text
    assert "cold (first search of a process)" in text
