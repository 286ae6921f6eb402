"""The store while Redis is away: it answers from what this process holds, owes its writes, and
writes them back once Redis answers (or at close); with ``fallback=False`` it says Redis is
away. On a real redis-server this test stops and starts itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from prometheus_client import CollectorRegistry
from store_helpers import HashedWords

from redis_checkpoint import AsyncRedisStore, Metrics, RedisStore, Settings
from redis_checkpoint.checkpoint.journal import Delta, Journal
from redis_checkpoint.client import create_async_client, create_client
from redis_checkpoint.errors import ConfigurationError, RedisUnavailableError
from redis_checkpoint.testing import RedisServer

INDEX = {"dims": 16, "embed": HashedWords(), "fields": ["text"]}
MEMORIES = ("users", "alice")


@pytest.fixture
def server(redis_server_bin: str) -> Iterator[RedisServer]:
    with RedisServer(binary=redis_server_bin, appendonly=True) as started:
        yield started


def _client(server: RedisServer) -> redis.Redis:
    client = create_client(Settings(url=server.url, socket_timeout=0.5, retries=0))
    assert isinstance(client, redis.Redis)
    return client


def _fresh_view(server: RedisServer) -> RedisStore:
    """A store of another process: it knows only what Redis holds."""
    store = RedisStore(_client(server), index=INDEX)  # type: ignore[arg-type]
    store.setup()
    return store


def _until_redis_answers(store: RedisStore) -> None:
    """The breaker opened during the outage: wait out its back-off before the next call."""
    time.sleep(store.core.breaker.current_recovery_timeout + 0.1)


def test_an_outage_is_answered_from_memory_and_written_back_when_redis_returns(
    server: RedisServer,
) -> None:
    store = RedisStore(_client(server), index=INDEX)  # type: ignore[arg-type]
    store.setup()
    store.put(MEMORIES, "tea", {"text": "alice drinks tea", "kind": "taste"})
    store.put(MEMORIES, "city", {"text": "alice lives in lyon", "kind": "fact"})
    store.put(MEMORIES, "cat", {"text": "alice has a cat", "kind": "fact"})
    before = store.search(("users",), query="alice drinks tea")
    assert before[0].key == "tea"

    server.stop(keep_dir=True)
    # Reads answer from the snapshot the search loaded; writes are owed.
    city = store.get(MEMORIES, "city")
    assert city is not None and city.value == {"text": "alice lives in lyon", "kind": "fact"}
    during = store.search(("users",), query="alice drinks tea")
    assert [(i.key, i.score) for i in during] == [(i.key, i.score) for i in before]
    store.put(MEMORIES, "dog", {"text": "alice walks a dog", "kind": "fact"})
    store.delete(MEMORIES, "cat")
    assert store.core.owed == 2
    assert store.get(MEMORIES, "cat") is None
    assert store.get(MEMORIES, "dog").value["text"] == "alice walks a dog"  # type: ignore[union-attr]
    facts = store.search(MEMORIES, filter={"kind": "fact"})
    assert sorted(item.key for item in facts) == ["city", "dog"]
    [dog] = store.search(MEMORIES, query="alice walks a dog", limit=1)
    assert dog.key == "dog" and dog.score is not None and dog.score > 0.99
    assert store.list_namespaces() == [MEMORIES]
    assert store.get(("users", "bob"), "tea") is None  # never seen: nothing to say
    assert store.core.breaker.state == "open"  # no network call once it opened

    server.restart()
    _until_redis_answers(store)
    assert store.get(MEMORIES, "tea") is not None  # the first call back writes back first
    assert store.core.owed == 0
    other = _fresh_view(server)
    assert other.get(MEMORIES, "cat") is None
    assert other.get(MEMORIES, "dog").value == {"text": "alice walks a dog", "kind": "fact"}  # type: ignore[union-attr]
    [found] = other.search(MEMORIES, query="alice walks a dog", limit=1)
    assert found.key == "dog"  # its vector was written back with it


def test_close_writes_back_what_is_owed(server: RedisServer) -> None:
    store = RedisStore(_client(server), index=INDEX)  # type: ignore[arg-type]
    store.setup()
    server.stop(keep_dir=True)
    store.put(MEMORIES, "tea", {"text": "alice drinks tea"})
    assert store.core.owed == 1
    server.restart()
    store.close()
    assert store.core.owed == 0
    assert _fresh_view(server).get(MEMORIES, "tea") is not None


def test_what_cannot_be_written_back_at_close_is_logged(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(_client(server), index=INDEX)  # type: ignore[arg-type]
    store.setup()
    server.stop(keep_dir=True)
    store.put(MEMORIES, "tea", {"text": "alice drinks tea"})
    with caplog.at_level("ERROR", logger="redis_checkpoint.store"):
        store.close()
    assert store.core.owed == 1
    assert "1 store writes are still owed" in caplog.text


def test_without_fallback_an_outage_is_an_error_naming_the_server(server: RedisServer) -> None:
    store = RedisStore(_client(server), fallback=False)
    store.setup()
    server.stop(keep_dir=True)
    with pytest.raises(RedisUnavailableError, match=str(server.port)):
        store.get(MEMORIES, "tea")
    assert store.core.owed == 0


def test_the_async_store_rides_out_an_outage_too(server: RedisServer) -> None:
    async def scenario() -> None:
        client = create_async_client(Settings(url=server.url, socket_timeout=0.5, retries=0))
        assert isinstance(client, redis.asyncio.Redis)
        store = AsyncRedisStore(client, index=INDEX)  # type: ignore[arg-type]
        await store.asetup()
        await store.aput(MEMORIES, "tea", {"text": "alice drinks tea"})
        await store.asearch(MEMORIES)
        server.stop(keep_dir=True)
        await store.aput(MEMORIES, "city", {"text": "alice lives in lyon"})
        assert sorted(i.key for i in await store.asearch(MEMORIES)) == ["city", "tea"]
        server.restart()
        await store.aclose()
        assert store.core.owed == 0
        await client.aclose()

    asyncio.run(scenario())
    assert _fresh_view(server).get(MEMORIES, "city") is not None


def test_a_health_probe_writes_back_what_is_owed(server: RedisServer) -> None:
    store = RedisStore(_client(server), index=INDEX)  # type: ignore[arg-type]
    store.setup()
    server.stop(keep_dir=True)
    assert store.ping() is False
    store.put(MEMORIES, "tea", {"text": "alice drinks tea"})
    server.restart()
    assert store.ping() is True  # whatever the breaker says, as the saver's probe
    assert store.core.owed == 0 and store.core.breaker.state == "closed"
    assert _fresh_view(server).get(MEMORIES, "tea") is not None


# A process that dies during an outage: its store put two items and deleted one, all owed (and
# journaled), then the process ends without closing anything.
_DIES_DURING_AN_OUTAGE = """
import os, sys
sys.path.insert(0, "tests")
import redis
from store_helpers import HashedWords
from redis_checkpoint import RedisStore

