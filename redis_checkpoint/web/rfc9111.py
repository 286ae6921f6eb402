"""The rules of a shared HTTP cache (RFC 9111, with validators from RFC 9110), as pure functions.

No I/O here: the ASGI middleware asks these functions what it may store, for how long, what a
request matches and when to answer 304.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CACHEABLE_STATUSES",
    "SAFE_METHODS",
    "Headers",
    "age",
    "content_etag",
    "directives",
    "freshness_lifetime",
    "header",
    "http_date",
    "none_match",
    "refusal",
    "vary_names",
]

Headers = Sequence[tuple[bytes, bytes]]

#: Statuses "heuristically cacheable" by default (RFC 9110 15.1); a cached 404 replays as 404.
CACHEABLE_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
#: Methods known to be safe (RFC 9110 9.2.1); any other one invalidates (RFC 9111 4.4).
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# fmt: off
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# fmt: on
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH: Final = "(?P<month>" + "|".join(_MONTHS) + ")"
_TIME: Final = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
# The three forms of RFC 9110 5.6.7, case-sensitive as it says; nothing else is a date.
_IMF_FIXDATE: Final = re.compile(
    rf"(?:{'|'.join(_DAYS)}), (?P<day>\d\d) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT"
)
_RFC850_DATE: Final = re.compile(
    rf"(?:{'|'.join(_LONG_DAYS)}), (?P<day>\d\d)-{_MONTH}-(?P<year>\d\d) {_TIME} GMT"
)
_ASCTIME_DATE: Final = re.compile(
    rf"(?:{'|'.join(_DAYS)}) {_MONTH} (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})"
)


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


def http_date(value: bytes) -> float | None:
    """An HTTP-date (RFC 9110 5.6.7) as a POSIX timestamp; None when it is not one."""
    text = value.decode("latin-1").strip()
    for form in (_IMF_FIXDATE, _RFC850_DATE, _ASCTIME_DATE):
        found = form.fullmatch(text)
        if found is not None:
            break
    else:
        return None
    year = int(found["year"])
    if form is _RFC850_DATE:
        # A two-digit year more than 50 years ahead is the last such year in the past.
        this_year = time.gmtime().tm_year
        year += this_year - this_year % 100
        if year > this_year + 50:
            year -= 100
    month = 1 + _MONTHS.index(found["month"])
    day, hour, minute, second = (int(found[name]) for name in ("day", "hour", "minute", "second"))
    if not 1 <= day <= calendar.monthrange(year, month)[1] or hour > 23 or minute > 59:
        return None
    if second > 60:  # 60: a leap second, counted as 59
        return None
    return float(calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0)))


def age(headers: Headers) -> float:
    """The ``Age`` a response arrived with: the first member of a list, 0 when absent or not a
    non-negative integer (RFC 9111 5.1)."""
    raw = header(headers, b"age")
    if raw is None:
        return 0.0
    first = raw.split(b",", 1)[0].strip()
    return float(first) if first.isdigit() else 0.0


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
        expires_at = http_date(expires)
        if expires_at is None:
            return 0.0  # an invalid Expires means "already expired" (RFC 9111 5.3)
        date = header(headers, b"date")
        sent_at = http_date(date) if date is not None else None
        return max(0.0, expires_at - (sent_at if sent_at is not None else time.time()))
    return float(default)  # a rule's ttl may be an int; stored lifetimes are floats


#: Response directives under which a stale response must not be served: ``s-maxage`` carries
#: ``proxy-revalidate`` for a shared cache (RFC 9111 4.2.4, 5.2.2.10).
NO_STALE: Final = frozenset({"no-cache", "must-revalidate", "proxy-revalidate", "s-maxage"})


def stale_if_error(response_directives: Mapping[str, str | None], grace: float) -> float:
    """How long past its freshness a response may still answer while the app fails: its own
    ``stale-if-error`` (RFC 5861) or the cache's ``grace``, the longer; 0 where a directive
    forbids serving it stale."""
    if NO_STALE & response_directives.keys():
        return 0.0
    own = _seconds(response_directives.get("stale-if-error")) or 0
    return float(max(own, grace))


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
