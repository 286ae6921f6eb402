"""What ``delete_for_runs`` costs as the keyspace grows around the run it deletes.

Run from the project root::

    python -m benchmarks.run_deletion [--sizes 2000,8000] [--repeats 15]

On a private ``redis-server``, our RedisSaver holds bystander threads (one or two checkpoints
each, every thread written by its own run) and one run that wrote two checkpoints and a set of
writes to each of 3 threads of its own. ``delete_for_runs([that run])`` is timed, the run
created again before each call; the median over the repeats is the figure. The bystanders grow
from the first size to the next on the same server. With a scan over every thread the time grows
with the keyspace (the issue measured 120 ms at 2,000 threads and 460 ms at 8,000); the run
index keeps it to the run's own threads, so the ratio of the sizes' medians should stay near 1.

Two savers delete: the one that wrote the bystanders (its in-process caches of what Redis holds
are full of them) and a fresh one on the same server (another process's view: it wrote only the
run), so that the server's work and the deleting process's own bookkeeping show apart.

It prints and writes ``benchmarks/results/run_deletion.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Sequence
from typing import Any

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata, empty_checkpoint

from benchmarks.report import (
    TIMES,
    command_line,
    machine_info,
    progress,
    table,
    utc_stamp,
    write_results,
)
from redis_checkpoint import RedisSaver
from redis_checkpoint.testing import RedisServer

RUN_THREADS = 3  # threads the deleted run wrote to
RUN_STEPS = 2  # checkpoints the run wrote to each of them
#: What the issue measured with the scan over every thread, for the text beside the table.
SCAN_MS = {2000: 120.0, 8000: 460.0}
PACKAGES = ("langgraph-checkpoint", "redis", "hiredis")
WRITER = "bystanders' writer"
FRESH = "fresh"


def _text(thread_id: str, step: int) -> str:
    # A short message per checkpoint: the cost measured is finding the run's threads.
    return f"message {step} of {thread_id}: " + "lorem ipsum " * 8


def write_run(saver: RedisSaver, thread_id: str, run_id: str, steps: int, writes: bool) -> None:
    """``steps`` checkpoints of ``run_id`` on ``thread_id`` (and a set of pending writes on the
    last one), the way LangGraph calls a saver: each put names the previous checkpoint."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    version: str | None = None
    for step in range(steps):
        version = saver.get_next_version(version, None)
        checkpoint: Checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": _text(thread_id, step)}
        checkpoint["channel_versions"] = {"messages": version}
        metadata: CheckpointMetadata = {
            "source": "loop",
            "step": step,
            "parents": {},
            "run_id": run_id,
        }
        config = saver.put(config, checkpoint, metadata, {"messages": version})
    if writes:
        saver.put_writes(config, [("messages", _text(thread_id, steps))], f"task-{run_id}")


def scripts_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval")
    )


