"""What Redis holds per cache type: server facts (INFO) and a bounded keyspace sample (SCAN).

Both are plans (:mod:`.plan`): the health monitor, the management API and the CLI run them on a
sync or an asyncio client. The sample SCANs only the package's own key prefixes, stops after
``max_keys`` keys (so a large keyspace costs a bounded, known amount of work) and sizes each key
with ``MEMORY USAGE``; ``complete`` says whether it saw every key. The store's keys
(``<prefix>:st:...``) are their own type, ``store``, which also counts the namespaces seen (their
item hashes) and their live items (``HLEN`` less the expired, in the same round trip).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from redis_checkpoint.cache.keys import KeyLayout
from redis_checkpoint.cache.stats import default_cache_type
from redis_checkpoint.client import reply_text
from redis_checkpoint.steps import Plan, Primaries, Send, SendToNode

__all__ = [
    "KeyspaceSample",
    "ServerFacts",
    "keyspace_plan",
    "missing_namespace_message",
    "missing_namespace_plan",
    "server_facts_plan",
]

INFO_FIELDS: tuple[str, ...] = (
    "redis_version",
    "uptime_in_seconds",
    "used_memory",
    "maxmemory",
    "maxmemory_policy",
    "evicted_keys",
    "connected_clients",
)


@dataclass
class ServerFacts:
    """One PING and one INFO: the round-trip time and the fields an operator watches."""

    ping_ms: float
    info: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"ping_ms": round(self.ping_ms, 3), **self.info}


def _info_fields(replies: Sequence[Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for reply in replies:
        if isinstance(reply, Mapping):
            merged.update({reply_text(k): v for k, v in reply.items()})
    return {name: merged[name] for name in INFO_FIELDS if name in merged}


def server_facts_plan(clock: Any = time.perf_counter) -> Plan[ServerFacts]:
    """PING (timed alone, so the figure is one round trip), then INFO in one round trip."""
    start = clock()
    yield Send((("PING",),))
    ping_ms = (clock() - start) * 1000
    replies = yield Send(
        (("INFO", "server"), ("INFO", "clients"), ("INFO", "memory"), ("INFO", "stats"))
    )
    return ServerFacts(ping_ms, _info_fields(replies))


@dataclass
class KeyspaceSample:
    """Keys and bytes per cache type among the keys scanned."""

    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    scanned: int = 0
    complete: bool = True

    def add(self, cache_type: str, size: int) -> None:
        entry = self.by_type.setdefault(cache_type, {"keys": 0, "bytes": 0})
        entry["keys"] += 1
        entry["bytes"] += size

    def add_namespace(self, items: int) -> None:
        """One namespace of the store seen (its item hash), holding ``items`` live items."""
        entry = self.by_type.setdefault("store", {"keys": 0, "bytes": 0})
        entry["namespaces"] = entry.get("namespaces", 0) + 1
        entry["items"] = entry.get("items", 0) + max(items, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_type": dict(sorted(self.by_type.items())),
            "scanned": self.scanned,
            "complete": self.complete,
        }


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def classify(
    key: str,
    checkpoint_prefixes: Sequence[str],
    cache_prefixes: Sequence[str],
    namespace_types: Mapping[str, str] | None = None,
    store_prefixes: Sequence[str] = (),
) -> str | None:
    """The cache type a key belongs to, or None when it is none of the package's."""
    for prefix in checkpoint_prefixes:
        if key.startswith(f"{prefix}:cp:"):
            return "checkpoint"
    for prefix in store_prefixes:
        if key.startswith(f"{prefix}:st:"):
            return "store"
    for prefix in cache_prefixes:
        if key.startswith(f"{prefix}:{{"):
            namespace = _namespace_of(key, prefix)
            if namespace is None:
                return None
            if namespace_types and namespace in namespace_types:
                return namespace_types[namespace]
            return default_cache_type(namespace)
    return None


def _namespace_of(key: str, cache_prefix: str) -> str | None:
    """The namespace of a cache key under ``cache_prefix`` (``prefix:{namespace}:...``), as its
    keys spell it unescaped; None for a key that is not the engine's."""
    head = f"{cache_prefix}:{{"
    end = key.find("}", len(head))
    return unquote(key[len(head) : end]) if key.startswith(head) and end > 0 else None


def _is_item_hash(key: str, store_prefixes: Sequence[str]) -> bool:
    """A namespace's item hash (``<prefix>:st:{<tag>}:i``): one per namespace."""
    return key.endswith("}:i") and any(key.startswith(f"{p}:st:{{") for p in store_prefixes)