url, journal = sys.argv[1], sys.argv[2]
client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
index = {"dims": 16, "embed": HashedWords(), "fields": ["text"]}
store = RedisStore(client, index=index, fallback_journal=journal)
store.put(("users", "alice"), "tea", {"text": "alice drinks tea"})
store.put(("users", "alice"), "city", {"text": "alice lives in lyon"}, ttl=60)
store.delete(("users", "alice"), "cat")
assert store.core.owed == 3, store.core.owed
os._exit(0)
"""


def test_a_process_that_dies_during_an_outage_loses_no_write(
    server: RedisServer, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    with _client(server) as client:
        RedisStore(client).put(MEMORIES, "cat", {"text": "alice has a cat"})
    port = server.port
    server.stop(keep_dir=True)
    dead = f"redis://127.0.0.1:{port}"
    subprocess.run([sys.executable, "-c", _DIES_DURING_AN_OUTAGE, dead, str(journal)], check=True)
    assert len(list(journal.glob("*.journal"))) == 1  # left behind by the dead process
    server.restart()
    store = RedisStore(_client(server), index=INDEX, fallback_journal=journal)  # type: ignore[arg-type]
    assert store.core.owed == 3  # adopted
    store.setup()  # writes them back
    assert store.core.owed == 0
    other = _fresh_view(server)
    assert other.get(MEMORIES, "cat") is None
    assert other.get(MEMORIES, "tea").value == {"text": "alice drinks tea"}  # type: ignore[union-attr]
    [found] = other.search(MEMORIES, query="alice lives in lyon", limit=1)
    assert found.key == "city"  # the vector came through the journal
    with _client(server) as client:
        expiry = client.zscore(store.core.layout.keys(MEMORIES).expiries, "city")
        assert expiry is not None  # the put's TTL came through too: an hour from now
        assert 0 < expiry - time.time() * 1000 <= 60 * 60_000
    store.close()
    assert list(journal.glob("*.journal")) == []  # nothing owed: no file left


def test_the_journal_keeps_what_close_could_not_write_back(
    server: RedisServer, tmp_path: Path
) -> None:
    store = RedisStore(_client(server), index=INDEX, fallback_journal=tmp_path)  # type: ignore[arg-type]
    store.setup()
    server.stop(keep_dir=True)
    store.put(MEMORIES, "tea", {"text": "alice drinks tea"})
    store.close()
    assert len(list(tmp_path.glob("*.journal"))) == 1
    server.restart()

    # The next store on the directory, async this time, adopts and writes back at setup.
    async def adopt() -> None:
        client = create_async_client(Settings(url=server.url))
        again = AsyncRedisStore(client, index=INDEX, fallback_journal=tmp_path)  # type: ignore[arg-type]
        assert again.core.owed == 1
        await again.asetup()
        assert again.core.owed == 0
        await again.aclose()
        await client.aclose()

    asyncio.run(adopt())
    assert _fresh_view(server).get(MEMORIES, "tea") is not None
    assert list(tmp_path.glob("*.journal")) == []


def test_a_journal_needs_the_fallback(server: RedisServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="fallback_journal needs fallback=True"):
        RedisStore(_client(server), fallback=False, fallback_journal=tmp_path)


def test_an_adopted_write_that_does_not_decode_is_counted_not_a_crash(
    server: RedisServer, tmp_path: Path
) -> None:
    foreign = Journal(tmp_path, "rc:st")  # the journal of a store with the default prefix
    damaged = Delta()
    damaged.set(b"tea", b"\xc1 not msgpack")
    foreign.append("users:alice", damaged)
    foreign.close()  # kept: it owes something
    metrics = Metrics(registry=CollectorRegistry())
    store = RedisStore(_client(server), fallback_journal=tmp_path, metrics=metrics)  # type: ignore[arg-type]
    assert store.core.owed == 0
    assert store.core.unreadable_owed_writes == 1
    errors = {"cache_type": "store", "kind": "corrupt"}
    assert metrics.registry.get_sample_value(metrics.name("cache_errors_total"), errors) == 1


def test_an_item_this_process_read_is_answered_during_an_outage(server: RedisServer) -> None:
    store = RedisStore(_client(server), index=INDEX)  # type: ignore[arg-type]
    store.setup()
    store.put(MEMORIES, "tea", {"text": "alice drinks tea"})
    store.put(MEMORIES, "city", {"text": "alice lives in lyon"})
    store.put(MEMORIES, "brief", {"text": "gone soon"}, ttl=0.02)  # 1.2 s
    for key in ("tea", "city", "brief"):
        assert store.get(MEMORIES, key) is not None  # read, never searched
    server.stop(keep_dir=True)
    tea = store.get(MEMORIES, "tea")
    assert tea is not None and tea.value == {"text": "alice drinks tea"}
    store.delete(MEMORIES, "city")  # owed, and what was read of it is gone
    assert store.get(MEMORIES, "city") is None
    store.put(MEMORIES, "dog", {"text": "alice walks a dog"})
    assert store.get(MEMORIES, "tea") is not None  # still there beside the outage writes
    time.sleep(1.3)
    assert store.get(MEMORIES, "brief") is None  # its TTL ran out meanwhile
    assert store.get(MEMORIES, "cat") is None  # never read: nothing to say
    server.restart()
    store.close()
    assert _fresh_view(server).get(MEMORIES, "city") is None