def populate(saver: RedisSaver, start: int, stop: int) -> None:
    """Bystander threads ``start`` .. ``stop - 1``: one or two checkpoints, each its own run."""
    step = max(1, (stop - start) // 8)
    for i in range(start, stop):
        write_run(saver, f"bystander-{i}", f"bystander-run-{i}", 1 + i % 2, writes=False)
        if (i + 1 - start) % step == 0 or i + 1 == stop:
            progress(f"populating: {i + 1:,}/{stop:,} bystander threads")


def time_deletions(
    saver: RedisSaver, client: redis.Redis, size: int, repeats: int, who: str
) -> dict[str, Any]:
    """``repeats`` timed ``delete_for_runs`` calls (after one untimed), the run written by the
    same saver before each; checks that the run's threads are gone and a bystander is not."""
    samples: list[float] = []
    trips: list[int] = []
    scripts: list[int] = []
    problems: set[str] = set()
    for rep in range(-1, repeats):  # rep -1 warms up: scripts loaded, connection in use
        run_id = f"run-{who}-{size}-{rep}"
        threads = [f"{run_id}-thread-{k}" for k in range(RUN_THREADS)]
        for thread_id in threads:
            write_run(saver, thread_id, run_id, RUN_STEPS, writes=True)
        scripts_before, trips_before = scripts_run(client), saver.round_trips
        gc.collect()
        start = time.perf_counter()
        saver.delete_for_runs([run_id])
        elapsed = time.perf_counter() - start
        trips_after = saver.round_trips  # read before INFO, which is not the saver's
        scripts_after = scripts_run(client)
        left = [t for t in threads if saver.get_tuple({"configurable": {"thread_id": t}})]
        if left:
            problems.add(f"{len(left)} of the run's threads still hold checkpoints")
        if saver.get_tuple({"configurable": {"thread_id": f"bystander-{size - 1}"}}) is None:
            problems.add("a bystander thread lost its checkpoints")
        if rep < 0:
            continue
        samples.append(elapsed)
        trips.append(trips_after - trips_before)
        scripts.append(scripts_after - scripts_before)
    return {
        "saver": who,
        "bystander_threads": size,
        "keys_on_server": int(client.dbsize()),
        "ms": [s * 1000 for s in samples],
        "median_ms": statistics.median(samples) * 1000,
        "min_ms": min(samples) * 1000,
        "max_ms": max(samples) * 1000,
        "round_trips": sorted(set(trips)),
        "scripts_run": sorted(set(scripts)),
        "problems": sorted(problems),
    }


def run(sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Every size on one private server, the bystanders growing from one size to the next."""
    rows: list[dict[str, Any]] = []
    with (
        RedisServer() as server,
        RedisSaver.from_conn_string(server.url) as writer,
        RedisSaver.from_conn_string(server.url) as fresh,
    ):
        client = server.client()
        server_version = str(client.info("server").get("redis_version", ""))
        populated = 0
        for size in sorted(sizes):
            populate(writer, populated, size)
            populated = size
            for who, saver in ((WRITER, writer), (FRESH, fresh)):
                row = time_deletions(saver, client, size, repeats, who)
                progress(
                    f"{size:,} bystanders, {who} saver: delete_for_runs median "
                    f"{row['median_ms']:.2f} ms over {repeats} calls, round trips "
                    f"{row['round_trips']}"
                )
                rows.append(row)
        client.close()

    def ratio(who: str) -> float:
        mine = [row for row in rows if row["saver"] == who]
        return float(mine[-1]["median_ms"] / mine[0]["median_ms"])

    return {
        "sizes": rows,
        "repeats": repeats,
        "run_threads": RUN_THREADS,
        "run_checkpoints_per_thread": RUN_STEPS,
        "ratio_last_to_first": ratio(WRITER),
        "ratio_last_to_first_fresh_saver": ratio(FRESH),
        "machine": machine_info(server_version, PACKAGES),
    }


def _span(values: Sequence[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{min(values)}{chr(0x2013)}{max(values)}"


def report(result: dict[str, Any], command: str) -> str:
    rows = result["sizes"]
    lines = []
    for row in rows:
        scan = SCAN_MS.get(row["bystander_threads"])
        lines.append(
            [
                f"{row['bystander_threads']:,}",
                row["saver"],
                f"{row['keys_on_server']:,}",
                f"{row['median_ms']:.2f}",
                f"{row['min_ms']:.2f}",
                f"{row['max_ms']:.2f}",
                _span(row["round_trips"]),
                _span(row["scripts_run"]),
                f"{scan:.0f}" if scan is not None and row["saver"] == WRITER else "",
                "ok" if not row["problems"] else "; ".join(row["problems"]),
            ]
        )
    first, last = rows[0]["bystander_threads"], rows[-1]["bystander_threads"]
    scan_first, scan_last = SCAN_MS.get(first), SCAN_MS.get(last)
    scan_text = (
        f"; with the scan (the issue): {scan_last / scan_first:.2f}{TIMES}"
        if scan_first and scan_last
        else ""
    )
    machine = result["machine"]
    headers = [
        "bystander threads",
        "deleting saver",
        "keys on server",
        "median ms",
        "min ms",
        "max ms",
        "round trips",
        "scripts run",
        "scan ms (issue)",
        "check",
    ]
    return "\n".join(
        [
            "# delete_for_runs against the size of the keyspace",
            "",
            f"- date: {utc_stamp()}",
            f"- command: `{command}`",
            f"- machine: nproc {machine['nproc']}, {machine['cpu'] or 'cpu n/a'}; python "
            f"{machine['python']}; private redis-server {machine['private_server_version']}",
            "- packages: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
            "",
            f"Our RedisSaver (default options) on a private redis-server. Bystander threads hold "
            f"one or two checkpoints each, every thread written by a run of its own; the deleted "
            f"run wrote {result['run_checkpoints_per_thread']} checkpoints and a set of writes "
            f"to each of {result['run_threads']} threads. `delete_for_runs([run])` is timed "
            f"{result['repeats']} times per size and saver (after one untimed call), the run "
            "written again by the deleting saver before each. Two savers delete: "
            f"`{WRITER}`, which wrote the bystanders (its in-process caches of what Redis holds "
            f"are full of them), and `{FRESH}`, a second saver on the same server that wrote "
            "only the runs (what another process sees). Round trips are `saver.round_trips` "
            "after minus before, scripts the server's EVALSHA count. Keys: two per thread, one "
            "run index per run, the registry. `scan ms (issue)` is what the issue measured when "
            "`delete_for_runs` scanned every thread.",
            "",
            table(headers, lines, right=[0, 2, 3, 4, 5, 6, 7, 8]),
            "",
            f"Median at {last:,} over median at {first:,} bystander threads: "
            f"**{result['ratio_last_to_first']:.2f}{TIMES}** ({WRITER}), "
            f"**{result['ratio_last_to_first_fresh_saver']:.2f}{TIMES}** ({FRESH}){scan_text}.",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        default="2000,8000",
        help="bystander thread counts, comma-separated (default 2000,8000)",
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per size")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(part) for part in args.sizes.split(",") if part.strip()})
    except ValueError:
        parser.error("--sizes takes integers, e.g. 2000,8000")
    if not sizes or sizes[0] < 1 or args.repeats < 1:
        parser.error("sizes and repeats must be >= 1")
    result = run(sizes, args.repeats)
    command = command_line("benchmarks.run_deletion", argv)
    text = report(result, command)
    print("\n" + text)
    if not args.no_write:
        write_results("run_deletion", text, {"command": command, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
