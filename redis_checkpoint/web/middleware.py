"""CacheMiddleware: a shared HTTP cache (RFC 9111) for any ASGI app, on the cache engine.

::

    app.add_middleware(
        CacheMiddleware,
        target="redis://localhost:6379/0",
        rules=[
            CacheRule("/admin/*", cache=False),
            CacheRule("/me", vary_user=lambda scope: user_id_from(scope)),
            CacheRule("/items/*", ttl=60, invalidates=["/items"]),
        ],
        trusted_forwarding=TrustedForwarding(x_forwarded_for=1),  # behind one proxy
    )

What it does, in order of importance:

* **Never leaks a user's response to another.** Requests with ``Authorization`` are served only
  responses marked ``public``, ``s-maxage`` or ``must-revalidate`` and stored only when their own
  response says so; requests with cookies bypass the cache (``cache_cookies=True`` changes that,
  for apps whose shared pages do not depend on cookies or say ``Vary: Cookie``); ``private``
  and ``no-store`` responses and any response with ``Set-Cookie`` are never stored.
  A route whose rule has ``vary_user`` keys entries by the user the function names: deliberate
  per-user caching (``private`` responses are stored there, each for its own user only).
* **Cannot be poisoned through inputs it does not key on.** The key is the scheme, the Host
  header, the request target as sent (root path, undecoded path, query string), the user on a
  ``vary_user`` route, and every forwarding, client-address and rewrite header the request
  carries, as sent (see :mod:`.inputs`); a body on GET/HEAD or two Host headers bypass, and
  a method override makes the request an unsafe one (bypass, then invalidate).
  ``trusted_forwarding=TrustedForwarding(...)`` declares the proxies in front of the app: the
  client addresses they add leave the key and the host they name is the one invalidated.
  Other request headers are not in the key: a response that depends on one must name it in
  ``Vary``. Credential headers (``X-API-Key``...) count as ``Authorization``.
* **Bounded per path**: one path holds at most ``max_entries_per_path`` entries (1,000; query
  strings, Vary values, users), and a rule at most its ``max_entries``; a full one evicts
  random entries of its own, so a flood of random query strings cannot push out other paths.
* Honours ``Vary`` (an absent header matches only an absent one; ``Vary: *`` is never stored),
  ``s-maxage`` over ``max-age`` over ``Expires`` over the rule's TTL over ``default_ttl`` (600 s);
  sends ``Age``; stores only final responses with a cacheable status (a 404 replays as a 404).
* Adds a strong ``ETag`` computed from the body when the app sent none and answers
  ``If-None-Match`` (weak comparison, lists, ``*``) with 304; HEAD is answered from the GET entry.
* A successful (2xx/3xx) request with a method not known to be safe (anything but GET, HEAD,
  OPTIONS and TRACE: POST, PUT, PATCH, DELETE, M-SEARCH...) invalidates its path (all query
  strings and variants), the paths of its ``Location``/``Content-Location``, and the rule's
  ``invalidates`` prefixes, in every process, before its response's first byte leaves.
* Marks every response ``X-Cache: HIT``, ``MISS``, ``BYPASS`` or ``STALE``.
* **Stale on error** (RFC 5861): when the app raises or answers 500/502/503/504 and the entry is
  past its freshness but within its ``stale-if-error`` window (or ``stale_if_error=`` seconds of
  grace for responses that do not say), the entry answers instead (``X-Cache: STALE``); entries
  are kept that much longer; ``no-cache``, ``must-revalidate``, ``proxy-revalidate`` and
  ``s-maxage`` forbid it. Revalidation (conditional requests to the app) is not done yet.
* A response with a ``Content-Length`` within ``max_body_bytes`` is held until complete (to add the
  ETag or answer 304); any other response streams through at once, untouched but for ``X-Cache``,
  and is stored afterwards only if it completed within ``max_body_bytes``.
* ``local_ttl`` > 0 turns on a near cache in process memory (see :mod:`.near`): hits then skip
  Redis for up to ``local_ttl`` seconds; other processes' writes empty it over pub/sub, so they
  are seen after the pub/sub delay (about a millisecond on loopback) rather than at once. Off by
  default.
* ``fallback_to_memory=True`` (for a single process, e.g. a laptop or a demo) keeps caching in
  the engine's bounded memory tier while Redis is away instead of passing requests through.
* Redis down: the engine's circuit breaker answers "down" without a network call, and requests go
  to the app (``X-Cache: BYPASS``); a memory tier, if the engine has one, is used only with
  ``fallback_to_memory=True``.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.cache.core import MISSING
from redis_checkpoint.cache.engine import AsyncCacheEngine
from redis_checkpoint.client import AsyncRedisClient
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.settings import Settings
from redis_checkpoint.web import rfc9111
from redis_checkpoint.web.entry import (
    StoredResponse,
    VaryMarker,
    decode_entry,
    encode_entry,
    exact_tag,
    path_tags,
    prefix_tag,
    primary_key,
    rule_tag,
    variant_key,
)
from redis_checkpoint.web.inputs import RequestInputs, TrustedForwarding, read_request
from redis_checkpoint.web.near import Invalidations, NearCache

__all__ = ["CacheMiddleware", "CacheRule"]

log = logging.getLogger("redis_checkpoint.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
ASGISend = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, ASGISend], Awaitable[None]]

DEFAULT_TTL: Final = 600.0
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
#: How many entries one path may hold at once (query strings, Vary values, users, keyed headers).
DEFAULT_MAX_ENTRIES_PER_PATH: Final = 1000
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"age",
        b"x-cache",
        b"content-length",
    }
)
# What a 304 carries of the full response (RFC 9110 15.4.5).
_NOT_MODIFIED_HEADERS: Final = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)
_X_CACHE: Final = b"x-cache"


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
            _check_bound(f"CacheRule({self.path!r}) {name}", getattr(self, name))
        if isinstance(self.invalidates, str):
            raise TypeError("invalidates must be a sequence of path prefixes, e.g. ['/items']")
        for prefix in self.invalidates:
            if not prefix.startswith("/"):
                raise ValueError(f"invalidated prefix {prefix!r} must start with '/'")

    def matches(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.path)


def _check_bound(what: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{what}={value!r} must be an int >= 1 (or None: no bound)")


_DEFAULT_RULE: Final = CacheRule("*")
# What a storable response's start tells: its directives, lifetime and initial Age.
_StorePlan = tuple[dict[str, str | None], float, float]


@dataclass
class _Request:
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


class CacheMiddleware:
    """A shared HTTP response cache for an ASGI app; see the module documentation.

    ``target`` is a Redis URL or :class:`Settings` (default: REDIS_URL...) for an engine of
    its own, with ``prefix`` (default ``<key_prefix>:cache``), ``metrics`` and ``breaker`` for
    it; or pass ``engine=AsyncCacheEngine(...)`` to share one. ``counts`` holds how many
    responses were HIT, MISS and BYPASS in this process. ``trusted_forwarding`` declares the
    proxies in front of the app (:class:`TrustedForwarding`); ``max_entries_per_path`` bounds
    how many entries one path holds (None: unbounded), so random query strings on one path
    cannot push other paths' entries out of Redis.
    """

    def __init__(
        self,
        app: ASGIApp,
        target: str | Settings | AsyncRedisClient | None = None,
        *,
        engine: AsyncCacheEngine | None = None,
        namespace: str = "http",
        default_ttl: float = DEFAULT_TTL,
        rules: Sequence[CacheRule] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        cache_cookies: bool = False,
        trusted_forwarding: TrustedForwarding | None = None,
        max_entries_per_path: int | None = DEFAULT_MAX_ENTRIES_PER_PATH,
        local_ttl: float = 0.0,
        local_max_entries: int = 1024,
        local_max_bytes: int = 32 * 1024 * 1024,
        fallback_to_memory: bool = False,
        stale_if_error: float = 0.0,
        prefix: str | None = None,
        metrics: Metrics | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        # Explicit options, no **kwargs: Starlette's add_middleware then type-checks them.
        own_engine = (target, prefix, metrics, breaker)
        if engine is not None and any(option is not None for option in own_engine):
            raise TypeError("pass either engine= or target/prefix/metrics/breaker, not both")
        if not default_ttl > 0:
            raise ValueError(f"default_ttl={default_ttl!r} must be > 0 seconds")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes={max_body_bytes!r} must be >= 1")
        if trusted_forwarding is not None and not isinstance(trusted_forwarding, TrustedForwarding):
            raise TypeError("trusted_forwarding must be a TrustedForwarding(...)")
        _check_bound("max_entries_per_path", max_entries_per_path)
        if not stale_if_error >= 0:
            raise ValueError(f"stale_if_error={stale_if_error!r} must be >= 0 seconds")
        if engine is None:
            # No memory tier unless asked: a per-process copy cannot see other processes'
            # invalidations.
            engine = AsyncCacheEngine(
                target,
                prefix=prefix,
                metrics=metrics,
                breaker=breaker,
                memory=True if fallback_to_memory else None,
                max_value_bytes=max_body_bytes + 64 * 1024,
            )
        self.app = app
        self.engine = engine
        self.namespace = namespace
        self.default_ttl = float(default_ttl)
        self.rules = tuple(rules)
        self.max_body_bytes = max_body_bytes
        self.cache_cookies = cache_cookies
        self.trusted_forwarding = trusted_forwarding
        self.max_entries_per_path = max_entries_per_path
        # Client-address headers already warned about (once each per middleware).
        self._hinted: set[str] = set()
        self.fallback_to_memory = fallback_to_memory and self.engine.core.memory is not None
        #: Grace: seconds past freshness an entry may still answer while the app fails, for
        #: responses that do not say ``stale-if-error`` themselves (and do not forbid it).
        self.stale_if_error = float(stale_if_error)
        self.counts: dict[str, int] = {"HIT": 0, "MISS": 0, "BYPASS": 0, "STALE": 0}
        self.near = NearCache(local_ttl, local_max_entries, local_max_bytes) if local_ttl else None
        # Every instance announces its writes: other processes may keep near caches.
        self.invalidations = Invalidations(
            self.near, f"{self.engine.core.layout.prefix}:{namespace}:#near"
        )

    async def aclose(self) -> None:
        await self.invalidations.aclose()
        await self.engine.aclose()

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.near is not None:
            self.invalidations.start(self.engine.client)
        inputs = read_request(scope, self.trusted_forwarding)
        if inputs.untrusted_addresses:
            self._hint(inputs.untrusted_addresses, scope.get("client"))
        method = scope["method"]
        # An overridden method may be anything to the app: handled as unsafe, never stored.
        if method not in rfc9111.SAFE_METHODS or inputs.method_override is not None:
            await self._unsafe(scope, inputs.site, receive, send)
            return
        request = self._request(scope, inputs) if method in ("GET", "HEAD") else None
        if request is None:
            await self._bypass(scope, receive, send)
            return
        stored = await self._lookup(request) if request.lookup else None
        now = time.time()
        fresh = stored is not None and stored.age(now) < stored.lifetime
        if self._redis_away():
            if self.near is not None:
                self.near.clear()
            await self._bypass(scope, receive, send)
        elif stored is not None and fresh:
            await self._replay(request, stored, send)
        else:
            # A stale entry still in its stale-if-error window answers if the app fails.
            usable = (
                stored is not None and stored.age(now) < stored.lifetime + stored.stale_if_error
            )
            await self._miss(request, scope, receive, send, stored if usable else None)

    def _redis_away(self) -> bool:
        """Redis is down, or the last call to it failed (the breaker counts failures before it
        opens): the lookup just made told us nothing, so this request bypasses."""
        return not self.fallback_to_memory and not self._redis_answered()

    def _redis_answered(self) -> bool:
        """The breaker is closed and the last call to Redis succeeded."""
        breaker = self.engine.core.breaker
        return breaker.state == "closed" and breaker.failures == 0

    def _rule(self, path: str) -> CacheRule:
        for rule in self.rules:
            if rule.matches(path):
                return rule
        return _DEFAULT_RULE

    def _hint(self, names: tuple[str, ...], client: Any) -> None:
        for name in names:
            if name not in self._hinted:
                self._hinted.add(name)
                log.warning(
                    "requests carry %s: the cache keys each value apart, so behind a proxy that "
                    "sets it every client gets entries of its own; if a proxy you trust sets it, "
                    "declare it with CacheMiddleware(trusted_forwarding=TrustedForwarding(...)), "
                    "whose proxies= include the address this request came from (%s)",
                    name,
                    client[0] if client else "a unix socket",
                )

    def _request(self, scope: Scope, inputs: RequestInputs) -> _Request | None:
        """The request's cache plan, or None to bypass the cache."""
        path: str = scope["path"]
        rule = self._rule(path)
        if not rule.cache:
            return None
        if inputs.bypass is not None:
            log.debug("bypassing %s %s: %s", scope["method"], path, inputs.bypass)
            return None
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        found = inputs.rule_headers
        identity = rule.vary_user(scope) if rule.vary_user is not None else None
        per_user = identity is not None
        if b"range" in found or (b"cookie" in found and not (per_user or self.cache_cookies)):
            return None
        request_directives = rfc9111.directives(headers) if b"cache-control" in found else {}
        if "no-store" in request_directives:
            return None
        lookup = not (
            "no-cache" in request_directives
            or request_directives.get("max-age") == "0"
            or (b"cache-control" not in found and found.get(b"pragma") == b"no-cache")
        )
        # The target as sent: "/a%2Fb" and "/a/b" are one path to some apps, two to others.
        raw_path = scope.get("raw_path")
        sent = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else path
        target = scope.get("root_path", "") + sent
        query: bytes = scope.get("query_string", b"")
        scheme = scope.get("scheme", "http")
        return _Request(
            method=scope["method"],
            site=inputs.site,
            path=path,
            rule=rule,
            headers=headers,
            key=primary_key(scheme, inputs.host, target, query, identity, inputs.keyed),
            per_user=per_user,
            authorization=inputs.credentials,
            lookup=lookup,
        )

    async def _bypass(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        self.counts["BYPASS"] += 1

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (_X_CACHE, b"BYPASS")]
            await send(message)

        await self.app(scope, receive, marked)

    # -- hits -------------------------------------------------------------------------------

    async def _get(self, key: str) -> Any:
        """An entry from the near cache if on and holding it, else from Redis."""
        near = self.near
        if near is not None and not self.invalidations.usable:
            near = None  # not subscribed: another process's write could go unheard
        if near is not None:
            found = near.get(key)
            if found is not None:
                return found
        found = await self.engine.get(self.namespace, key, MISSING, decode=decode_entry)
        if near is not None and isinstance(found, (StoredResponse, VaryMarker)):
            near.put(key, found)
        return found

    async def _lookup(self, request: _Request) -> StoredResponse | None:
        """The entry this request may be served, fresh or stale."""
        found = await self._get(request.key)
        if isinstance(found, VaryMarker):
            values = rfc9111.vary_values(request.headers, found.names)
            found = await self._get(variant_key(request.key, values))
        if not isinstance(found, StoredResponse):
            return None
        if request.authorization and not request.per_user and not found.shareable_with_auth:
            return None
        return found  # fresh or stale: the caller tells (a stale one only answers errors)

    async def _replay(
        self, request: _Request, stored: StoredResponse, send: ASGISend, outcome: str = "HIT"
    ) -> None:
        """Send a stored response: a hit, or (``outcome="STALE"``) a stale one standing in
        for an app that failed."""
        self.counts[outcome] += 1
        x_cache = (_X_CACHE, outcome.encode())
        age = str(int(stored.age(time.time()))).encode()
        if _not_modified(request, stored.status, stored.etag):
            headers = [(k, v) for k, v in stored.headers if k.lower() in _NOT_MODIFIED_HEADERS]
            headers += [(b"age", age), x_cache]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [
            *stored.headers,
            (b"content-length", str(len(stored.body)).encode()),
            (b"age", age),
            x_cache,
        ]
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        body = b"" if request.method == "HEAD" else stored.body
        await send({"type": "http.response.body", "body": body})

    # -- misses -----------------------------------------------------------------------------

    async def _miss(
        self,
        request: _Request,
        scope: Scope,
        receive: Receive,
        send: ASGISend,
        stale: StoredResponse | None = None,
    ) -> None:
        """Ask the app; when it raises or answers 5xx before anything was sent and ``stale``
        is given, send that instead (RFC 5861 stale-if-error)."""
        self.counts["MISS"] += 1
        recorder = _Recorder(self, request, send, stale)

        async def watched() -> Message:
            message = await receive()
            if message.get("body"):
                # A body with no Content-Length (HTTP/2): the answer may depend on it.
                recorder.read_body = True
            return message

        path = request.path
        try:
            await self.app(scope, watched, recorder)
        except Exception:
            if recorder.replaced:
                # Its error response (Starlette sends one, then raises) was replaced already:
                # the client has its answer; the failure is logged with its traceback.
                log.exception(
                    "%s %s failed; the stale entry answered", request.method, request.path
                )
                return
            if stale is None or recorder.sent:
                raise
            log.exception("%s %s failed: serving the stale entry", request.method, path)
            await self._serve_stale(request, stale, send)

    async def _serve_stale(self, request: _Request, stale: StoredResponse, send: ASGISend) -> None:
        self.counts["MISS"] -= 1  # it was not a miss after all
        self.engine.core.stats.fallback(self.namespace, "stale-if-error")
        await self._replay(request, stale, send, "STALE")

    def _storable(
        self, request: _Request, status: int, headers: rfc9111.Headers
    ) -> _StorePlan | None:
        """The response's directives, lifetime and initial age when it may be stored."""
        if request.method != "GET":
            return None  # a HEAD response has no body to store
        response_directives = rfc9111.directives(headers)
        facts = rfc9111.RequestFacts(request.authorization, request.per_user)
        reason = rfc9111.refusal(status, headers, response_directives, facts)
        if reason is not None:
            log.debug("not storing %s %s: %s", request.method, request.path, reason)
            return None
        default = request.rule.ttl if request.rule.ttl is not None else self.default_ttl
        lifetime = rfc9111.freshness_lifetime(headers, response_directives, default)
        initial_age = rfc9111.age(headers)
        if lifetime - initial_age <= 0:
            return None
        return response_directives, lifetime, initial_age

    async def _store(self, request: _Request, response: StoredResponse) -> None:
        vary = rfc9111.vary_names(response.headers)
        if vary is None:  # refusal() already turned Vary: * away; keep mypy and readers sure
            return
        # Kept past its freshness for as long as it may stand in for a failing app.
        ttl = max(0.001, response.lifetime - response.initial_age + response.stale_if_error)
        rule = request.rule
        tags = path_tags(request.site, request.path)
        limits: dict[str, int] = {}
        per_path = (
            rule.max_entries_per_path
            if rule.max_entries_per_path is not None
            else self.max_entries_per_path
        )
        if per_path is not None:
            limits[exact_tag(request.site, request.path)] = per_path
        if rule.max_entries is not None:
            tag = rule_tag(request.site, rule.path)
            tags.append(tag)
            limits[tag] = rule.max_entries
        items: list[tuple[str | bytes, Any]]
        if vary:
            values = rfc9111.vary_values(request.headers, vary)
            items = [
                (request.key, VaryMarker(vary)),
                (variant_key(request.key, values), response),
            ]
        else:
            items = [(request.key, response)]
        await self.engine.set_many(
            self.namespace, items, ttl=ttl, tags=tags, tag_limits=limits, encode=encode_entry
        )

    # -- unsafe methods ---------------------------------------------------------------------

    async def _unsafe(self, scope: Scope, host: str, receive: Receive, send: ASGISend) -> None:
        """Run the app; before the first byte of a 2xx/3xx response leaves, invalidate."""
        self.counts["BYPASS"] += 1
        path: str = scope["path"]
        rule = self._rule(path)

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if 200 <= message["status"] < 400:
                    # Before any of the response leaves: a client that has seen it, on this
                    # connection or another, can no longer read the old entry.
                    await self._invalidate_after_write(host, path, rule, headers)
                message["headers"] = [*headers, (_X_CACHE, b"BYPASS")]
            await send(message)

        await self.app(scope, receive, watched)

    async def _invalidate_after_write(
        self, host: str, path: str, rule: CacheRule, headers: rfc9111.Headers
    ) -> None:
        # A path whose rule never caches has no entries of its own to drop.
        tags = [exact_tag(host, path)] if rule.cache else []
        tags += [prefix_tag(host, prefix) for prefix in rule.invalidates]
        for name in (b"location", b"content-location"):
            value = rfc9111.header(headers, name)
            if value is not None:
                target = urlsplit(value.decode("latin-1"))
                if target.path and (not target.netloc or target.netloc.lower() == host):
                    tags.append(exact_tag(host, target.path))
        if not tags:
            return
        if self.near is not None:
            self.near.clear()  # this process reads its own writes at once
        try:
            await self.engine.invalidate_tags(self.namespace, *dict.fromkeys(tags))
        except Exception:
            # The write happened: its response must still reach the client. Redis refused the
            # command (it is up: an unreachable Redis queues the invalidation instead).
            log.exception("invalidating %s after a write failed", tags)
            return
        if not self._redis_answered():
            # Queued for when Redis is back; other processes' subscriptions broke as well,
            # which empties their near caches.
            return
        try:
            await self.invalidations.publish(self.engine.client)
        except Exception as exc:
            log.warning("could not tell other processes that %s changed: %r", tags, exc)


