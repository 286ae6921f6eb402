"""LangGraph stores side by side: InMemoryStore, PostgresStore and RedisStore, in one run.

Run from the project root::

    python -m benchmarks.store [--items 1000,10000] [--queries 100] [--quick]

For each item count N, every store gets the same N items in one namespace (values with a
``text`` of about 90 characters, a ``group`` 0-9 and a number), embedded on ``text`` with 384
dims by a deterministic fake embedding (seeded random vectors per text, precomputed, so the
model costs nothing and put measures the store). Measured: put in batches of 500 and single
puts (items/s), get, search with ``filter={"group": 3}`` (10 % of items, limit 10) and vector
search top-10 (warm: after one search), each over ``--queries`` calls; for ours also the cold
first search of a process (a new ``RedisStore`` on the same data) and the Redis bytes per item.
Ours must return the same top-10 keys as InMemoryStore for every vector query and the same
scores within 1e-5: the mismatches are printed, and any makes the exit status 1.

PostgresStore (the local PostgreSQL, a schema of its own dropped at the end) runs without an
index: Debian has no pgvector. Redis is a private ``redis-server`` started by the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from typing import Any

import numpy as np
import redis
from langgraph.store.base import BaseStore, IndexConfig, PutOp, SearchItem
from langgraph.store.memory import InMemoryStore

from benchmarks.report import (
    TIMES,
    command_line,
    machine_info,
    percentile,
    progress,
    table,
    utc_stamp,
    write_results,
)
from benchmarks.workload import DEFAULT_POSTGRES_URL, postgres_schema
from redis_checkpoint import RedisStore
from redis_checkpoint.store.layout import StoreLayout
from redis_checkpoint.testing import RedisServer

DIMS, BATCH, GROUPS, TOP_K, COLD_RUNS = 384, 500, 10, 10, 5
NAMESPACE = ("bench", "memories")
SINGLES = ("bench", "single-puts")
PREFIX = "bench"
FILTER = {"group": 3}
PACKAGES = ["langgraph", "langgraph-checkpoint", "langgraph-checkpoint-postgres", "redis", "numpy"]
NO_PGVECTOR = "n/a (no pgvector)"


@cache
def fake_vector(text: str) -> tuple[float, ...]:
    """Random but fixed per text: seeded from a stable hash (``hash()`` is salted per process),
    rounded to float32 so every store scores the same numbers."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    return tuple(np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32).tolist())


def embed(texts: Sequence[str]) -> list[list[float]]:
    return [list(fake_vector(text)) for text in texts]


INDEX: IndexConfig = {"dims": DIMS, "embed": embed, "fields": ["text"]}


def make_items(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            f"m{i:06d}",
            {
                "text": f"memory {i}: the user prefers option {i % 7} for topic {i % 13}, "
                f"mentioned on day {i % 365}",
                "group": i % GROUPS,
                "n": i,
            },
        )
        for i in range(n)
    ]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def measure(
    label: str,
    store: BaseStore,
    items: list[tuple[str, dict[str, Any]]],
    queries: list[str],
    vectors: bool,
) -> tuple[dict[str, Any], list[list[SearchItem]], list[SearchItem]]:
    """One store through every operation; returns its numbers, the vector results and the
    filtered results (to compare with InMemoryStore's)."""
    n = len(items)
    progress(f"{label}, {n} items: put in batches of {BATCH}")
    took = 0.0
    for start in range(0, n, BATCH):
        ops = [PutOp(NAMESPACE, key, value) for key, value in items[start : start + BATCH]]
        took += timed(lambda ops=ops: store.batch(ops))[0]
    row: dict[str, Any] = {"label": label, "batch_put_per_s": n / took}
    progress(f"{label}: {n} single puts")
    took = sum(timed(lambda k=k, v=v: store.put(SINGLES, k, v))[0] for k, v in items)
    row["single_put_per_s"] = n / took
    rng = random.Random(5)
    keys = [rng.choice(items)[0] for _ in queries]
    progress(f"{label}: {len(keys)} gets, filtered and vector searches")
    row["get_s"] = [timed(lambda k=k: store.get(NAMESPACE, k))[0] for k in keys]
    filtered = store.search(NAMESPACE, filter=FILTER, limit=TOP_K)  # warm-up, and the check
    row["filtered_s"] = [
        timed(lambda: store.search(NAMESPACE, filter=FILTER, limit=TOP_K))[0] for _ in queries
    ]
    found: list[list[SearchItem]] = []
    if vectors:
        store.search(NAMESPACE, query=queries[0], limit=TOP_K)  # warm-up
        row["vector_s"] = []
        for q in queries:
            seconds, result = timed(lambda q=q: store.search(NAMESPACE, query=q, limit=TOP_K))
            row["vector_s"].append(seconds)
            found.append(result)
    return row, found, filtered


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    """The raw seconds as p50, p99 and max milliseconds."""
    raw = ("get", "filtered", "vector", "cold")
    out = {k: v for k, v in row.items() if k.removesuffix("_s") not in raw}
    for name in raw:
        values = row.get(f"{name}_s")
        if values:
            out[f"{name}_ms"] = {
                "p50": percentile(values, 0.5) * 1000,
                "p99": percentile(values, 0.99) * 1000,
                "max": max(values) * 1000,
                "runs": len(values),
            }
    return out


