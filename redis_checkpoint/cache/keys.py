"""Key layout of the cache engine (pure functions, no I/O).

Every key of one namespace shares the Redis Cluster hash tag ``{namespace}``::

    <prefix>:{<namespace>}:<key part>      an entry
    <prefix>:{<namespace>}:#gen            the namespace's generation counter
    <prefix>:{<namespace>}:#tag:<tag>      the set of entry keys carrying a tag
    <prefix>:{<namespace>}:#lock:<part>    the single-flight lock of an entry

One slot per namespace is what lets a batch of embeddings be one MGET, a write with tags be one
script and a tag invalidation be atomic, on a cluster as on a single server. User strings are
percent-escaped (``:``, ``{``, ``}``, ``#``, ``%`` and whitespace become ``%XX``), so nothing a
user passes can forge a hash tag or reach another namespace; a long or binary key part is
replaced by ``#`` + a 128-bit BLAKE2b digest, and a face that hashes its own keys (a prompt, a
text, a URL) passes the :class:`Digest` that :func:`digest` returns, which stays as it is. An
escaped string never contains ``#``, so a digest and a short key cannot collide, and neither can
reach the ``#gen``/``#tag``/``#lock`` keys: a plain string that looks like a digest is escaped
like any other.

:func:`derive_key` is the one key derivation of every face that keys on data (an LLM call's
arguments, a query's parameters, a decorated function's arguments, a SQLAlchemy statement).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from redis_checkpoint.cache import codec

__all__ = ["MAX_PLAIN_KEY", "Digest", "KeyLayout", "derive_key", "digest", "escape", "key_part"]

#: Key parts up to this many characters stay readable; longer ones are hashed.
MAX_PLAIN_KEY = 64


def escape(text: str) -> str:
    """Percent-escape everything but ``A-Z a-z 0-9 _ . - ~``."""
    return quote(text, safe="")


class Digest(str):
    """A key part made by :func:`digest`: already safe, so keys keep it as it is."""

    __slots__ = ()


def digest(*parts: str | bytes) -> Digest:
    """``#`` + a 128-bit BLAKE2b of the parts; the parts are length-prefixed, so
    ``("ab", "c")`` and ``("a", "bc")`` differ."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return Digest("#" + h.hexdigest())


def derive_key(*scope: str, material: Any, what: str, hint: str = "") -> Digest:
    """:func:`digest` of the ``scope`` parts and ``material`` in the codec's stable encoding.

    Material the codec cannot encode is a TypeError that names ``what`` could not be keyed
    ("for f", "from the query parameters") and, after it, ``hint`` (how to key it instead).
    """
    try:
        encoded = codec.dumps(material)
    except TypeError as exc:
        advice = f"; {hint}" if hint else ""
        raise TypeError(f"cannot build a cache key {what}: {exc}{advice}") from None
    return digest(*scope, encoded)


def key_part(key: str | bytes) -> str:
    """A :class:`Digest` as it is; else the readable escaped key when short, else its digest."""
    if isinstance(key, Digest):
        return str(key)
    if isinstance(key, str):
        escaped = escape(key)
        if len(escaped) <= MAX_PLAIN_KEY:
            return escaped
    return digest(key)


@dataclass(frozen=True)
class KeyLayout:
    """Where the engine keeps each namespace's keys under ``prefix``."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or any(c in "{}" or c.isspace() for c in self.prefix):
            raise ValueError(
                f"cache key prefix {self.prefix!r} must be non-empty, without '{{', '}}' or "
                "whitespace (braces would change the Redis Cluster hash tag)"
            )

    def base(self, namespace: str) -> str:
        if not namespace:
            raise ValueError("a cache namespace must be a non-empty string")
        return f"{self.prefix}:{{{key_part(namespace)}}}"

    def entry(self, namespace: str, key: str | bytes) -> str:
        return f"{self.base(namespace)}:{key_part(key)}"

    def generation(self, namespace: str) -> str:
        return f"{self.base(namespace)}:#gen"

    def tag(self, namespace: str, tag: str) -> str:
        return f"{self.base(namespace)}:#tag:{key_part(tag)}"

    def lock(self, namespace: str, key: str | bytes) -> str:
        return f"{self.base(namespace)}:#lock:{key_part(key)}"