def _not_modified(request: _Request, status: int, etag: bytes) -> bool:
    """Whether to answer 304: If-None-Match matches a response that would be a 2xx."""
    if not 200 <= status < 300:
        return False
    return rfc9111.none_match(rfc9111.header(request.headers, b"if-none-match"), etag)


class _Recorder:
    """The ``send`` a missed request's app talks to: forwards the response (held when small
    and storable, to add an ETag or answer 304) and keeps a copy to store."""

    def __init__(
        self,
        middleware: CacheMiddleware,
        request: _Request,
        send: ASGISend,
        stale: StoredResponse | None = None,
    ) -> None:
        self.middleware = middleware
        self.request = request
        self.client_send = send
        #: What answers instead of a 5xx from the app (see CacheMiddleware._miss).
        self.stale = stale
        #: The app failed and the stale entry was sent: the app's messages go nowhere.
        self.replaced = False
        #: Whether any message reached the client.
        self.sent = False
        self.start: Message | None = None
        self.plan: _StorePlan | None = None
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
        if self.replaced:
            return
        if (
            kind == "http.response.start"
            and self.stale is not None
            and message["status"] in _ERRORS
        ):
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
                await self.send({**start, "headers": [*start.get("headers", ()), _MISS]})
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
            message["headers"] = [*headers, (_X_CACHE, b"MISS")]
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
        if _not_modified(self.request, self.start["status"], etag):
            kept = [(k, v) for k, v in headers if k.lower() in _NOT_MODIFIED_HEADERS]
            await self.send(
                {"type": "http.response.start", "status": 304, "headers": [*kept, _MISS]}
            )
            await self.send({"type": "http.response.body", "body": b""})
            return
        await self.send({**self.start, "headers": [*headers, _MISS]})
        await self.send({"type": "http.response.body", "body": body})

    def complete(self) -> StoredResponse | None:
        """The response to store: complete, within the size limit, storable."""
        if not self.done or self.plan is None or self.start is None or self.read_body:
            return None
        response_directives, lifetime, initial_age = self.plan
        headers = list(self.start.get("headers", ()))
        body = b"".join(self.chunks)
        etag = rfc9111.header(headers, b"etag") or rfc9111.content_etag(body)
        kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP | {b"etag"}]
        shareable = bool({"public", "s-maxage", "must-revalidate"} & set(response_directives))
        grace = self.middleware.stale_if_error
        return StoredResponse(
            status=self.start["status"],
            headers=[*kept, (b"etag", etag)],
            body=body,
            etag=etag,
            stored_at=time.time(),
            lifetime=lifetime,
            initial_age=initial_age,
            shareable_with_auth=shareable,
            stale_if_error=rfc9111.stale_if_error(response_directives, grace),
        )


_MISS: Final = (_X_CACHE, b"MISS")
#: What RFC 5861 counts as an error a stale response may stand in for.
_ERRORS: Final = frozenset({500, 502, 503, 504})
