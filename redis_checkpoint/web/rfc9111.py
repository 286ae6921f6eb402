"""The rules of a shared HTTP cache (RFC 9111, with validators from RFC 9110), as pure functions.

No I/O here: the ASGI middleware asks these functions what it may store, for how long, what a
request matches and when to answer 304.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = [
    "CACHEABLE_STATUSES",
    "Headers",
    "content_etag",
    "directives",
    "freshness_lifetime",
    "header",
    "none_match",
    "refusal",
    "vary_names",
]

Headers = Sequence[tuple[bytes, bytes]]

#: Statuses "heuristically cacheable" by default (RFC 9110 15.1); a cached 404 replays as 404.
CACHEABLE_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


def header(headers: Headers, name: bytes) -> bytes | None:
    """All values of a header joined by ", " (RFC 9110 5.3), or None when it is absent."""
    values = [value for key, value in headers if key.lower() == name]
    if not values:
        return None
    return b", ".join(value.strip() for value in values)


def _split(value: bytes) -> list[bytes]:
    """Split a list header on commas outside quoted strings."""
    parts: list[bytes] = []
    current = bytearray()
    quoted = False
    for char in value:
        if char == 0x22:  # "
            quoted = not quoted
        if char == 0x2C and not quoted:  # ,
            parts.append(bytes(current).strip())
            current.clear()
        else:
            current.append(char)
    parts.append(bytes(current).strip())
    return [part for part in parts if part]


def directives(headers: Headers, name: bytes = b"cache-control") -> dict[str, str | None]:
    """Cache-Control directives by lower-case name; a value without quotes; None when absent."""
    found: dict[str, str | None] = {}
    raw = header(headers, name)
    if raw is None:
        return found
    for part in _split(raw):
        key, sep, value = part.partition(b"=")
        text = key.strip().lower().decode("latin-1")
        # The first occurrence wins (RFC 9111 4.2.1 lets a cache pick; the strictest is safest
        # for no-store/private, which carry no value and so cannot disagree).
        if text not in found:
            found[text] = value.strip().strip(b'"').decode("latin-1") if sep else None
    return found


def _seconds(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


def freshness_lifetime(
    headers: Headers, response_directives: Mapping[str, str | None], default: float
) -> float:
    """s-maxage, else max-age, else Expires minus Date, else ``default`` (seconds)."""
    for name in ("s-maxage", "max-age"):
        if name in response_directives:
            seconds = _seconds(response_directives[name])
            # An invalid value makes the response stale (RFC 9111 4.2.1).
            return float(seconds) if seconds is not None else 0.0
    expires = header(headers, b"expires")
    if expires is not None:
        try:
            expires_at = parsedate_to_datetime(expires.decode("latin-1")).timestamp()
            date = header(headers, b"date")
            now = (
                parsedate_to_datetime(date.decode("latin-1")).timestamp()
                if date is not None
                else time.time()
            )
        except (TypeError, ValueError, IndexError):
            return 0.0  # an invalid Expires means "already expired"
        return max(0.0, expires_at - now)
    return float(default)  # a rule's ttl may be an int; stored lifetimes are floats


def vary_names(headers: Headers) -> tuple[str, ...] | None:
    """The request headers a response varies on, lower-case and sorted; None for ``Vary: *``."""
    raw = header(headers, b"vary")
    if raw is None:
        return ()
    names = sorted({part.lower().decode("latin-1") for part in _split(raw)})
    return None if "*" in names else tuple(names)


def vary_values(request_headers: Headers, names: Iterable[str]) -> list[str | None]:
    """What the request sent for each header of a Vary list (None: absent, which then matches
    only another absent header)."""
    values: list[str | None] = []
    for name in names:
        value = header(request_headers, name.encode("latin-1"))
        values.append(None if value is None else b" ".join(value.split()).decode("latin-1"))
    return values


def content_etag(body: bytes) -> bytes:
    """A strong ETag from the content alone: the same bytes get the same tag in every process."""
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'


def _opaque(tag: bytes) -> bytes:
    return tag[2:] if tag.startswith(b"W/") else tag


def none_match(if_none_match: bytes | None, etag: bytes | None) -> bool:
    """Whether If-None-Match matches (weak comparison over a list, or ``*``): answer 304."""
    if if_none_match is None or etag is None:
        return False
    tags = _split(if_none_match)
    if tags == [b"*"]:
        return True
    wanted = _opaque(etag.strip())
    return any(_opaque(tag) == wanted for tag in tags)


@dataclass(frozen=True)
class RequestFacts:
    """What the storing decision needs to know about the request."""

    authorization: bool
    per_user: bool


def refusal(
    status: int,
    headers: Headers,
    response_directives: Mapping[str, str | None],
    request: RequestFacts,
) -> str | None:
    """Why a final response must not be stored, or None when a shared cache may store it."""
    if status not in CACHEABLE_STATUSES:
        return f"status {status}"
    if "no-store" in response_directives:
        return "no-store"
    if "no-cache" in response_directives:
        return "no-cache (we do not revalidate)"
    if "private" in response_directives and not request.per_user:
        return "private"
    if header(headers, b"set-cookie") is not None:
        return "Set-Cookie"
    if request.authorization and not request.per_user:
        allowed = {"public", "s-maxage", "must-revalidate"}
        if not allowed.intersection(response_directives):
            return "Authorization without public, s-maxage or must-revalidate"
    if vary_names(headers) is None:
        return "Vary: *"
    if header(headers, b"content-range") is not None:
        return "partial content"
    return None
