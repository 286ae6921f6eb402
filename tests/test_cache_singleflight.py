"""get_or_compute runs a computation once across coroutines, threads and processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from typing import Any

import pytest
import redis
from cache_helpers import compute_once_in_process, engine, unique

from redis_checkpoint.cache import MISSING


def test_processes_compute_once(redis_url: str, redis_client: redis.Redis) -> None:
    prefix = unique("procs")
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    workers = [
        context.Process(target=compute_once_in_process, args=(redis_url, prefix, start, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # let the interpreters start; correctness does not depend on it
    start.set()
    answers = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert int(redis_client.get(f"{prefix}:runs") or 0) == 1
    assert len({answer["by"] for answer in answers}) == 1  # everyone got the leader's result
    assert all(answer["answer"] == 42 for answer in answers)


def test_threads_compute_once(redis_url: str) -> None:
    runs: list[int] = []
    with engine(redis_url, unique("threads")) as cache:

        def compute() -> str:
            runs.append(1)
            time.sleep(0.1)
            return "value"

        results: list[Any] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(cache.get_or_compute("ns", "k", compute))
            )
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == ["value"] * 8 and len(runs) == 1


def test_threads_of_two_engines_compute_once(redis_url: str) -> None:
    # Two engines do not share in-process state: only the Redis lock can keep this to one run.
    prefix = unique("engines")
    runs: list[int] = []
    with engine(redis_url, prefix) as first, engine(redis_url, prefix) as second:

        def compute() -> int:
            runs.append(1)
            time.sleep(0.1)
            return 7

        results: list[int] = []
        threads = [
            threading.Thread(
                target=lambda e=e: results.append(e.get_or_compute("ns", "k", compute))
            )
            for e in (first, second, first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [7] * 4 and len(runs) == 1


async def test_coroutines_compute_once(redis_url: str) -> None:
    runs: list[int] = []
    with engine(redis_url, unique("coros")) as cache:
        twin = cache.async_twin()
        try:

            async def compute() -> dict[str, int]:
                runs.append(1)
                await asyncio.sleep(0.05)
                return {"n": 1}

            results = await asyncio.gather(
                *(twin.get_or_compute("ns", "k", compute) for _ in range(10))
            )
            assert results == [{"n": 1}] * 10 and len(runs) == 1
            assert await twin.get_or_compute("ns", "k", compute) == {"n": 1}
            assert len(runs) == 1
        finally:
            await twin.aclose()


def test_a_failure_is_not_cached_and_releases_the_lock(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with engine(redis_url, unique("fail")) as cache:

        def boom() -> int:
            raise RuntimeError("model overloaded")

        with pytest.raises(RuntimeError, match="overloaded"):
            cache.get_or_compute("ns", "k", boom)
        assert cache.get("ns", "k", MISSING) is MISSING
        assert redis_client.exists(cache.core.layout.lock("ns", "k")) == 0
        assert cache.get_or_compute("ns", "k", lambda: 5) == 5  # no wait on a stale lock


async def test_waiters_take_over_when_the_leader_fails(redis_url: str) -> None:
    with engine(redis_url, unique("takeover")) as cache:
        twin = cache.async_twin()
        calls: list[str] = []
        try:

            async def first_fails() -> str:
                calls.append("x")
                await asyncio.sleep(0.05)
                if len(calls) == 1:
                    raise RuntimeError("first attempt fails")
                return "second attempt"

            results = await asyncio.gather(
                *(twin.get_or_compute("ns", "k", first_fails) for _ in range(3)),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, Exception)]
            assert len(errors) == 1 and results.count("second attempt") == 2
            assert len(calls) == 2
        finally:
            await twin.aclose()


def test_an_unencodable_result_is_a_type_error_and_unlocks(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with engine(redis_url, unique("unenc")) as cache:
        with pytest.raises(TypeError, match="cannot cache"):
            cache.get_or_compute("ns", "k", object)
        assert redis_client.exists(cache.core.layout.lock("ns", "k")) == 0
