"""The cache's in-memory tier: LRU bounds, TTLs on an injected clock, tags and namespaces."""

from __future__ import annotations

import pytest

from redis_checkpoint.cache.memory import MemoryTier


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lru_bound_on_entries_keeps_the_recently_used() -> None:
    tier = MemoryTier(max_entries=3)
    for key in "abc":
        tier.set(key, key.encode(), None, "ns")
    assert tier.get_many(["a"]) == [b"a"]  # a is now the most recently used
    tier.set("d", b"d", None, "ns")
    assert tier.get_many(["a", "b", "c", "d"]) == [b"a", None, b"c", b"d"]
    assert len(tier) == 3


def test_byte_bound_and_oversize_entries() -> None:
    tier = MemoryTier(max_entries=100, max_bytes=10)
    tier.set("a", b"12345", None, "ns")
    tier.set("b", b"12345", None, "ns")
    tier.set("c", b"1", None, "ns")
    assert tier.get_many(["a", "b", "c"]) == [None, b"12345", b"1"]
    assert tier.size_bytes == 6
    tier.set("huge", b"x" * 11, None, "ns")
    assert tier.get_many(["huge", "b"]) == [None, b"12345"]


def test_ttl_tags_and_namespaces() -> None:
    clock = Clock()
    tier = MemoryTier(clock=clock)
    tier.set("short", b"1", 5, "ns1", ["t"])
    tier.set("long", b"2", 50, "ns1", ["t", "u"])
    tier.set("other", b"3", None, "ns2", ["u"])
    clock.now += 10
    assert tier.get_many(["short", "long", "other"]) == [None, b"2", b"3"]
    assert tier.invalidate_tag("u") == 2
    assert len(tier) == 0
    tier.set("x", b"1", None, "ns1")
    tier.set("y", b"1", None, "ns2")
    tier.set("x", b"22", None, "ns1")  # replacing keeps the byte count right
    assert tier.size_bytes == 3
    assert tier.clear_namespace("ns1") == 1 and tier.get_many(["x", "y"]) == [None, b"1"]
    assert tier.delete(["y", "absent"]) == 1 and tier.size_bytes == 0
    with pytest.raises(ValueError):
        MemoryTier(max_entries=0)
