"""The redis-checkpoint console script against a real redis-server: output, --json, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from langchain_core.messages import HumanMessage
from prometheus_client import CollectorRegistry

from redis_checkpoint import CacheEngine, RedisSaver
from redis_checkpoint.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.testing import RedisServer
from tests.cache_helpers import unique
from tests.test_fallback import build, cfg


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*argv: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def populated(redis_server: RedisServer) -> tuple[str, str]:
    """A prefix holding two conversations and some cache entries."""
    prefix = unique("cli")
    metrics = Metrics(CollectorRegistry())
    with RedisSaver.from_conn_string(redis_server.url, key_prefix=prefix, metrics=metrics) as saver:
        graph = build().compile(checkpointer=saver)
        for thread_id in ("alpha", "beta"):
            for text in ("one", "two"):
                graph.invoke({"messages": [HumanMessage(text)]}, cfg(thread_id))
    with CacheEngine(redis_server.url, prefix=f"{prefix}:cache", metrics=metrics) as engine:
        engine.set("llm", "p1", "answer")
        engine.set("query", "q1", [1], tags=["users"])
        engine.set("query", "q2", [2], tags=["users"])
    return redis_server.url, prefix


def test_health(redis_url: str, dead_url: str) -> None:
    ok = cli("--url", redis_url, "health")
    assert ok.code == EXIT_OK
    assert "status" in ok.out and "ok" in ok.out and "maxmemory_policy" in ok.out
    as_json = cli("--url", redis_url, "--json", "health").json()
    assert as_json["status"] == "ok" and as_json["redis"]["used_memory"] > 0
    down = cli("--url", dead_url, "--json", "health")
    assert down.code == EXIT_FAILED and down.json()["status"] == "down"


def test_stats_counts_keys_per_cache_type(populated: tuple[str, str]) -> None:
    url, prefix = populated
    run = cli("--url", url, "--prefix", prefix, "--json", "stats")
    assert run.code == EXIT_OK, run.err
    data = run.json()
    by_type = data["keyspace"]["by_type"]
    assert by_type["checkpoint"]["keys"] == 5  # two threads x (idx, data) + the registry
    assert by_type["llm"]["keys"] == 1
    assert by_type["query"]["keys"] == 3  # two entries + the tag set
    assert data["threads"] == 2 and data["keyspace"]["complete"]
    text = cli("--url", url, "--prefix", prefix, "stats").out
    assert "cache type" in text and "checkpoint" in text and "threads: 2" in text


def test_threads_list_show_delete(populated: tuple[str, str]) -> None:
    url, prefix = populated
    base = ("--url", url, "--prefix", prefix)
    assert cli(*base, "--json", "threads", "list").json() == {
        "total": 2,
        "threads": ["alpha", "beta"],
    }
    listing = cli(*base, "threads", "list", "--limit", "1")
    assert "alpha" in listing.out and "beta" not in listing.out and "1 of 2" in listing.out

    shown = cli(*base, "--json", "threads", "show", "alpha").json()
    steps = [c["step"] for c in shown["checkpoints"]]
    assert steps == sorted(steps, reverse=True) and len(steps) == 6
    table = cli(*base, "threads", "show", "alpha", "--limit", "2").out.splitlines()
    assert table[0].split()[:3] == ["checkpoint", "ns", "step"] and len(table) == 4

    missing = cli(*base, "threads", "show", "nobody")
    assert missing.code == EXIT_NOT_FOUND and "'nobody' not found" in missing.err
    assert cli(*base, "threads", "delete", "alpha").code == EXIT_OK
    assert cli(*base, "threads", "delete", "alpha").code == EXIT_NOT_FOUND
    assert cli(*base, "--json", "threads", "list").json()["threads"] == ["beta"]


def test_prune_shows_progress_on_stderr_only(populated: tuple[str, str]) -> None:
    url, prefix = populated
    run = cli("--url", url, "--prefix", prefix, "--json", "--progress", "prune", "--all")
    assert run.code == EXIT_OK
    assert run.json() == {"pruned": 2, "strategy": "keep_latest", "damaged": {}}
    assert "pruned 2/2 threads" in run.err
    shown = cli("--url", url, "--prefix", prefix, "--json", "threads", "show", "beta").json()
    assert len(shown["checkpoints"]) == 1


def test_invalidate(populated: tuple[str, str]) -> None:
    url, prefix = populated
    base = ("--url", url, "--prefix", prefix, "--json", "invalidate")
    assert cli(*base, "--namespace", "query", "--tag", "users").json()["removed"] == 2
    assert cli(*base, "--namespace", "llm").json()["scope"] == "namespace"
    assert cli(*base, "--namespace", "llm", "--key", "p1").json()["removed"] == 1
    # A namespace that holds nothing is said to, with the ones that do hold keys.
    unknown = cli(*base, "--namespace", "querry", "--tag", "users")
    assert unknown.code == EXIT_NOT_FOUND and not unknown.out
    assert "no cache namespace 'querry'" in unknown.err and "'llm'" in unknown.err
    both = cli(*base, "--namespace", "llm", "--key", "a", "--tag", "b")
    assert both.code == EXIT_USAGE and "not both" in both.err


def test_unreachable_redis_and_bad_usage(dead_url: str) -> None:
    for argv in (
        ("threads", "list"),
        ("stats",),
        ("invalidate", "--namespace", "x"),
        ("prune", "--all"),
    ):
        run = cli("--url", dead_url, *argv)
        assert run.code == EXIT_FAILED, argv
        assert "redis-checkpoint:" in run.err and dead_url.split("/")[2] in run.err
    assert cli("threads").code == EXIT_USAGE
    assert cli("stats", "--sample", "-1").code == EXIT_USAGE
    assert cli("--url", "http://nope", "health").code == EXIT_USAGE


def test_the_console_script_is_installed(redis_url: str) -> None:
    script = Path(sys.executable).parent / "redis-checkpoint"
    env = {**os.environ, "REDIS_URL": redis_url}
    done = subprocess.run(
        [str(script), "--json", "health"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "ok"


def test_prune_needs_a_scope_and_has_a_dry_run(populated: tuple[str, str]) -> None:
    url, prefix = populated
    base = ("--url", url, "--prefix", prefix)
    for argv in (("prune",), ("prune", "--all", "--thread", "alpha")):
        refused = cli(*base, *argv)
        assert refused.code == EXIT_USAGE and "--thread ID" in refused.err and not refused.out
    dry = cli(*base, "--json", "prune", "--all", "--dry-run")
    assert dry.code == EXIT_OK and dry.json()["would_prune"] == ["alpha", "beta"]
    assert "nothing was changed" in cli(*base, "prune", "--thread", "beta", "--dry-run").out
    shown = cli(*base, "--json", "threads", "show", "beta").json()
    assert len(shown["checkpoints"]) == 6  # untouched


def _damage(url: str, prefix: str, thread_id: str) -> None:
    """Put a string where the thread's index (a sorted set) is: something else wrote it."""
    with RedisSaver.from_conn_string(url, key_prefix=prefix) as saver:
        index = saver.core.keys(thread_id).idx
    with redis.Redis.from_url(url) as client:
        client.delete(index)
        client.set(index, "not a sorted set")


