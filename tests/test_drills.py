"""Outage drills on real redis-server processes: kill -9 under load, a slow or silent network,
a server restarted empty, and a full server under ``noeviction``.

Each drill prints a short report (operations, errors seen by callers, lost checkpoints, latency
while Redis was down); ``DRILLS_REPORT=1`` also writes them to benchmarks/results/drills.md.
The assertions are on counts and states only: "fast while the breaker is open" is proved by
counting the round trips sent by operations that began while it was open (zero, apart from the
breaker's own probes), and the measured latencies are reported, not asserted.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from prometheus_client import CollectorRegistry

from benchmarks.report import percentile
from redis_checkpoint import CacheEngine, HealthMonitor, RedisSaver, Settings
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.testing import RedisServer
from tests.drill_helpers import (
    DrillLog,
    DrillReport,
    MeteredEngine,
    MeteredSaver,
    OpMeter,
    ProbeMarkingBreaker,
    TcpProxy,
)
from tests.test_fallback import build, cfg

pytestmark = pytest.mark.slow

LOG = DrillLog()


@pytest.fixture(scope="module", autouse=True)
def drill_log() -> Iterator[DrillLog]:
    yield LOG
    LOG.write()


def publish(report: DrillReport, capsys: pytest.CaptureFixture[str]) -> None:
    LOG.add(report)
    with capsys.disabled():
        print("\n" + report.text())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def stored_checkpoints(url: str, prefix: str, threads: list[str]) -> set[tuple[str, str]]:
    with RedisSaver.from_conn_string(url, key_prefix=prefix, fallback=False) as saver:
        return {
            (t, tup.config["configurable"]["checkpoint_id"])
            for t in threads
            for tup in saver.list(cfg(t))
        }


# -- 1. kill -9 under 100 concurrent conversations and cache traffic ----------------------------


async def test_kill_nine_under_load(fresh_redis: RedisServer, capsys: Any) -> None:
    conversations, cache_workers, down_for = 100, 10, 2.5
    metrics = Metrics(CollectorRegistry())
    settings = Settings(url=fresh_redis.url, socket_timeout=0.5, socket_connect_timeout=0.25)
    saver_breaker = ProbeMarkingBreaker("checkpoint", failure_threshold=3, recovery_timeout=1.0)
    engine_breaker = ProbeMarkingBreaker("cache", failure_threshold=3, recovery_timeout=1.0)
    saver_meter, engine_meter = OpMeter(saver_breaker), OpMeter(engine_breaker)
    engine = MeteredEngine(settings, prefix="drill1:cache", metrics=metrics, breaker=engine_breaker)
    engine.meter = engine_meter
    errors: list[BaseException] = []
    computes = 0
    stop = asyncio.Event()

    async with MeteredSaver.from_conn_string(
        settings=settings, key_prefix="drill1", metrics=metrics, breaker=saver_breaker
    ) as saver:
        assert isinstance(saver, MeteredSaver)
        saver.attach(saver_meter)
        graph = build().compile(checkpointer=saver)
        threads = [f"conv-{i}" for i in range(conversations)]
        turns = dict.fromkeys(threads, 0)

        async def converse(thread_id: str) -> None:
            while not stop.is_set():
                try:
                    await graph.ainvoke(
                        {"messages": [HumanMessage(f"{thread_id} turn {turns[thread_id]}")]},
                        cfg(thread_id),
                    )
                    turns[thread_id] += 1
                except Exception as exc:  # a caller-visible error: the drill fails on any
                    errors.append(exc)
                await asyncio.sleep(0.5)  # a user reads the answer and types

        async def cache_traffic(worker: int) -> None:
            nonlocal computes
            rng = random.Random(worker)

            async def compute() -> dict[str, int]:
                nonlocal computes
                computes += 1
                return {"rows": worker}

            while not stop.is_set():
                key = f"q{min(int(rng.paretovariate(1.2)), 200)}"
                try:
                    await engine_meter.timed(
                        lambda k=key: engine.get_or_compute("query", k, compute, ttl=300)
                    )
                    await engine_meter.timed(lambda k=key: engine.get("llm", k))
                except Exception as exc:
                    errors.append(exc)
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(converse(t)) for t in threads]
        tasks += [asyncio.create_task(cache_traffic(w)) for w in range(cache_workers)]
        await asyncio.sleep(1.0)
        turns_before = sum(turns.values())
        # In a worker thread: blocking the loop would show up as latency while down.
        await asyncio.to_thread(fresh_redis.kill)
        killed_at = time.monotonic()
        saver_meter.down = engine_meter.down = True
        await asyncio.sleep(down_for)
        await asyncio.to_thread(fresh_redis.restart)
        saver_meter.down = engine_meter.down = False
        # Traffic goes on; recovery needs no help (the breakers probe after their timeout).
        for _ in range(200):
            if (
                saver.breaker.state == "closed"
                and engine.core.breaker.state == "closed"
                and saver.memory is not None
                and saver.memory.pending == 0
            ):
                break
            await asyncio.sleep(0.05)
        recovered_after = time.monotonic() - killed_at
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        assert saver.memory is not None
        pending_left = saver.memory.pending

    written = saver.written
    stored = stored_checkpoints(fresh_redis.url, "drill1", threads)
    lost = written - stored
    await engine.aclose()

    down = saver_meter.latencies_down_ms + engine_meter.latencies_down_ms
    slowest_probe = max(saver_meter.probe_latencies_ms + engine_meter.probe_latencies_ms, default=0)
    report = DrillReport(
        "kill -9 during 100 async conversations + cache traffic",
        operations=saver_meter.operations + engine_meter.operations,
        caller_errors=len(errors),
        lost_checkpoints=len(lost),
        latencies_down_ms=down,
        facts={
            "Redis down for": f"{down_for:.1f} s (SIGKILL, restart from AOF)",
            "conversation turns": f"{sum(turns.values())} ({turns_before} before the kill)",
            "checkpoints written / in Redis after recovery": f"{len(written)} / {len(stored)}",
            "failures before the breakers opened": (
                f"saver {saver_breaker.failures_before_first_open}, "
                f"cache {engine_breaker.failures_before_first_open} (threshold 3)"
            ),
            "round trips by operations begun while open (probes excluded)": (
                saver_meter.sends_by_open_ops + engine_meter.sends_by_open_ops
            ),
            "breaker probes (slowest, while down)": (
                f"saver {saver_breaker.probes}, cache {engine_breaker.probes} "
                f"({slowest_probe:.1f} ms)"
            ),
            "saver p99 while down": (
                f"{percentile(saver_meter.latencies_down_ms or [0.0], 0.99):.3f} ms"
            ),
            "cache p99 while down": (
                f"{percentile(engine_meter.latencies_down_ms or [0.0], 0.99):.3f} ms"
            ),
            "back to Redis after the kill": f"{recovered_after:.1f} s",
            "saver breaker": " ".join(
                f"{state}@{at - killed_at:+.1f}s" for at, state in saver_breaker.timeline
            ),
            "cache breaker": " ".join(
                f"{state}@{at - killed_at:+.1f}s" for at, state in engine_breaker.timeline
            ),
        },
    )
    publish(report, capsys)

    assert not errors, errors[:3]
    assert turns_before > 0 and sum(turns.values()) > turns_before
    assert saver_breaker.opened_count >= 1 and engine_breaker.opened_count >= 1
    assert saver_breaker.failures_before_first_open <= 3
    assert engine_breaker.failures_before_first_open <= 3
    # While open, an operation never waits on the dead server: it sends nothing.
    assert saver_meter.sends_by_open_ops == 0 and engine_meter.sends_by_open_ops == 0
    assert len(saver_meter.latencies_down_ms) > 100  # the open path was really exercised
    assert pending_left == 0 and saver.breaker.state == "closed"
    assert not lost, sorted(lost)[:5]
    # The fallback was counted where an operator looks.
    assert sample(metrics, "checkpoint_operations_total", operation="put", outcome="fallback")
    assert sample(metrics, "cache_fallback_operations_total", cache_type="query", operation="get")


# -- 2. a slow or silent network ----------------------------------------------------------------


def test_a_slow_or_silent_network_fails_over_within_the_timeouts(
    redis_server: RedisServer, capsys: Any
) -> None:
    timeout = 0.25
    proxy = TcpProxy(redis_server.port)
    metrics = Metrics(CollectorRegistry())
    settings = Settings(
        url=proxy.url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retries=0,
        breaker_recovery_timeout=30.0,
        breaker_max_recovery_timeout=30.0,
    )
    errors = 0
    latencies: dict[str, list[float]] = {"pass": [], "delay": [], "blackhole": []}
    trips_while_open = 0
    try:
        with (
            RedisSaver.from_conn_string(
                settings=settings, key_prefix="drill2", metrics=metrics
            ) as saver,
            CacheEngine(settings, prefix="drill2:cache", metrics=metrics) as engine,
        ):

            def operate(mode: str, i: int) -> None:
                nonlocal errors
                for call in (
                    lambda: saver.put(cfg(f"t{i % 4}"), empty_checkpoint(), {}, {}),
                    lambda: saver.get_tuple(cfg(f"t{i % 4}")),
                    lambda: engine.set("http", f"k{i}", "v" * 64),
                    lambda: engine.get("http", f"k{i}"),
                ):
                    start = time.perf_counter()
                    try:
                        call()
                    except Exception:
                        errors += 1
                    latencies[mode].append((time.perf_counter() - start) * 1000)

            for i in range(10):
                operate("pass", i)
            proxy.mode, proxy.delay = "delay", timeout / 12  # slow but within the timeout
            for i in range(10):
                operate("delay", i)
            assert saver.breaker.state == "closed" and engine.core.breaker.state == "closed"
            proxy.mode = "blackhole"
            for i in range(3):
                operate("blackhole", i)  # each call waits at most the socket timeout
            assert saver.breaker.state == "open" and engine.core.breaker.state == "open"
            trips = saver.round_trips + engine.round_trips
            for i in range(3, 20):
                operate("blackhole", i)
            trips_while_open = saver.round_trips + engine.round_trips - trips
    finally:
        proxy.close()

    report = DrillReport(
        "TCP proxy: latency, then swallowed packets",
        operations=sum(len(v) for v in latencies.values()),
        caller_errors=errors,
        latencies_down_ms=latencies["blackhole"][12:],
        facts={
            "socket timeout / retries": f"{timeout * 1000:.0f} ms / 0",
            "healthy p50": f"{percentile(latencies['pass'], 0.5):.3f} ms",
            f"delayed {timeout / 12 * 1000:.0f} ms per packet, p50": (
                f"{percentile(latencies['delay'], 0.5):.1f} ms (served by Redis)"
            ),
            "swallowed: slowest call before the breaker opened": (
                f"{max(latencies['blackhole'][:12]):.1f} ms"
            ),
            "round trips after the breakers opened": trips_while_open,
        },
    )
    publish(report, capsys)
    assert errors == 0
    assert trips_while_open == 0
    assert sample(metrics, "checkpoint_operations_total", operation="put", outcome="fallback") > 0


# -- 3. Redis restarted empty -------------------------------------------------------------------


def test_redis_restarted_empty(redis_server_bin: str, capsys: Any) -> None:
    metrics = Metrics(CollectorRegistry())
    computes = 0
    errors = 0
    operations = 0

    def compute(i: int) -> Any:
        def run() -> dict[str, int]:
            nonlocal computes
            computes += 1
            return {"value": i}

        return run

    with RedisServer(binary=redis_server_bin) as server:  # no AOF, no RDB: restarts empty
        settings = Settings(url=server.url)
        with (
            RedisSaver.from_conn_string(
                settings=settings, key_prefix="drill3", metrics=metrics
            ) as saver,
            CacheEngine(settings, prefix="drill3:cache", metrics=metrics) as engine,
        ):
            graph = build().compile(checkpointer=saver)
            graph.invoke({"messages": [HumanMessage("hello")]}, cfg("kept"))
            for i in range(50):
                engine.get_or_compute("query", f"k{i}", compute(i), tags=["all"])
            assert computes == 50

            server.kill()
            server.start()  # same port, empty
            monitor = HealthMonitor(settings, components=[saver, engine], metrics=metrics)
            report_after = monitor.check()
            monitor.stop()

            missing = saver.get_tuple(cfg("kept"))
            threads_after = saver.list_threads()
            for i in range(50):
                engine.get_or_compute("query", f"k{i}", compute(i), tags=["all"])
            refilled = computes - 50
            for i in range(50):
                engine.get_or_compute("query", f"k{i}", compute(i), tags=["all"])
            hits_after_refill = 50 - (computes - 50 - refilled)
            # The conversation starts over instead of failing.
            turn = graph.invoke({"messages": [HumanMessage("again")]}, cfg("kept"))
            invalidated = engine.invalidate_tags("query", "all")
            operations = sum(
                sample(metrics, "checkpoint_operations_total", operation=op, outcome=outcome)
                for op in ("get_tuple", "put", "put_writes", "list_threads")
                for outcome in ("ok", "fallback", "error")
            ) + sum(s.operations for s in engine.stats().values())

    report = DrillReport(
        "Redis restarted empty",
        operations=int(operations),
        caller_errors=errors,
        facts={
            "health after restart": report_after.status,
            "missing thread reads as": repr(missing),
            "threads listed after restart": len(threads_after),
            "cache entries recomputed (refill)": refilled,
            "hits on the next pass": f"{hits_after_refill}/50",
        },
    )
    publish(report, capsys)
    assert report_after.status == "ok"
    assert missing is None and threads_after == []
    assert refilled == 50 and hits_after_refill == 50
    assert len(turn["messages"]) == 2
    assert invalidated == 50  # the tag sets were rebuilt with the entries


# -- 4. maxmemory reached under noeviction ------------------------------------------------------


def test_maxmemory_under_noeviction(redis_server_bin: str, capsys: Any) -> None:
    metrics = Metrics(CollectorRegistry())
    errors = 0
    with RedisServer(binary=redis_server_bin, args=["--maxmemory-policy", "noeviction"]) as server:
        settings = Settings(url=server.url, breaker_recovery_timeout=30.0)
        admin = server.client()
        with (
            RedisSaver.from_conn_string(
                settings=settings, key_prefix="drill4", metrics=metrics
            ) as saver,
            CacheEngine(settings, prefix="drill4:cache", metrics=metrics) as engine,
        ):
            graph = build().compile(checkpointer=saver)
            graph.invoke({"messages": [HumanMessage("before")]}, cfg("full"))
            used = int(admin.info("memory")["used_memory"])
            admin.config_set("maxmemory", used + 256 * 1024)
            big = "x" * 16 * 1024
            operations = 0
            for i in range(200):
                try:
                    engine.set("llm", f"big{i}", big)
                    graph.invoke({"messages": [HumanMessage(f"turn {i}")]}, cfg("full"))
                except Exception:
                    errors += 1
                operations += 2
            oom_seen = int(admin.info("stats").get("total_error_replies", 0))
            fallback_sets = sample(
                metrics, "cache_fallback_operations_total", cache_type="llm", operation="set"
            )
            saver_fallbacks = sum(
                sample(metrics, "checkpoint_operations_total", operation=op, outcome="fallback")
                for op in ("put", "put_writes", "get_tuple")
            )
            monitor = HealthMonitor(settings, components=[saver, engine], metrics=metrics)
            during = monitor.check()
            admin.config_set("maxmemory", 0)  # the operator frees memory
            after = monitor.check()
            monitor.stop()
            final = saver.get_tuple(cfg("full"))
            assert saver.memory is not None
            pending_after = saver.memory.pending
        with RedisSaver.from_conn_string(
            settings=settings, key_prefix="drill4", fallback=False
        ) as check:
            stored = check.get_tuple(cfg("full"))
        admin.close()

    messages = len(stored.checkpoint["channel_values"]["messages"]) if stored else 0
    report = DrillReport(
        "maxmemory reached under noeviction",
        operations=operations,
        caller_errors=errors,
        lost_checkpoints=0 if stored and final and messages == 2 * 201 else None,
        facts={
            "maxmemory": "used_memory + 256 KiB, then raised to unlimited",
            "error replies from Redis (OOM)": oom_seen,
            "cache writes served by the memory tier": int(fallback_sets),
            "saver operations served by the memory tier": int(saver_fallbacks),
            "health while full / after": f"{during.status} / {after.status}",
            "messages in Redis after recovery": f"{messages} (expected {2 * 201})",
        },
    )
    publish(report, capsys)
    assert errors == 0
    assert oom_seen > 0 and fallback_sets > 0 and saver_fallbacks > 0
    assert during.redis["maxmemory_policy"] == "noeviction"
    assert during.status == "degraded" and after.status == "ok"  # writes waited, then landed
    assert sample(metrics, "cache_errors_total", cache_type="llm", kind="redis") == 0
    assert pending_after == 0
    assert messages == 2 * 201  # every turn, including those taken in memory, reached Redis
