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
    "conditional_headers",
    "content_etag",
    "directives",
    "explicit_lifetime",
    "header",
    "heuristic_lifetime",
    "http_date",
    "modified_since",
    "none_match",
    "refusal",
    "request_accepts",
    "stale_window",
    "targeted_directives",
    "updated_headers",
    "vary_names",
]

Headers = Sequence[tuple[bytes, bytes]]

#: Statuses "heuristically cacheable" by default (RFC 9110 15.1); a cached 404 replays as 404.
CACHEABLE_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
#: Statuses whose caching rules this cache knows (RFC 9110 15): ``must-understand`` lets it
#: store these despite ``no-store`` (RFC 9111 5.2.2.3).
UNDERSTOOD_STATUSES: Final = CACHEABLE_STATUSES | frozenset(
    {201, 202, 302, 303, 307, 400, 401, 403, 406, 408, 409, 411, 412, 413, 415, 416, 417, 421}
    | {422, 426, 500, 502, 503, 504, 505}
)
#: Request directives that change which stored response may answer (RFC 9111 5.2.1); the
#: others (and unknown ones, which must be ignored) do not.
REQUEST_FRESHNESS_DIRECTIVES: Final = frozenset({"max-age", "min-fresh", "max-stale"})
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
# The three forms of RFC 9110 5.6.7 and nothing else; names in any case, as 5.6.7 asks
# recipients to be robust (a wrong-case Expires is still the date it names).
_IMF_FIXDATE: Final = re.compile(
    rf"(?:{'|'.join(_DAYS)}), (?P<day>\d\d) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT",
    re.IGNORECASE,
)
_RFC850_DATE: Final = re.compile(
    rf"(?:{'|'.join(_LONG_DAYS)}), (?P<day>\d\d)-{_MONTH}-(?P<year>\d\d) {_TIME} GMT",
    re.IGNORECASE,
)
_ASCTIME_DATE: Final = re.compile(
    rf"(?:{'|'.join(_DAYS)}) {_MONTH} (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})",
    re.IGNORECASE,
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
    month = 1 + _MONTHS.index(found["month"].capitalize())
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


def explicit_lifetime(
    headers: Headers, response_directives: Mapping[str, str | None], *, targeted: bool = False
) -> float | None:
    """s-maxage, else max-age, else Expires minus Date (seconds); None when the response gives
    no lifetime. A targeted field's directives (``targeted``) replace Expires too (RFC 9213)."""
    for name in ("s-maxage", "max-age"):
        if name in response_directives:
            seconds = _seconds(response_directives[name])
            # An invalid value makes the response stale (RFC 9111 4.2.1).
            return float(seconds) if seconds is not None else 0.0
    expires = None if targeted else header(headers, b"expires")
    if expires is None:
        return None
    expires_at = http_date(expires)
    if expires_at is None:
        return 0.0  # an invalid Expires means "already expired" (RFC 9111 5.3)
    return max(0.0, expires_at - _sent_at(headers))


def _sent_at(headers: Headers) -> float:
    date = header(headers, b"date")
    sent_at = http_date(date) if date is not None else None
    return sent_at if sent_at is not None else time.time()


#: The share of a response's age at Last-Modified a heuristic lifetime may take (RFC 9111
#: 4.2.2 suggests 10 %).
LAST_MODIFIED_FRACTION: Final = 0.1


#: The longest heuristic lifetime taken from Last-Modified when no default caps it (a day, the
#: age past which HTTP/1.1 caches once had to warn that they guessed).
LONGEST_HEURISTIC: Final = 86_400.0


def heuristic_lifetime(
    headers: Headers, cap: float | None, fraction: float = LAST_MODIFIED_FRACTION
) -> float:
    """A lifetime for a response that gives none (RFC 9111 4.2.2): ``fraction`` of the time
    since its ``Last-Modified``, at most ``cap`` (:data:`LONGEST_HEURISTIC` when None); without
    a Last-Modified, ``cap`` (0 when None: no heuristic)."""
    last_modified = header(headers, b"last-modified")
    modified_at = http_date(last_modified) if last_modified is not None else None
    if modified_at is None or fraction <= 0:
        return 0.0 if cap is None else float(cap)
    longest = LONGEST_HEURISTIC if cap is None else float(cap)
    return max(0.0, min(longest, fraction * (_sent_at(headers) - modified_at)))


#: Response directives under which a stale response must not be served: ``s-maxage`` carries
#: ``proxy-revalidate`` for a shared cache (RFC 9111 4.2.4, 5.2.2.10).
NO_STALE: Final = frozenset({"no-cache", "must-revalidate", "proxy-revalidate", "s-maxage"})


def stale_window(response_directives: Mapping[str, str | None], name: str, grace: float) -> float:
    """How long past its freshness a response may still answer under RFC 5861's ``name``
    (``stale-if-error``: while the app fails; ``stale-while-revalidate``: while it is asked
    again in the background): its own directive or the cache's ``grace``, the longer; 0 where
    a directive forbids serving it stale."""
    if NO_STALE & response_directives.keys():
        return 0.0
    own = _seconds(response_directives.get(name)) or 0
    return float(max(own, grace))


def request_accepts(
    age: float,
    lifetime: float,
    request_directives: Mapping[str, str | None],
    response_directives: Mapping[str, str | None],
) -> bool:
    """Whether a stored response of this age may answer without asking the app: fresh and as
    fresh as the request's ``max-age``/``min-fresh`` ask, or stale within its ``max-stale``
    where the response allows stale use (RFC 9111 5.2.1)."""
    max_age = _seconds(request_directives.get("max-age"))
    if max_age is not None and age > max_age:
        return False
    min_fresh = _seconds(request_directives.get("min-fresh"))
    if min_fresh is not None and lifetime - age < min_fresh:
        return False
    if age < lifetime:
        return True
    if "max-stale" not in request_directives or NO_STALE & response_directives.keys():
        return False
    max_stale = request_directives["max-stale"]
    allowed = _seconds(max_stale)
    return max_stale is None or (allowed is not None and age - lifetime <= allowed)


# RFC 8941 dictionary members as RFC 9213 needs them: a key, then an integer, token or string.
_TARGETED_MEMBER: Final = re.compile(
    rb'([a-z*][a-z0-9_.*-]*)(?:=(\d{1,15}|[a-z*][a-z0-9!#$%&\'*+.^_`|~:/-]*|"[^"\\]*"))?',
    re.IGNORECASE,
)


def targeted_directives(headers: Headers, name: bytes) -> dict[str, str | None] | None:
    """The directives of a targeted cache-control field such as ``CDN-Cache-Control`` (RFC
    9213), or None when it is absent or not a valid structured field (then Cache-Control
    applies). A numeric directive given as a string makes the field invalid."""
    raw = header(headers, name)
    if raw is None:
        return None
    found: dict[str, str | None] = {}
    for member in _split(raw):
        match = _TARGETED_MEMBER.fullmatch(member.strip(b" \t"))
        if match is None:
            return None
        key = match[1].lower().decode("latin-1")
        value = match[2]
        if value is not None and value.startswith(b'"'):
            if key in _NUMERIC_DIRECTIVES:
                return None
            value = value[1:-1]
        found.setdefault(key, None if value is None else value.decode("latin-1"))
    return found


_NUMERIC_DIRECTIVES: Final = frozenset(
    {"max-age", "s-maxage", "stale-if-error", "stale-while-revalidate"}
)


def updated_headers(stored: Headers, fresh: Headers) -> list[tuple[bytes, bytes]]:
    """The stored response's header fields updated from a 304 (RFC 9111 3.2): each field the
    304 carries replaces the stored one of that name, except those a cache does not take from
    it (its framing, Set-Cookie, which is never stored, and the cache's own fields)."""
    replaced = {name.lower() for name, _ in fresh} - _NOT_UPDATED
    updated: list[tuple[bytes, bytes]] = []
    placed: set[bytes] = set()
    # A replaced field takes the place of its first stored occurrence: an unchanged 304 then
    # leaves the stored fields exactly as they were.
    for name, value in stored:
        lower = name.lower()
        if lower not in replaced:
            updated.append((name, value))
        elif lower not in placed:
            placed.add(lower)
            updated += [(n, v) for n, v in fresh if n.lower() == lower]
    added = replaced - placed
    return updated + [(n, v) for n, v in fresh if n.lower() in added]


_NOT_UPDATED: Final = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"trailer",
        b"upgrade",
        b"set-cookie",
        b"age",
        b"x-cache",
    }
)