def test_prune_goes_on_past_a_damaged_thread_and_names_it(populated: tuple[str, str]) -> None:
    url, prefix = populated
    _damage(url, prefix, "alpha")
    base = ("--url", url, "--prefix", prefix)
    run = cli(*base, "prune", "--all")
    assert run.code == EXIT_FAILED
    assert "pruned 1 threads" in run.out and "not pruned, damaged: alpha" in run.out
    assert "WRONGTYPE" in run.out and "script" not in run.out
    assert len(cli(*base, "--json", "threads", "show", "beta").json()["checkpoints"]) == 1


def test_a_damaged_thread_can_be_deleted(populated: tuple[str, str]) -> None:
    url, prefix = populated
    _damage(url, prefix, "alpha")
    base = ("--url", url, "--prefix", prefix)
    assert cli(*base, "threads", "delete", "alpha").code == EXIT_OK
    assert cli(*base, "--json", "threads", "list").json()["threads"] == ["beta"]


def test_thread_ids_print_on_one_line(redis_server: RedisServer) -> None:
    prefix = unique("cli-odd")
    with RedisSaver.from_conn_string(redis_server.url, key_prefix=prefix) as saver:
        graph = build().compile(checkpointer=saver)
        graph.invoke({"messages": [HumanMessage("hi")]}, cfg("two\nlines\x00and a nul"))
    run = cli("--url", redis_server.url, "--prefix", prefix, "threads", "list")
    assert "two\\nlines\\x00and a nul" in run.out
    assert run.out.count("\n") == 4  # header, rule, the id, the count: no line of its own


def test_the_query_cache_is_invalidated_under_the_name_the_docs_use(
    redis_server: RedisServer,
) -> None:
    """Its metrics say cache_type "query": so does its namespace, which the CLI takes."""
    from redis_checkpoint import QueryCache

    prefix = unique("cli-query")
    cache = QueryCache(
        redis_server.url, prefix=f"{prefix}:cache", metrics=Metrics(CollectorRegistry())
    )
    loads: list[int] = []
    for _ in range(2):
        cache.get_or_load("SELECT 1", [], lambda: loads.append(1) or [[1]], tags=["t"])
    assert loads == [1]
    run = cli(
        "--url",
        redis_server.url,
        "--prefix",
        prefix,
        "--json",
        "invalidate",
        "--namespace",
        "query",
        "--tag",
        "t",
    )
    assert run.json()["removed"] == 1
    cache.get_or_load("SELECT 1", [], lambda: loads.append(1) or [[1]], tags=["t"])
    assert loads == [1, 1]
    cache.close()
