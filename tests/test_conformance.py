"""langgraph-checkpoint-conformance (all 81 base + extended tests) against AsyncRedisSaver."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate

from redis_checkpoint import AsyncRedisSaver
from redis_checkpoint.testing import RedisServer

_prefixes = itertools.count()


async def test_conformance_suite_passes_in_full(redis_server: RedisServer) -> None:
    @checkpointer_test(name="AsyncRedisSaver")
    async def factory() -> AsyncIterator[AsyncRedisSaver]:
        # A fresh key prefix per capability suite: no flushing of the shared test server.
        prefix = f"conformance{next(_prefixes)}"
        async with AsyncRedisSaver.from_conn_string(redis_server.url, key_prefix=prefix) as saver:
            yield saver

    report = await validate(factory)
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert not failures, failures
    assert report.passed_all(), report.to_dict()
    assert report.conformance_level() == "FULL"
    assert {name for name, r in report.results.items() if r.detected} == set(report.results)
    assert len(report.results) == 8
    assert sum(r.tests_passed for r in report.results.values()) == 81
    assert sum(r.tests_failed + r.tests_skipped for r in report.results.values()) == 0