def conditional_headers(headers: Headers, own_etag: bytes | None) -> list[tuple[bytes, bytes]]:
    """What a cache sends the app to revalidate a stored response (RFC 9111 4.3.1): its
    ``ETag`` (the app's own, not one this cache computed) and its ``Last-Modified``."""
    sent: list[tuple[bytes, bytes]] = []
    if own_etag is not None:
        sent.append((b"if-none-match", own_etag))
    last_modified = header(headers, b"last-modified")
    if last_modified is not None and http_date(last_modified) is not None:
        sent.append((b"if-modified-since", last_modified))
    return sent


def modified_since(if_modified_since: bytes | None, headers: Headers) -> bool | None:
    """None when If-Modified-Since does not apply (absent, or not a date); else whether the
    response's Last-Modified (its Date when it has none) is later (RFC 9110 13.1.3)."""
    since = http_date(if_modified_since) if if_modified_since is not None else None
    if since is None:
        return None
    stamp = header(headers, b"last-modified") or header(headers, b"date")
    changed_at = http_date(stamp) if stamp is not None else None
    return changed_at is None or changed_at > since


def vary_names(headers: Headers) -> tuple[str, ...] | None:
    """The request headers a response varies on, lower-case and sorted; None for ``Vary: *``."""
    raw = header(headers, b"vary")
    if raw is None:
        return ()
    names = sorted({part.lower().decode("latin-1") for part in _split(raw)})
    return None if "*" in names else tuple(names)


