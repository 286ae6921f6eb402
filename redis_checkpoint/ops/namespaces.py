"""The store's namespaces as an operator sees them: read from its registry, with item counts.

:func:`store_namespaces_plan` is a plan (:mod:`.plan`) the management API and the CLI run on a
sync or an asyncio client. It reads only: one ``ZRANGEBYSCORE`` of the registry (the namespaces
whose items have not all expired), then per namespace shown ``HLEN`` of its items and ``ZCOUNT``
of those already expired, a chunk per round trip. It never prunes the registry (the store does
that on its own reads).

Namespaces are spelled as labels joined by a separator (``/`` in the CLI, ``.`` in the API's
query string); a backslash makes the next character part of the label, so any label can be
written, and a namespace is shown the way it would be written (never percent-encoded as in
its keys).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis_checkpoint.client import reply_text
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.steps import Plan, Send
from redis_checkpoint.store.layout import StoreLayout

__all__ = [
    "NamespaceListing",
    "format_namespace",
    "missing_store_prefix_message",
    "parse_namespace",
    "store_namespaces_plan",
]

#: Namespaces counted per round trip.
COUNT_CHUNK = 500
#: First labels named at most in the message for a prefix that matches nothing.
HELD_SHOWN = 20


def parse_namespace(text: str, separator: str) -> tuple[str, ...]:
    """``"a/b"`` (separator ``/``) as ``("a", "b")``; ``\\`` makes the next character plain
    (``"a\\/b"`` is the one label ``a/b``). ``""`` is the empty prefix."""
    if not text:
        return ()
    labels: list[str] = []
    label: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            label.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            labels.append("".join(label))
            label = []
        else:
            label.append(char)
    if escaped:
        raise ConfigurationError(f"namespace {text!r} ends with a lone backslash")
    labels.append("".join(label))
    if "" in labels:
        raise ConfigurationError(
            f"namespace {text!r} has an empty label: labels are joined by {separator!r}"
        )
    return tuple(labels)


def format_namespace(namespace: Sequence[str], separator: str) -> str:
    """The spelling :func:`parse_namespace` reads back as ``namespace``."""
    return separator.join(
        label.replace("\\", "\\\\").replace(separator, "\\" + separator) for label in namespace
    )


@dataclass
class NamespaceListing:
    """The namespaces under ``prefix`` the store holds, each with its live items, sorted."""

    prefix: tuple[str, ...]
    namespaces: list[tuple[tuple[str, ...], int]] = field(default_factory=list)
    more: bool = False  # more namespaces under the prefix than the limit let through
    held: list[str] = field(default_factory=list)  # when none matched: first labels held

    @property
    def missing(self) -> bool:
        """A prefix was given and no namespace under it holds an item."""
        return bool(self.prefix) and not self.namespaces and not self.more

    def as_dict(self) -> dict[str, Any]:
        return {
            "prefix": list(self.prefix),
            "namespaces": [{"namespace": list(ns), "items": n} for ns, n in self.namespaces],
            "more": self.more,
        }


def store_namespaces_plan(
    key_prefix: str,
    prefix: Sequence[str] = (),
    *,
    limit: int | None = None,
    clock: Any = time.time,
) -> Plan[NamespaceListing]:
    """The namespaces of the store under ``key_prefix`` that start with the labels ``prefix``,
    at most ``limit`` (None: all), with their live item counts."""
    layout = StoreLayout(key_prefix)
    wanted = tuple(prefix)
    now = int(clock() * 1000)
    [tags] = yield Send((("ZRANGEBYSCORE", layout.registry, now, "+inf"),))
    registered = sorted(layout.namespace(reply_text(tag)) for tag in tags)
    candidates = [ns for ns in registered if ns[: len(wanted)] == wanted]
    listing = NamespaceListing(wanted)
    checked = 0

    def done() -> bool:
        # The page is full, and one namespace is known to be live (even with limit 0).
        full = limit is not None and len(listing.namespaces) >= limit
        return full and bool(listing.namespaces or listing.more)

    while checked < len(candidates) and not done():
        chunk = candidates[checked : checked + COUNT_CHUNK]
        checked += len(chunk)
        commands: list[tuple[Any, ...]] = []
        for ns in chunk:
            keys = layout.keys(ns)
            commands += [("HLEN", keys.items), ("ZCOUNT", keys.expiries, "-inf", now)]
        replies = yield Send(tuple(commands))
        for n, ns in enumerate(chunk):
            live = int(replies[2 * n]) - int(replies[2 * n + 1])
            if live <= 0:
                continue  # emptied or expired since the registry last heard of it
            if limit is None or len(listing.namespaces) < limit:
                listing.namespaces.append((ns, live))
            else:
                listing.more = True
    listing.more = listing.more or checked < len(candidates)
    if listing.missing:
        listing.held = sorted({ns[0] for ns in registered})[:HELD_SHOWN]
    return listing


def missing_store_prefix_message(
    spelled: str, key_prefix: str, held: Sequence[str], separator: str
) -> str:
    listed = ", ".join(repr(format_namespace((label,), separator)) for label in held) or "none"
    return (
        f"no store namespace under {spelled!r} (key prefix {key_prefix!r}): nothing to list "
        f"(the namespaces held there start with: {listed})"
    )