def compare(ours: list[list[SearchItem]], reference: list[list[SearchItem]]) -> tuple[int, float]:
    """Queries whose top-10 keys differ, and the largest score difference of the rest."""
    mismatches, worst = 0, 0.0
    for mine, theirs in zip(ours, reference, strict=True):
        if [i.key for i in mine] != [i.key for i in theirs]:
            mismatches += 1
            continue
        for a, b in zip(mine, theirs, strict=True):
            worst = max(worst, abs((a.score or 0.0) - (b.score or 0.0)))
    return mismatches, worst


@contextlib.contextmanager
def postgres_store(url: str) -> Iterator[tuple[BaseStore | None, str]]:
    """PostgresStore in a fresh schema, or None and why not; the vector column's note."""
    with postgres_schema(url) as pg:
        if pg.skip_reason:
            yield None, pg.skip_reason
            return
        from langgraph.store.postgres import PostgresStore

        with PostgresStore.from_conn_string(pg.url) as store:
            store.setup()
            row = store.conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
            yield store, NO_PGVECTOR if row is None else "n/a (not run)"


def cold_search(url: str, query: str) -> float:
    """The first search of a process: a new client and store, no snapshot yet."""
    with redis.Redis.from_url(url) as client:
        fresh = RedisStore(client, index=INDEX, prefix=PREFIX)
        return timed(lambda: fresh.search(NAMESPACE, query=query, limit=TOP_K))[0]


def run_size(n: int, n_queries: int, server: RedisServer, postgres_url: str) -> dict[str, Any]:
    items = make_items(n)
    queries = [f"query {j}: what did the user say about topic {j % 13}?" for j in range(n_queries)]
    embed([value["text"] for _, value in items] + queries)  # precompute the vectors
    rows: dict[str, dict[str, Any]] = {}

    memory = InMemoryStore(index=INDEX)
    row, reference, reference_filtered = measure("InMemoryStore", memory, items, queries, True)
    rows["memory"] = summarize(row)

    with postgres_store(postgres_url) as (pg, note):
        if pg is None:
            rows["postgres"] = {"label": "PostgresStore", "skipped": note}
        else:
            rows["postgres"] = summarize(measure("PostgresStore", pg, items, queries, False)[0])
            rows["postgres"]["vector_note"] = note

    client = redis.Redis.from_url(server.url)
    client.flushall()  # our own private server: each size starts empty
    used_before = int(client.info("memory")["used_memory"])
    ours = RedisStore(client, index=INDEX, prefix=PREFIX)
    ours.setup()
    row, found, filtered = measure("RedisStore", ours, items, queries, True)
    progress(f"RedisStore: {COLD_RUNS} cold first searches (a new client and RedisStore each)")
    row["cold_s"] = [cold_search(server.url, queries[0]) for _ in range(COLD_RUNS)]
    keys = StoreLayout(PREFIX).keys(NAMESPACE).all()
    namespace_bytes = sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)
    mismatches, worst = compare(found, reference)
    rows["ours"] = summarize(row)
    rows["ours"].update(
        bytes_per_item=namespace_bytes / n,
        used_memory_delta_per_item=(int(client.info("memory")["used_memory"]) - used_before)
        / (2 * n),  # both namespaces: batched and single puts
        top10_mismatches=mismatches,
        max_score_difference=worst,
        filtered_mismatch=[i.key for i in filtered] != [i.key for i in reference_filtered],
    )
    client.close()
    progress(f"N={n}: {mismatches} top-10 mismatches, max score difference {worst:.2e}")
    return {"items": n, "queries": n_queries, "rows": rows}


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}{TIMES}"


def latency(row: dict[str, Any], reference: dict[str, Any], name: str) -> str:
    m = row.get(f"{name}_ms")
    if m is None:
        return str(row.get("vector_note", "n/a"))
    cell = f"{m['p50']:.3f} / {m['p99']:.3f}"
    if row is reference:
        return cell
    return f"{cell} ({ratio(m['p50'], reference[name + '_ms']['p50'])})"