# What a scan hands each batch of keys to: True (a plan, or at once) to go on.
Take = Callable[[list[str], bool], "Plan[bool] | bool"]


def _scan(patterns: Sequence[str], batch: int, take: Take) -> Plan[bool]:
    """SCAN every primary (a cluster's each on its own) for each pattern, handing each batch of
    keys to ``take`` with whether the SCAN has more; ``take`` returning False stops the scan.
    True when every key was handed over."""
    nodes = yield Primaries()
    for node in nodes:
        for pattern in dict.fromkeys(patterns):
            cursor: Any = 0
            while True:
                scan = ("SCAN", cursor, "MATCH", pattern, "COUNT", batch)
                cursor, keys = yield SendToNode(node, scan)
                if isinstance(cursor, Mapping):  # a cluster client: {node name: cursor}
                    [cursor] = cursor.values()
                more = int(cursor) != 0
                decision = take([reply_text(k) for k in keys], more)
                if isinstance(decision, Generator):
                    decision = yield from decision
                if not decision:
                    return False
                if not more:
                    break
    return True


def keyspace_plan(
    checkpoint_prefixes: Sequence[str] = ("rc",),
    cache_prefixes: Sequence[str] = ("rc:cache",),
    *,
    max_keys: int = 10_000,
    namespace_types: Mapping[str, str] | None = None,
    batch: int = 500,
    store_prefixes: Sequence[str] = (),
    clock: Any = time.time,
) -> Plan[KeyspaceSample]:
    """SCAN the package's prefixes (at most ``max_keys`` keys) and size what it finds."""
    if max_keys < 1:
        raise ValueError(f"max_keys={max_keys!r} must be >= 1")
    sample = KeyspaceSample()
    patterns = [f"{_glob_escape(p)}:cp:*" for p in checkpoint_prefixes]
    patterns += [f"{_glob_escape(p)}:{{*" for p in cache_prefixes]
    patterns += [f"{_glob_escape(p)}:st:*" for p in store_prefixes]

    def size(keys: list[str], more: bool) -> Plan[bool]:
        keys = keys[: max_keys - sample.scanned]
        if keys:
            now = int(clock() * 1000)
            item_hashes = [k for k in keys if _is_item_hash(k, store_prefixes)]
            commands: list[tuple[Any, ...]] = [("MEMORY", "USAGE", key) for key in keys]
            for key in item_hashes:  # the namespace's live items: all less the expired
                expiries = key[: -len(":i")] + ":e"
                commands += [("HLEN", key), ("ZCOUNT", expiries, "-inf", now)]
            replies = yield Send(tuple(commands))
            sizes, counts = replies[: len(keys)], replies[len(keys) :]
            for key, used in zip(keys, sizes, strict=True):
                kind = classify(
                    key, checkpoint_prefixes, cache_prefixes, namespace_types, store_prefixes
                )
                if kind is not None and used is not None:  # None: expired meanwhile
                    sample.add(kind, int(used))
            for n in range(len(item_hashes)):
                if counts[2 * n]:
                    sample.add_namespace(int(counts[2 * n]) - int(counts[2 * n + 1]))
            sample.scanned += len(keys)
        if more and sample.scanned >= max_keys:
            sample.complete = False
            return False
        return True

    yield from _scan(patterns, batch, size)
    return sample


def missing_namespace_plan(cache_prefix: str, namespace: str) -> Plan[list[str] | None]:
    """None when Redis holds any key of cache ``namespace`` (an entry, a tag set, its generation
    counter); else the namespaces that do hold keys under ``cache_prefix``, from a SCAN of at
    most 10,000 keys, for the message that says so (:func:`missing_namespace_message`)."""
    base = KeyLayout(cache_prefix).base(namespace)
    if not (yield from _scan([f"{_glob_escape(base)}:*"], 1000, lambda keys, more: not keys)):
        return None  # stopped at the first key
    found: dict[str, None] = {}
    scanned = 0

    def collect(keys: list[str], more: bool) -> bool:
        nonlocal scanned
        for key in keys:
            held = _namespace_of(key, cache_prefix)
            if held is not None:
                found[held] = None
        scanned += len(keys)
        return scanned < 10_000

    yield from _scan([f"{_glob_escape(cache_prefix)}:{{*"], 1000, collect)
    return sorted(found)


def missing_namespace_message(namespace: str, cache_prefix: str, held: Sequence[str]) -> str:
    listed = ", ".join(map(repr, held)) or "none"
    return (
        f"no cache namespace {namespace!r} under {cache_prefix!r}: nothing to invalidate "
        f"(namespaces holding keys there: {listed})"
    )