#: Request fields whose values compare without case (RFC 9110 codings, languages, charsets).
_CASELESS_FIELDS: Final = frozenset({"accept-encoding", "accept-language", "accept-charset", "te"})


def vary_values(request_headers: Headers, names: Iterable[str]) -> list[str | None]:
    """What the request sent for each header of a Vary list, normalised (RFC 9111 4.1): list
    members trimmed and joined by ", ", runs of whitespace made one space, and lower case for
    fields whose values ignore it. None: absent, which then matches only another absent one."""
    values: list[str | None] = []
    for name in names:
        value = header(request_headers, name.encode("latin-1"))
        if value is None:
            values.append(None)
            continue
        members = [b" ".join(member.split()) for member in _split(value)]
        text = b", ".join(members).decode("latin-1")
        values.append(text.lower() if name in _CASELESS_FIELDS else text)
    return values


_BYTE_RANGE: Final = re.compile(rb"bytes=[ \t]*(\d*)-(\d*)[ \t]*")


def byte_range(range_header: bytes, length: int) -> tuple[int, int] | None:
    """The one byte range a ``Range`` asks of a representation of ``length`` bytes, as
    (first, last) inclusive (RFC 9110 14.1.2); None to answer in full, which a cache may
    always do: several ranges, another unit, bad syntax or a range past the end."""
    found = _BYTE_RANGE.fullmatch(range_header.strip())
    if found is None or not (found[1] or found[2]):
        return None
    if not found[1]:  # a suffix: the last N bytes
        suffix = int(found[2])
        return (max(0, length - suffix), length - 1) if suffix and length else None
    first = int(found[1])
    last = min(int(found[2]), length - 1) if found[2] else length - 1
    return (first, last) if first <= last else None


def content_etag(body: bytes) -> bytes:
    """A strong ETag from the content alone: the same bytes get the same tag in every process."""
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'


def _opaque(tag: bytes) -> bytes:
    return tag[2:] if tag.startswith(b"W/") else tag


def same_validator(headers: Headers, etag: bytes) -> bool:
    """Whether a 304 is about the stored response of this ETag: it names no ETag, or the
    same one (weak comparison; RFC 9111 4.3.4)."""
    sent = header(headers, b"etag")
    return sent is None or _opaque(sent.strip()) == _opaque(etag.strip())


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


def has_validator(headers: Headers) -> bool:
    return header(headers, b"etag") is not None or header(headers, b"last-modified") is not None


def refusal(
    status: int,
    headers: Headers,
    response_directives: Mapping[str, str | None],
    request: RequestFacts,
    *,
    targeted: bool = False,
) -> str | None:
    """Why a response must not be stored, or None when a shared cache may store it (RFC 9111
    3): a final status that is heuristically cacheable, or any final status with explicit
    freshness or ``public``. ``headers`` are the app's own (before this cache adds an ETag)."""
    final = status >= 200 and status not in (206, 304)
    explicit = explicit_lifetime(headers, response_directives, targeted=targeted) is not None
    if not final or not (
        status in CACHEABLE_STATUSES or explicit or "public" in response_directives
    ):
        return f"status {status}"
    understood = "must-understand" in response_directives and status in UNDERSTOOD_STATUSES
    if "no-store" in response_directives and not understood:
        return "no-store"
    if "no-cache" in response_directives and not has_validator(headers):
        return "no-cache without a validator (it could never be revalidated)"
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
    return None