def throughput(row: dict[str, Any], reference: dict[str, Any], name: str) -> str:
    cell = f"{row[name]:,.0f}"
    return cell if row is reference else f"{cell} ({ratio(row[name], reference[name])})"


HEADERS = ["N", "store", "put batched items/s", "put single items/s", "get p50 / p99 ms"]
HEADERS += ["filtered search p50 / p99 ms", "vector top-10 p50 / p99 ms (warm)"]
OURS_HEADERS = ["N", "cold (first search of a process) ms", "warm p50 ms", "Redis bytes/item"]
OURS_HEADERS += ["top-10 mismatches", "max score diff", "filtered: same first page"]


def markdown(sizes: list[dict[str, Any]], date: str, command: str, machine: dict[str, Any]) -> str:
    main_rows, ours_rows = [], []
    for size in sizes:
        reference = size["rows"]["memory"]
        for row in size["rows"].values():
            n = f"{size['items']:,}"
            if "skipped" in row:
                main_rows.append([n, row["label"], row["skipped"], "", "", "", ""])
                continue
            main_rows.append(
                [n, row["label"]]
                + [throughput(row, reference, k) for k in ("batch_put_per_s", "single_put_per_s")]
                + [latency(row, reference, k) for k in ("get", "filtered", "vector")]
            )
        ours = size["rows"]["ours"]
        ours_rows.append(
            [
                f"{size['items']:,}",
                f"{ours['cold_ms']['p50']:.1f} / {ours['cold_ms']['max']:.1f}",
                f"{ours['vector_ms']['p50']:.3f}",
                f"{ours['bytes_per_item']:,.0f}",
                f"{ours['top10_mismatches']} of {size['queries']}",
                f"{ours['max_score_difference']:.1e}",
                "no" if ours["filtered_mismatch"] else "yes",
            ]
        )
    return "\n".join(
        [
            "# LangGraph stores: InMemoryStore, PostgresStore and RedisStore side by side",
            "",
            f"- date: {date}",
            f"- command: `{command}`",
            f"- machine: nproc {machine['nproc']}, {machine['cpu']}; python {machine['python']}; "
            f"{machine['redis_server']} (private, started by the benchmark), loopback TCP",
            f"- load average at start {machine['loadavg_start']}, at end {machine['loadavg_end']}",
            f"- {DIMS} dims, fake embedding (seeded random vectors per text, precomputed); one "
            f"namespace; filter `{FILTER}` matches 10 % of items (limit {TOP_K}); "
            f"{sizes[0]['queries']} calls per latency column, one caller, sequential",
            "- ratios (in brackets): this store's number divided by InMemoryStore's, so above 1 "
            "is better for items/s and worse for latency (p50)",
            "",
            table(HEADERS, main_rows, right=[0, 2, 3, 4, 5, 6]),
            "",
            "RedisStore only: the cold first search of a process (a new `RedisStore` on the same "
            f"data loads the namespace's snapshot; median / max of {COLD_RUNS}) against a warm "
            "one, Redis bytes per item (`MEMORY USAGE` of the namespace's keys / N), and the "
            "check against InMemoryStore (same top-10 keys per vector query, largest score "
            "difference, same first page of the filtered search):",
            "",
            table(OURS_HEADERS, ours_rows, right=[0, 1, 2, 3, 4, 5]),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="1000,10000", help="item counts, comma-separated")
    parser.add_argument("--queries", type=int, default=100, help="calls per latency column")
    parser.add_argument("--quick", action="store_true", help="1000 items, 10 queries")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.queries = "1000", 10
    counts = [int(part) for part in args.items.split(",")]
    date = utc_stamp()
    with RedisServer() as server, server.client() as client:
        version = str(client.info("server")["redis_version"])
        sizes = [run_size(n, args.queries, server, args.postgres_url) for n in counts]
    machine = machine_info(version, PACKAGES)
    command = command_line("benchmarks.store", argv)
    report = markdown(sizes, date, command, machine)
    print(report)
    mismatches = sum(size["rows"]["ours"]["top10_mismatches"] for size in sizes)
    worst = max(size["rows"]["ours"]["max_score_difference"] for size in sizes)
    print(
        f"top-10 mismatches against InMemoryStore: {mismatches}; max score difference {worst:.1e}"
    )
    payload = {
        "date": date,
        "command": command,
        "args": vars(args),
        "machine": machine,
        "sizes": sizes,
        "top10_mismatches": mismatches,
        "max_score_difference": worst,
    }
    write_results("store", report, payload)
    return 0 if mismatches == 0 and worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
