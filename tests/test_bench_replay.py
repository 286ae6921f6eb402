"""benchmarks/saver_cpu.py replays what LangGraph asked of a saver: every call, on every saver."""

from __future__ import annotations

from benchmarks import saver_cpu


def test_the_replay_benchmark_records_every_call_and_replays_it_on_each_saver(
    redis_server_bin: str,
) -> None:
    args = saver_cpu.argparse.Namespace(conversations=2, turns=3, rounds=1, pin=False)
    result = saver_cpu.asyncio.run(saver_cpu.run(args))
    # retrieve -> agent -> summarize: one read, five checkpoints, four task write sets a turn.
    assert result["calls_per_turn"] == {"aget_tuple": 1.0, "aput": 5.0, "aput_writes": 4.0}
    labels = [row["label"] for row in result["rows"]]
    assert labels == [
        "InMemorySaver",
        "AsyncRedisSaver",
        "AsyncRedisSaver, fallback=False",
        "AsyncRedisSaver stripped (a floor, not a configuration)",
        "RedisSaver (sync)",
    ]
    assert all(len(row["rounds_ms"]) == 1 and row["min_ms"] > 0 for row in result["rows"])
    assert result["pinned"] is False  # a test leaves the suite's CPU affinity alone
    per_call = {row["label"]: row["min"] for row in result["per_call_us"]}
    assert list(per_call) == [
        "InMemorySaver (sync)",
        "RedisSaver (sync)",
        "RedisSaver (sync), fallback=False",
        "RedisSaver (sync), fallback=False, no metrics",
        "AsyncRedisSaver",
    ]
    assert all(set(costs) == set(saver_cpu.OPS) for costs in per_call.values())
    assert all(us > 0 for costs in per_call.values() for us in costs.values())
    text = saver_cpu.report(result, "python benchmarks/saver_cpu.py")
    assert "| AsyncRedisSaver | replay, default options |" in text
    assert "| saver | get_tuple | put | put_writes |" in text
    # The floor row switches compression off for its own replay only.
    assert saver_cpu.codec._deflate(b"x" * 200, saver_cpu.codec.ZDICT) != b"x" * 200
