"""What Redis holds per cache type: server facts (INFO) and a bounded keyspace sample (SCAN).

Both are plans (:mod:`.plan`): the health monitor, the management API and the CLI run them on a
sync or an asyncio client. The sample SCANs only the package's own key prefixes, stops after
``max_keys`` keys (so a large keyspace costs a bounded, known amount of work) and sizes each key
with ``MEMORY USAGE``; ``complete`` says whether it saw every key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from redis_checkpoint.cache.stats import default_cache_type
from redis_checkpoint.ops.plan import PRIMARIES, OnNode, Plan

__all__ = [
    "KeyspaceSample",
    "ServerFacts",
    "cache_namespaces_plan",
    "keyspace_plan",
    "namespace_in_use_plan",
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _info_fields(replies: Sequence[Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for reply in replies:
        if isinstance(reply, Mapping):
            merged.update({_text(k): v for k, v in reply.items()})
    return {name: merged[name] for name in INFO_FIELDS if name in merged}


def server_facts_plan(clock: Any = time.perf_counter) -> Plan[ServerFacts]:
    """PING (timed alone, so the figure is one round trip), then INFO in one round trip."""
    start = clock()
    yield (("PING",),)
    ping_ms = (clock() - start) * 1000
    replies = yield (("INFO", "server"), ("INFO", "clients"), ("INFO", "memory"), ("INFO", "stats"))
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
) -> str | None:
    """The cache type a key belongs to, or None when it is none of the package's."""
    for prefix in checkpoint_prefixes:
        if key.startswith(f"{prefix}:cp:"):
            return "checkpoint"
    for prefix in cache_prefixes:
        if key.startswith(f"{prefix}:{{"):
            end = key.find("}", len(prefix) + 2)
            if end < 0:
                return None
            namespace = unquote(key[len(prefix) + 2 : end])
            if namespace_types and namespace in namespace_types:
                return namespace_types[namespace]
            return default_cache_type(namespace)
    return None


def keyspace_plan(
    checkpoint_prefixes: Sequence[str] = ("rc",),
    cache_prefixes: Sequence[str] = ("rc:cache",),
    *,
    max_keys: int = 10_000,
    namespace_types: Mapping[str, str] | None = None,
    batch: int = 500,
) -> Plan[KeyspaceSample]:
    """SCAN the package's prefixes (at most ``max_keys`` keys) and size what it finds."""
    if max_keys < 1:
        raise ValueError(f"max_keys={max_keys!r} must be >= 1")
    sample = KeyspaceSample()
    patterns = [f"{_glob_escape(p)}:cp:*" for p in checkpoint_prefixes]
    patterns += [f"{_glob_escape(p)}:{{*" for p in cache_prefixes]
    nodes = yield PRIMARIES  # every primary of a cluster, each scanned on its own
    for node in nodes:
        for pattern in dict.fromkeys(patterns):
            cursor: Any = 0
            while True:
                scan = ("SCAN", cursor, "MATCH", pattern, "COUNT", batch)
                [(cursor, keys)] = yield (OnNode(node, scan),)
                if isinstance(cursor, Mapping):  # a cluster client: {node name: cursor}
                    [cursor] = cursor.values()
                keys = [_text(k) for k in keys][: max_keys - sample.scanned]
                if keys:
                    sizes = yield tuple(("MEMORY", "USAGE", key) for key in keys)
                    for key, size in zip(keys, sizes, strict=True):
                        kind = classify(key, checkpoint_prefixes, cache_prefixes, namespace_types)
                        if kind is not None and size is not None:  # None: expired meanwhile
                            sample.add(kind, int(size))
                    sample.scanned += len(keys)
                if int(cursor) == 0:
                    break
                if sample.scanned >= max_keys:
                    sample.complete = False
                    return sample
    return sample


def namespace_in_use_plan(base: str, *, batch: int = 1000) -> Plan[bool]:
    """Whether Redis holds any key under a cache namespace's ``base`` (``prefix:{namespace}``):
    an entry, a tag set or its generation counter. SCANs until the first one is found."""
    pattern = f"{_glob_escape(base)}:*"
    nodes = yield PRIMARIES
    for node in nodes:
        cursor: Any = 0
        while True:
            [(cursor, keys)] = yield (
                OnNode(node, ("SCAN", cursor, "MATCH", pattern, "COUNT", batch)),
            )
            if keys:
                return True
            if isinstance(cursor, Mapping):  # a cluster client: {node name: cursor}
                [cursor] = cursor.values()
            if int(cursor) == 0:
                break
    return False


def cache_namespaces_plan(cache_prefix: str, *, max_keys: int = 10_000) -> Plan[list[str]]:
    """The cache namespaces that hold keys under ``cache_prefix`` (a long one as the digest its
    keys carry), from a SCAN of at most ``max_keys`` keys."""
    head = f"{cache_prefix}:{{"
    found: dict[str, None] = {}
    scanned = 0
    nodes = yield PRIMARIES
    for node in nodes:
        cursor: Any = 0
        while scanned < max_keys:
            scan = ("SCAN", cursor, "MATCH", f"{_glob_escape(head)}*", "COUNT", 1000)
            [(cursor, keys)] = yield (OnNode(node, scan),)
            for key in keys:
                text = _text(key)
                end = text.find("}", len(head))
                if end > 0:  # else not one of the engine's keys
                    found[unquote(text[len(head) : end])] = None
            scanned += len(keys)
            if isinstance(cursor, Mapping):
                [cursor] = cursor.values()
            if int(cursor) == 0:
                break
    return sorted(found)
