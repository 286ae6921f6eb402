"""Answer conditional requests cheaply in a Starlette or FastAPI app (RFC 9110 8.8, 13).

When a response :class:`~redis_checkpoint.web.CacheMiddleware` stored goes stale, the cache asks
the app again with ``If-None-Match`` / ``If-Modified-Since``; a ``304`` refreshes the stored
entry without sending the body again. Compute a cheap version first, answer 304 when it is the
one the client holds, and build the expensive body only otherwise::

    from fastapi import FastAPI, Request, Response
    from redis_checkpoint.web.validators import not_modified, validator_headers

    app = FastAPI()

    @app.get("/reports/{report_id}")
    async def report(report_id: str, request: Request) -> Response:
        version, updated_at = await db.report_version(report_id)  # cheap
        cache = {"Cache-Control": "max-age=60"}
        unchanged = not_modified(
            request, etag=version, last_modified=updated_at, headers=cache
        )
        if unchanged is not None:
            return unchanged
        body = await render_report(report_id)  # expensive
        headers = {**cache, **validator_headers(etag=version, last_modified=updated_at)}
        return Response(body, media_type="text/html", headers=headers)

Needs Starlette (the ``asgi`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from redis_checkpoint.web.rfc9111 import header, modified_since, none_match

__all__ = ["format_etag", "format_http_date", "not_modified", "validator_headers"]

#: The methods If-Modified-Since applies to and, here, the only ones answered with a 304.
_GET_OR_HEAD: Final = frozenset({"GET", "HEAD"})


def _check_opaque(opaque: str, given: str) -> None:
    """Refuse what is not ``etagc`` (RFC 9110 8.8.3): a quote, a space or a control character
    would end the tag early or split the header, and then no revalidation could ever match."""
    for char in opaque:
        code = ord(char)
        if char == '"':
            raise ValueError(f"entity tag {given!r} has a double quote inside")
        if code <= 0x20 or code == 0x7F:
            raise ValueError(f"entity tag {given!r} has a space or control character {char!r}")
        if code > 0xFF:  # header values travel as latin-1
            raise ValueError(f"entity tag {given!r} has {char!r}, which is not latin-1")


def format_etag(tag: str | bytes, *, weak: bool = False) -> str:
    """An ``ETag`` value: ``abc`` gives ``"abc"``; a tag already quoted (``"abc"`` or
    ``W/"abc"``) is kept as it is; anything else is the tag's content (``W/abc`` gives
    ``"W/abc"``). ``weak=True`` makes it ``W/"abc"``; a weak tag stays weak without it.
    ValueError for a tag with a quote inside, a space or a control character."""
    text = tag.decode("latin-1") if isinstance(tag, bytes) else tag
    prefix = ""
    opaque = text
    if text.startswith('W/"'):
        prefix, opaque = "W/", text[2:]
    if opaque.startswith('"'):
        if len(opaque) < 2 or not opaque.endswith('"'):
            raise ValueError(f"entity tag {text!r} opens a quote it does not close")
        opaque = opaque[1:-1]
    _check_opaque(opaque, text)
    return f'{"W/" if weak else prefix}"{opaque}"'


def format_http_date(moment: datetime | float) -> str:
    """An HTTP date in IMF-fixdate form, ``Sun, 06 Nov 1994 08:49:37 GMT`` (RFC 9110 5.6.7),
    from an aware datetime or a POSIX timestamp; fractions of a second are dropped, as the
    format has none. ValueError for a naive datetime (its time zone would be a guess)."""
    if isinstance(moment, datetime) and moment.utcoffset() is None:
        raise ValueError(
            f"format_http_date needs an aware datetime, got the naive {moment!r}: "
            "pass e.g. datetime.now(timezone.utc)"
        )
    try:
        if isinstance(moment, datetime):
            utc = moment.astimezone(timezone.utc)
        else:
            utc = datetime.fromtimestamp(moment, timezone.utc)
    except (OverflowError, OSError, ValueError) as error:
        # NaN, infinities and moments past year 9999 in UTC have no HTTP date.
        raise ValueError(f"{moment!r} is not a moment an HTTP date can hold") from error
    # email.utils writes English names whatever the locale (strftime would not) and drops
    # the fraction of a second.
    return format_datetime(utc, usegmt=True)


def validator_headers(
    *, etag: str | bytes | None = None, last_modified: datetime | float | None = None
) -> dict[str, str]:
    """The ``ETag`` and ``Last-Modified`` headers for a full response (those given)."""
    found: dict[str, str] = {}
    if etag is not None:
        found["ETag"] = format_etag(etag)
    if last_modified is not None:
        found["Last-Modified"] = format_http_date(last_modified)
    return found


def not_modified(
    request: Request,
    *,
    etag: str | bytes | None = None,
    last_modified: datetime | float | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response | None:
    """A ``304 Not Modified`` when the request's conditional headers say the client's copy is
    current, else None (build the full response then).

    Follows RFC 9110 13.2.2 for GET and HEAD: ``If-None-Match``, when present, decides alone
    (weak comparison; ``*`` matches when there is an ``etag``). Otherwise
    ``If-Modified-Since`` does, when ``last_modified`` is given, at one-second resolution (a
    ``last_modified`` of 12:00:00.7 has not changed since 12:00:00); an invalid date is
    ignored. Any other method gets None: the 412 Precondition Failed that unsafe methods call
    for is out of scope.

    The 304 has no body and carries the validators and ``headers``: pass the Cache-Control and
    Vary of the full response, so caches keep the same rules. The validators win over a
    same-named header in ``headers``.
    """
    if request.method not in _GET_OR_HEAD:
        return None
    found = validator_headers(etag=etag, last_modified=last_modified)
    sent = request.headers.raw
    if_none_match = header(sent, b"if-none-match")
    if if_none_match is not None:
        current = found.get("ETag")
        tag = current.encode("latin-1") if current is not None else None
        unchanged = none_match(if_none_match, tag)
    elif "Last-Modified" in found:
        # The formatted date has whole seconds, which gives the comparison its resolution.
        stored = [(b"last-modified", found["Last-Modified"].encode("latin-1"))]
        unchanged = modified_since(header(sent, b"if-modified-since"), stored) is False
    else:
        return None
    if not unchanged:
        return None
    own = {name.lower() for name in found}
    extra = {name: value for name, value in (headers or {}).items() if name.lower() not in own}
    return Response(status_code=304, headers={**extra, **found})
