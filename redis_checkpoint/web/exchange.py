"""One request's exchange with the HTTP cache: what it asks (:class:`CacheRequest`), the
``send`` the app talks to on a miss or a revalidation (:class:`Recorder`), and the entry a
response becomes (:func:`build_entry`). :mod:`.middleware` decides which of these a request gets.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from redis_checkpoint.web import rfc9111
from redis_checkpoint.web.entry import StoredResponse

if TYPE_CHECKING:
    from redis_checkpoint.web.middleware import CacheMiddleware

__all__ = ["CacheRequest", "CacheRule", "Recorder", "build_entry", "client_copy_is_current"]

log = logging.getLogger("redis_checkpoint.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
ASGISend = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, ASGISend], Awaitable[None]]

#: Never stored: fields of one connection, and those this cache sets on each answer itself.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-authentication-info",
        b"proxy-connection",
        b"age",
        b"x-cache",
        b"content-length",
    }
)
# What a 304 carries of the full response (RFC 9110 15.4.5).
NOT_MODIFIED_HEADERS: Final = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)
X_CACHE: Final = b"x-cache"


@dataclass(frozen=True)
class CacheRule:
    """How requests whose path matches ``path`` (a glob: ``*`` matches anything, ``/`` too)
    are cached. The first matching rule wins.

    ``ttl``: lifetime when the response gives none (default: the middleware's ``default_ttl``).
    ``cache=False``: never cached (``X-Cache: BYPASS``). ``vary_user(scope)``: the identity of
    the requesting user (None: anonymous), which becomes part of the key. ``invalidates``: path
    prefixes a successful unsafe request on this route also invalidates.
    ``max_entries_per_path``: overrides the middleware's bound on the entries of one path.
    ``max_entries``: at most this many entries for all paths of the rule, per host (None: no
    bound but the per-path one); a full rule makes room by evicting random entries of its own.
    """

    path: str
    ttl: float | None = None
    cache: bool = True
    vary_user: Callable[[Scope], str | None] | None = None
    invalidates: Sequence[str] = field(default_factory=tuple)
    max_entries_per_path: int | None = None
    max_entries: int | None = None

    def __post_init__(self) -> None:
        if self.ttl is not None and not self.ttl > 0:
            raise ValueError(f"CacheRule({self.path!r}) ttl={self.ttl!r} must be > 0 seconds")
        for name in ("max_entries_per_path", "max_entries"):
            check_bound(f"CacheRule({self.path!r}) {name}", getattr(self, name))
        if isinstance(self.invalidates, str):
            raise TypeError("invalidates must be a sequence of path prefixes, e.g. ['/items']")
        for prefix in self.invalidates:
            if not prefix.startswith("/"):
                raise ValueError(f"invalidated prefix {prefix!r} must start with '/'")

    def matches(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.path)


def check_bound(what: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{what}={value!r} must be an int >= 1 (or None: no bound)")


#: What a storable response's start tells: its directives, lifetime and initial Age.
ResponsePlan = tuple[dict[str, str | None], float, float]


@dataclass
class CacheRequest:
    """What one request asks of the cache."""

    method: str
    #: The host whose tags the entry carries (see RequestInputs.site).
    site: str
    path: str
    rule: CacheRule
    headers: list[tuple[bytes, bytes]]
    key: str
    per_user: bool
    authorization: bool
    lookup: bool
    #: The request's own Cache-Control directives (max-age, min-fresh, max-stale...).
    directives: dict[str, str | None] = field(default_factory=dict)
    #: The request's Range: answered from a fresh complete entry, else sent on to the app.
    range: bytes | None = None


def client_copy_is_current(request: CacheRequest, status: int, headers: rfc9111.Headers) -> bool:
    """Whether to answer the client 304 (RFC 9110 13.1): If-None-Match matches the ETag of a
    response that would be a 2xx, or, without If-None-Match, it was not modified since."""
    if not 200 <= status < 300:
        return False
    if_none_match = rfc9111.header(request.headers, b"if-none-match")
    if if_none_match is not None:
        return rfc9111.none_match(if_none_match, rfc9111.header(headers, b"etag"))
    since = rfc9111.header(request.headers, b"if-modified-since")
    return rfc9111.modified_since(since, headers) is False


def build_entry(
    status: int,
    headers: rfc9111.Headers,
    body: bytes,
    plan: ResponsePlan,
    own_etag: bytes | None,
    graces: tuple[float, float],
) -> StoredResponse:
    """The entry a response becomes: its headers less the hop-by-hop ones and those a
    qualified ``no-cache`` names, an ETag (the app's own, else one from the body), and the
    conditional headers that can revalidate it. ``graces``: the middleware's default
    stale-if-error and stale-while-revalidate windows."""
    response_directives, lifetime, initial_age = plan
    etag = own_etag or rfc9111.header(headers, b"etag") or rfc9111.content_etag(body)
    # no-cache="field": that field must not be reused without revalidation, so it is not kept.
    qualified = response_directives.get("no-cache")
    withheld = {name.strip().lower().encode("latin-1") for name in (qualified or "").split(",")}
    # Fields the Connection header names belong to that connection (RFC 9110 7.6.1).
    connection = rfc9111.header(headers, b"connection") or b""
    hop = {name.strip().lower() for name in connection.split(b",")}
    dropped = HOP_BY_HOP | withheld | hop | {b"etag"}
    kept = [(k, v) for k, v in headers if k.lower() not in dropped]
    stale_if_error, stale_while_revalidate = graces
    return StoredResponse(
        status=status,
        headers=[*kept, (b"etag", etag)],
        body=body,
        etag=etag,
        stored_at=time.time(),
        lifetime=lifetime,
        initial_age=initial_age,
        shareable_with_auth=bool(
            {"public", "s-maxage", "must-revalidate"} & response_directives.keys()
        ),
        stale_if_error=rfc9111.stale_window(response_directives, "stale-if-error", stale_if_error),
        stale_while_revalidate=rfc9111.stale_window(
            response_directives, "stale-while-revalidate", stale_while_revalidate
        ),
        conditional=tuple(rfc9111.conditional_headers(headers, own_etag)),
    )


class Recorder:
    """The ``send`` a missed request's app talks to: forwards the response (held when small
    and storable, to add an ETag or answer 304) and keeps a copy to store. While revalidating
    a stored response, the app's 304 refreshes that entry, which then answers instead."""

    def __init__(
        self,
        middleware: CacheMiddleware,
        request: CacheRequest,
        send: ASGISend,
        stale: StoredResponse | None = None,
        revalidating: StoredResponse | None = None,
    ) -> None:
        self.middleware = middleware
        self.request = request
        self.client_send = send
        #: What answers instead of a 5xx from the app (see CacheMiddleware._miss).
        self.stale = stale
        #: The entry a conditional request to the app revalidates.
        self.revalidating = revalidating
        #: The stored entry answered (stale, or refreshed by a 304): the app's messages go
        #: nowhere.
        self.replaced = False
        #: The app's 304 named another response than the stored one: ask it again in full.
        self.retry = False
        #: Whether any message reached the client.
        self.sent = False
        self.start: Message | None = None
        self.plan: ResponsePlan | None = None
        self.held = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        #: The app read a request body: what it answered is not stored.
        self.read_body = False

    async def send(self, message: Message) -> None:
        self.sent = True
        await self.client_send(message)

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if self.replaced or self.retry:
            return
        if (
            kind == "http.response.start"
            and self.revalidating is not None
            and message["status"] == 304
        ):
            headers = list(message.get("headers", ()))
            if not rfc9111.same_validator(headers, self.revalidating.etag):
                self.retry = True
                return
            self.replaced = True
            await self.middleware._revalidated(
                self.request, self.revalidating, headers, self.client_send
            )
            return
        if kind == "http.response.start" and self.stale is not None and message["status"] in ERRORS:
            # RFC 5861's errors: the stale entry answers, and nothing of this response leaves.
            self.replaced = True
            log.warning(
                "%s %s answered %d: serving the stale entry",
                self.request.method,
                self.request.path,
                message["status"],
            )
            await self.middleware._serve_stale(self.request, self.stale, self.client_send)
            return
        if kind == "http.response.start":
            await self._started(message)
        elif kind == "http.response.body" and self.start is not None:
            await self._body(message)
        else:
            # Trailers, or a pathsend/zerocopysend extension: nothing we can store. A held
            # start must leave first.
            self.plan = None
            if self.held and self.start is not None:
                self.held = False
                start = self.start
                await self.send({**start, "headers": [*start.get("headers", ()), MISS]})
            await self.send(message)

    async def _started(self, message: Message) -> None:
        headers = list(message.get("headers", ()))
        self.start = message
        self.plan = (
            None
            if self.read_body
            else self.middleware._storable(self.request, message["status"], headers)
        )
        length = rfc9111.header(headers, b"content-length")
        content_type = rfc9111.header(headers, b"content-type") or b""
        if content_type.startswith(b"text/event-stream") or message.get("trailers"):
            self.plan = None
        self.held = (
            self.plan is not None
            and length is not None
            and length.isdigit()
            and int(length) <= self.middleware.max_body_bytes
        )
        if not self.held:
            message["headers"] = [*headers, (X_CACHE, b"MISS")]
            await self.send(message)

    async def _body(self, message: Message) -> None:
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if self.plan is not None:
            self.size += len(body)
            if self.size > self.middleware.max_body_bytes:
                self.plan = None  # too big to store (a Content-Length that lied, if held)
                if not self.held:
                    self.chunks.clear()  # streaming: stop copying
        if self.held or self.plan is not None:
            self.chunks.append(body)
        if not more:
            # Stored before the last byte leaves, so the client's next request can hit.
            self.done = True
            response = self.complete()
            if response is not None and not self.middleware._redis_away():
                await self.middleware._store(self.request, response)
        if self.held:
            if more:
                return
            await self._release()
        else:
            await self.send(message)

    async def _release(self) -> None:
        """Send the held response in one piece: with an ETag, or as a 304."""
        assert self.start is not None
        body = b"".join(self.chunks)
        headers = list(self.start.get("headers", ()))
        etag = rfc9111.header(headers, b"etag")
        if etag is None:
            etag = rfc9111.content_etag(body)
            headers.append((b"etag", etag))
        self.start["headers"] = headers
        if client_copy_is_current(self.request, self.start["status"], headers):
            kept = [(k, v) for k, v in headers if k.lower() in NOT_MODIFIED_HEADERS]
            await self.send(
                {"type": "http.response.start", "status": 304, "headers": [*kept, MISS]}
            )
            await self.send({"type": "http.response.body", "body": b""})
            return
        await self.send({**self.start, "headers": [*headers, MISS]})
        await self.send({"type": "http.response.body", "body": body})

    def complete(self) -> StoredResponse | None:
        """The response to store: complete, within the size limit, storable."""
        if not self.done or self.plan is None or self.start is None or self.read_body:
            return None
        headers = list(self.start.get("headers", ()))
        return build_entry(
            self.start["status"],
            headers,
            b"".join(self.chunks),
            self.plan,
            rfc9111.header(headers, b"etag"),
            self.middleware.graces,
        )


MISS: Final = (X_CACHE, b"MISS")
#: What RFC 5861 counts as an error a stale response may stand in for.
ERRORS: Final = frozenset({500, 502, 503, 504})
