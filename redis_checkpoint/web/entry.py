"""How the HTTP cache keys, tags and stores responses (pure functions, no I/O).

A URL's primary entry is either a stored response or, when the response had a ``Vary`` header,
a marker listing the request headers it varies on; the response itself then lives under a
secondary key made of the primary key and the request's values of those headers. GET and HEAD
share entries. Every entry is tagged with its exact path (``=host/path``) and each path prefix
(``^host/a``, ``^host/a/b``...), so an unsafe request can invalidate a URI, all its query
variants, or a whole subtree, in every process, with one tag invalidation each. The exact-path
tag also bounds how many entries one path may hold, and a rule's tag (``*host pattern``) how
many one rule may hold.

Entries are msgpack (:mod:`redis_checkpoint.cache.codec`), checked on read: anything foreign is
a miss and an error count, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.keys import digest

__all__ = [
    "StoredResponse",
    "VaryMarker",
    "decode_entry",
    "encode_entry",
    "exact_tag",
    "path_tags",
    "prefix_tag",
    "primary_key",
    "rule_tag",
    "variant_key",
]


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes
    stored_at: float
    lifetime: float
    #: Age the response already had when stored (an upstream ``Age`` header).
    initial_age: float
    #: Whether a request with Authorization may be served this (public/s-maxage/must-revalidate).
    shareable_with_auth: bool
    #: Seconds past its freshness it may still answer while the app fails (stale-if-error).
    stale_if_error: float = 0.0
    #: Seconds past its freshness it may answer while revalidated in the background.
    stale_while_revalidate: float = 0.0
    #: The conditional request headers that revalidate it (none: it cannot be revalidated).
    conditional: tuple[tuple[bytes, bytes], ...] = ()

    def age(self, now: float) -> float:
        return max(0.0, now - self.stored_at) + self.initial_age


@dataclass(frozen=True)
class VaryMarker:
    names: tuple[str, ...]


def primary_key(
    scheme: str,
    host: str,
    target: str,
    query: bytes,
    identity: str | None,
    keyed: Sequence[tuple[str, str]] = (),
) -> str:
    """The key of a URL's entry: scheme, host, the request target's path (undecoded, after the
    root path) and query as sent, the user on a per-user route, and the keyed headers (see
    :mod:`.inputs`) as received."""
    # The identity is None for shared entries and a user's id on a per-user route; a tagged
    # prefix keeps "" (a user with an empty id) apart from None.
    who = "shared" if identity is None else f"user:{identity}"
    return digest(scheme, host, target, query, who, codec.dumps([list(pair) for pair in keyed]))


def variant_key(primary: str, values: Sequence[str | None]) -> str:
    return digest(primary, codec.dumps(list(values)))


def exact_tag(host: str, path: str) -> str:
    return f"={host}{path}"


def prefix_tag(host: str, prefix: str) -> str:
    return f"^{host}{prefix.rstrip('/') or '/'}"


def rule_tag(host: str, pattern: str) -> str:
    """The tag of every entry a rule stored for ``host`` (for the rule's ``max_entries``)."""
    return f"*{host} {pattern}"


def path_tags(host: str, path: str) -> list[str]:
    """The exact tag and one prefix tag per ancestor, the root included."""
    tags = [exact_tag(host, path), prefix_tag(host, "/")]
    parts = [part for part in path.split("/") if part]
    for depth in range(1, len(parts) + 1):
        tags.append(prefix_tag(host, "/" + "/".join(parts[:depth])))
    return list(dict.fromkeys(tags))


def encode_entry(entry: StoredResponse | VaryMarker) -> bytes:
    if isinstance(entry, VaryMarker):
        return codec.dumps(["V", list(entry.names)])
    return codec.dumps(
        [
            "R",
            entry.status,
            [[name, value] for name, value in entry.headers],
            entry.body,
            entry.etag,
            entry.stored_at,
            entry.lifetime,
            entry.initial_age,
            entry.shareable_with_auth,
            entry.stale_if_error,
            entry.stale_while_revalidate,
            [[name, value] for name, value in entry.conditional],
        ]
    )


def _is_header_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(pair, list)
        and len(pair) == 2
        and isinstance(pair[0], bytes)
        and isinstance(pair[1], bytes)
        for pair in value
    )


def decode_entry(payload: bytes) -> StoredResponse | VaryMarker:
    """The entry, or ValueError for bytes this cache did not write."""
    data = codec.loads(payload)
    if isinstance(data, list) and len(data) == 2 and data[0] == "V":
        names = data[1]
        if isinstance(names, list) and all(isinstance(name, str) for name in names):
            return VaryMarker(tuple(names))
    if isinstance(data, list) and len(data) in (9, 10, 12) and data[0] == "R":
        # Nine fields: written before stale-if-error was kept; ten: before revalidation.
        _, status, headers, body, etag, stored_at, lifetime, initial_age, shareable = data[:9]
        extra: list[Any] = [*data[9:], *([0.0, 0.0, []][len(data) - 9 :])]
        stale, background, conditional = extra
        floats = (stored_at, lifetime, initial_age, stale, background)
        if (
            isinstance(status, int)
            and _is_header_list(headers)
            and _is_header_list(conditional)
            and isinstance(body, bytes)
            and isinstance(etag, bytes)
            and all(isinstance(x, float) for x in floats)
            and isinstance(shareable, bool)
        ):
            return StoredResponse(
                status,
                [(name, value) for name, value in headers],
                body,
                etag,
                stored_at,
                lifetime,
                initial_age,
                shareable,
                stale,
                background,
                tuple((name, value) for name, value in conditional),
            )
    raise ValueError("not an HTTP cache entry")
