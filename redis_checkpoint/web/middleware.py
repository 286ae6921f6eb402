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
* Honours ``Vary`` with normalised values (an absent header matches only an absent one;
  ``Vary: *`` is never stored). Lifetime: ``s-maxage`` over ``max-age`` over ``Expires`` (or a
  valid ``CDN-Cache-Control``/targeted field instead of both, RFC 9213) over the rule's TTL over
  a heuristic (``default_ttl``, 600 s, or a tenth of the time since ``Last-Modified`` when
  shorter; ``default_ttl=None``: none). Sends ``Age``. Stores final responses with a
  heuristically cacheable status, or any final status with an explicit lifetime or ``public``.
* Adds a strong ``ETag`` computed from the body when the app sent none and answers the client's
  ``If-None-Match`` (weak comparison, lists, ``*``) or ``If-Modified-Since`` with 304; HEAD is
  answered from the GET entry. The request's ``max-age``/``min-fresh``/``max-stale`` are obeyed.
  One byte ``Range`` of a fresh complete entry is answered from it (206); other range requests
  go to the app, and partial responses are never stored.
* **Revalidation**: a stale entry with the app's own ``ETag``/``Last-Modified`` is revalidated
  with a conditional request; a 304 updates its stored header fields and it answers
  (``X-Cache: REVALIDATED``). ``no-cache`` entries (with a validator) are revalidated every time.
* A successful (2xx/3xx) request with a method not known to be safe (anything but GET, HEAD,
  OPTIONS and TRACE: POST, PUT, PATCH, DELETE, M-SEARCH...) invalidates its path (all query
  strings and variants), the same-origin paths of its ``Location``/``Content-Location``, and the
  rule's ``invalidates`` prefixes, in every process, before its response's first byte leaves.
* Marks every response ``X-Cache: HIT``, ``MISS``, ``BYPASS``, ``STALE`` or ``REVALIDATED``.
* **Stale while revalidate** (RFC 5861): within the entry's ``stale-while-revalidate`` window (or
  ``stale_while_revalidate=`` seconds by default) the stale entry answers at once and one
  background request revalidates it, one per entry across processes (a lock in Redis).
* **Stale on error** (RFC 5861): when the app raises or answers 500/502/503/504 and the entry is
  past its freshness but within its ``stale-if-error`` window (or ``stale_if_error=`` seconds of
  grace for responses that do not say), the entry answers instead (``X-Cache: STALE``); entries
  are kept that much longer; ``no-cache``, ``must-revalidate``, ``proxy-revalidate`` and
  ``s-maxage`` forbid both stale answers.
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

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

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
from redis_checkpoint.web.exchange import (
    NOT_MODIFIED_HEADERS,
    X_CACHE,
    ASGIApp,
    ASGISend,
    CacheRequest,
    CacheRule,
    Message,
    Receive,
    Recorder,
    ResponsePlan,
    Scope,
    build_entry,
    check_bound,
    client_copy_is_current,
)
from redis_checkpoint.web.inputs import RequestInputs, TrustedForwarding, read_request
from redis_checkpoint.web.near import Invalidations, NearCache

__all__ = ["CacheMiddleware", "CacheRule"]

log = logging.getLogger("redis_checkpoint.web")

DEFAULT_TTL: Final = 600.0
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
#: How many entries one path may hold at once (query strings, Vary values, users, keyed headers).
DEFAULT_MAX_ENTRIES_PER_PATH: Final = 1000
#: How long an entry the app can revalidate (it has an ETag or Last-Modified) is kept past its
#: freshness and stale windows: a conditional request then costs the app a 304, not a body.
KEPT_FOR_REVALIDATION: Final = 600.0
#: How long one process's background revalidation of an entry keeps the others from starting
#: their own (stale-while-revalidate).
REVALIDATION_LOCK_SECONDS: Final = 10.0
#: Request fields a cache replaces with its own validators when it revalidates an entry.
_CONDITIONAL_FIELDS: Final = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
)
_DEFAULT_RULE: Final = CacheRule("*")


class CacheMiddleware:
    """A shared HTTP response cache for an ASGI app; see the module documentation.

    ``target`` is a Redis URL or :class:`Settings` (default: REDIS_URL...) for an engine of
    its own, with ``prefix`` (default ``<key_prefix>:cache``), ``metrics`` and ``breaker`` for
    it; or pass ``engine=AsyncCacheEngine(...)`` to share one. ``counts`` holds how many
    responses were HIT, MISS and BYPASS in this process. ``trusted_forwarding`` declares the
    proxies in front of the app (:class:`TrustedForwarding`); ``max_entries_per_path`` bounds
    how many entries one path holds (None: unbounded), so random query strings on one path
    cannot push other paths' entries out of Redis. Heuristic freshness (for a response that
    gives no lifetime) is ``last_modified_fraction`` of the time since its ``Last-Modified``,
    at most ``default_ttl``, or ``default_ttl`` without one; ``default_ttl=None`` drops the flat
    default (a Last-Modified heuristic then stops at a day) and ``last_modified_fraction=0``
    too: with both, a response that gives no lifetime is stored only to be revalidated.
    ``targeted_cache_control`` names the fields (RFC 9213) that, when the response has one,
    replace its Cache-Control and Expires for this cache, the first one present winning.
    """

    def __init__(
        self,
        app: ASGIApp,
        target: str | Settings | AsyncRedisClient | None = None,
        *,
        engine: AsyncCacheEngine | None = None,
        namespace: str = "http",
        default_ttl: float | None = DEFAULT_TTL,
        last_modified_fraction: float = rfc9111.LAST_MODIFIED_FRACTION,
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
        stale_while_revalidate: float = 0.0,
        targeted_cache_control: Sequence[str] = ("cdn-cache-control",),
        prefix: str | None = None,
        metrics: Metrics | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        # Explicit options, no **kwargs: Starlette's add_middleware then type-checks them.
        own_engine = (target, prefix, metrics, breaker)
        if engine is not None and any(option is not None for option in own_engine):
            raise TypeError("pass either engine= or target/prefix/metrics/breaker, not both")
        if default_ttl is not None and not default_ttl > 0:
            raise ValueError(f"default_ttl={default_ttl!r} must be > 0 seconds (None: off)")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes={max_body_bytes!r} must be >= 1")
        if trusted_forwarding is not None and not isinstance(trusted_forwarding, TrustedForwarding):
            raise TypeError("trusted_forwarding must be a TrustedForwarding(...)")
        check_bound("max_entries_per_path", max_entries_per_path)
        for name, window in (
            ("stale_if_error", stale_if_error),
            ("stale_while_revalidate", stale_while_revalidate),
        ):
            if not window >= 0:
                raise ValueError(f"{name}={window!r} must be >= 0 seconds")
        if isinstance(targeted_cache_control, str):
            raise TypeError("targeted_cache_control must be a sequence of header names")
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
        self.default_ttl = None if default_ttl is None else float(default_ttl)
        if not 0 <= last_modified_fraction <= 1:
            raise ValueError(f"last_modified_fraction={last_modified_fraction!r} must be 0..1")
        self.last_modified_fraction = float(last_modified_fraction)
        self.rules = tuple(rules)
        self.max_body_bytes = max_body_bytes
        self.cache_cookies = cache_cookies
        self.trusted_forwarding = trusted_forwarding
        self.max_entries_per_path = max_entries_per_path
        # Client-address headers already warned about (once each per middleware).
        self._hinted: set[str] = set()
        self.fallback_to_memory = fallback_to_memory and self.engine.core.memory is not None
        #: Graces: seconds past freshness an entry may still answer while the app fails, and
        #: while it is revalidated in the background, for responses that do not say
        #: ``stale-if-error`` / ``stale-while-revalidate`` themselves (and do not forbid it).
        self.graces = (float(stale_if_error), float(stale_while_revalidate))
        self.targeted = tuple(name.lower().encode("latin-1") for name in targeted_cache_control)
        self.counts: dict[str, int] = {
            "HIT": 0,
            "MISS": 0,
            "BYPASS": 0,
            "STALE": 0,
            "REVALIDATED": 0,
        }
        # Entries this process is revalidating in the background, and those tasks.
        self._revalidating: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.near = NearCache(local_ttl, local_max_entries, local_max_bytes) if local_ttl else None
        # Every instance announces its writes: other processes may keep near caches.
        self.invalidations = Invalidations(
            self.near, f"{self.engine.core.layout.prefix}:{namespace}:#near"
        )

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
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
        if self._redis_away():
            if self.near is not None:
                self.near.clear()
            await self._bypass(scope, receive, send)
            return
        if stored is None and request.range is not None:
            await self._bypass(scope, receive, send)
            return
        if stored is None:
            await self._miss(Recorder(self, request, send), scope, receive)
            return
        age = stored.age(time.time())
        if self._reusable(request, stored, age):
            await self._replay(request, stored, send)
            return
        if request.range is not None:
            # Partial content is never stored: a range the entry cannot answer goes to the app.
            await self._bypass(scope, receive, send)
            return
        # A stale entry still in its stale-if-error window answers if the app fails.
        usable = stored if age < stored.lifetime + stored.stale_if_error else None
        if not stored.conditional:
            await self._miss(Recorder(self, request, send, usable), scope, receive)
        elif age < stored.lifetime + stored.stale_while_revalidate and not request.directives:
            await self._replay(request, stored, send, "STALE")
            self._revalidate_later(request, scope, stored)
        else:
            conditional = _conditional_scope(scope, stored)
            recorder = Recorder(self, request, send, usable, revalidating=stored)
            await self._miss(recorder, conditional, receive)

    def _reusable(self, request: CacheRequest, stored: StoredResponse, age: float) -> bool:
        """Fresh enough for this request (RFC 9111 4.2, 5.2.1): no need to ask the app."""
        if not request.directives:
            return age < stored.lifetime
        stored_directives = self._directives(stored.headers)[0]
        return rfc9111.request_accepts(age, stored.lifetime, request.directives, stored_directives)

    def _directives(self, headers: rfc9111.Headers) -> tuple[dict[str, str | None], bool]:
        """The response's directives for this cache: its first targeted field's (RFC 9213),
        else Cache-Control's; and whether they came from a targeted field."""
        for name in self.targeted:
            found = rfc9111.targeted_directives(headers, name)
            if found is not None:
                return found, True
        return rfc9111.directives(headers), False

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

    def _request(self, scope: Scope, inputs: RequestInputs) -> CacheRequest | None:
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
        if b"cookie" in found and not (per_user or self.cache_cookies):
            return None
        if b"range" in found and rfc9111.header(headers, b"if-range") is not None:
            return None  # partial or whole by a validator: the app's call
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
        return CacheRequest(
            method=scope["method"],
            site=inputs.site,
            path=path,
            rule=rule,
            headers=headers,
            key=primary_key(scheme, inputs.host, target, query, identity, inputs.keyed),
            per_user=per_user,
            authorization=inputs.credentials,
            lookup=lookup,
            directives={
                name: value
                for name, value in request_directives.items()
                if name in rfc9111.REQUEST_FRESHNESS_DIRECTIVES
            },
            range=rfc9111.header(headers, b"range") if b"range" in found else None,
        )

    async def _bypass(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        self.counts["BYPASS"] += 1

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (X_CACHE, b"BYPASS")]
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

    async def _lookup(self, request: CacheRequest) -> StoredResponse | None:
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
        self, request: CacheRequest, stored: StoredResponse, send: ASGISend, outcome: str = "HIT"
    ) -> None:
        """Send a stored response: a hit, or (``outcome="STALE"``) a stale one standing in
        for an app that failed."""
        self.counts[outcome] += 1
        x_cache = (X_CACHE, outcome.encode())
        age = str(int(stored.age(time.time()))).encode()
        if client_copy_is_current(request, stored.status, stored.headers):
            headers = [(k, v) for k, v in stored.headers if k.lower() in NOT_MODIFIED_HEADERS]
            headers += [(b"age", age), x_cache]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        status, body, headers = stored.status, stored.body, list(stored.headers)
        wanted = None
        if request.range is not None and status == 200:
            wanted = rfc9111.byte_range(request.range, len(body))
        if wanted is not None:  # RFC 9110 15.3.7: a part of the stored response
            first, last = wanted
            status, body = 206, body[first : last + 1]
            headers.append((b"content-range", f"bytes {first}-{last}/{len(stored.body)}".encode()))
        headers += [(b"content-length", str(len(body)).encode()), (b"age", age), x_cache]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if request.method == "HEAD" else body}
        )

    # -- misses -----------------------------------------------------------------------------

    async def _miss(self, recorder: Recorder, scope: Scope, receive: Receive) -> None:
        """Ask the app, which answers the client through ``recorder``; when it raises or
        answers 5xx before anything was sent and the recorder holds a stale entry, that answers
        instead (RFC 5861 stale-if-error). A recorder that is revalidating an entry came with
        a conditional request, and a 304 refreshes that entry, which answers."""
        self.counts["MISS"] += 1
        request, stale = recorder.request, recorder.stale

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
                    "%s %s failed; the stored entry answered", request.method, request.path
                )
                return
            if stale is None or recorder.sent:
                raise
            log.exception("%s %s failed: serving the stale entry", request.method, path)
            await self._serve_stale(request, stale, recorder.client_send)
            return
        if recorder.retry:
            # The app's 304 was about another response: the stored one cannot be refreshed.
            self.counts["MISS"] -= 1
            again = Recorder(self, request, recorder.client_send, stale)
            await self._miss(again, _conditional_scope(scope, None), _empty_body())

    async def _serve_stale(
        self, request: CacheRequest, stale: StoredResponse, send: ASGISend
    ) -> None:
        self.counts["MISS"] -= 1  # it was not a miss after all
        self.engine.core.stats.fallback(self.namespace, "stale-if-error")
        await self._replay(request, stale, send, "STALE")

    async def _revalidated(
        self,
        request: CacheRequest,
        stored: StoredResponse,
        headers: rfc9111.Headers,
        send: ASGISend,
    ) -> None:
        """The app answered 304 to a revalidation: the entry takes the 304's header fields
        (RFC 9111 3.2, 4.3.4), is stored again and answers (``X-Cache: REVALIDATED``), unless
        the revalidation ran in the background (nobody to answer)."""
        merged = rfc9111.updated_headers(stored.headers, headers)
        arrived = [(name, value) for name, value in headers if name.lower() == b"age"]
        as_get = dataclasses.replace(request, method="GET")
        plan = self._storable(as_get, stored.status, [*merged, *arrived])
        own_etag = dict(stored.conditional).get(b"if-none-match")
        # No plan: the 304 made it unstorable (no-store, private...); it answers this once.
        refreshed = build_entry(
            stored.status, merged, stored.body, plan or ({}, 0.0, 0.0), own_etag, self.graces
        )
        if plan is not None and _worth_storing(stored, refreshed):
            await self._store(as_get, refreshed)
        if send is not _discard:
            self.counts["MISS"] -= 1  # answered from the store after all
            await self._replay(request, refreshed, send, "REVALIDATED")

    def _revalidate_later(
        self, request: CacheRequest, scope: Scope, stored: StoredResponse
    ) -> None:
        """stale-while-revalidate (RFC 5861): the stale entry has answered; ask the app in the
        background, once per entry in this process and, through a lock in Redis, in all."""
        if request.key in self._revalidating:
            return
        self._revalidating.add(request.key)
        task = asyncio.get_running_loop().create_task(
            self._revalidate_in_background(request, scope, stored)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _revalidate_in_background(
        self, request: CacheRequest, scope: Scope, stored: StoredResponse
    ) -> None:
        try:
            claim = "revalidate:" + request.key
            if not await self.engine.claim(self.namespace, claim, REVALIDATION_LOCK_SECONDS):
                return  # another process is at it (or Redis is away)
            unconditional = [
                (k, v) for k, v in request.headers if k.lower() not in _CONDITIONAL_FIELDS
            ]
            as_get = dataclasses.replace(request, method="GET", headers=unconditional)
            recorder = Recorder(self, as_get, _discard, revalidating=stored)
            conditional = {**_conditional_scope(scope, stored), "method": "GET"}
            if isinstance(scope.get("state"), dict):
                conditional["state"] = dict(scope["state"])  # the app may write to it
            await self.app(conditional, _empty_body(), recorder)
            if recorder.retry:
                recorder = Recorder(self, as_get, _discard)
                await self.app(_conditional_scope(conditional, None), _empty_body(), recorder)
        except Exception:
            log.exception("revalidating GET %s in the background failed", request.path)
        finally:
            self._revalidating.discard(request.key)

    def _storable(
        self, request: CacheRequest, status: int, headers: rfc9111.Headers
    ) -> ResponsePlan | None:
        """The response's directives, lifetime and initial age when it may be stored: with
        a lifetime left, or with a validator to revalidate it by."""
        if request.method != "GET":
            return None  # a HEAD response has no body to store
        response_directives, targeted = self._directives(headers)
        facts = rfc9111.RequestFacts(request.authorization, request.per_user)
        reason = rfc9111.refusal(status, headers, response_directives, facts, targeted=targeted)
        if reason is not None:
            log.debug("not storing %s %s: %s", request.method, request.path, reason)
            return None
        lifetime = rfc9111.explicit_lifetime(headers, response_directives, targeted=targeted)
        if lifetime is None and request.rule.ttl is not None:
            lifetime = float(request.rule.ttl)
        elif lifetime is None:
            # A heuristic, which RFC 9111 4.2.2 allows only where no lifetime is given.
            lifetime = rfc9111.heuristic_lifetime(
                headers, self.default_ttl, self.last_modified_fraction
            )
        if "no-cache" in response_directives and response_directives["no-cache"] is None:
            lifetime = 0.0  # stored, but asked about every time (RFC 9111 5.2.2.4)
        initial_age = rfc9111.age(headers)
        if lifetime - initial_age <= 0 and not rfc9111.has_validator(headers):
            return None
        return response_directives, lifetime, initial_age

    async def _store(self, request: CacheRequest, response: StoredResponse) -> None:
        vary = rfc9111.vary_names(response.headers)
        if vary is None:  # refusal() already turned Vary: * away; keep mypy and readers sure
            return
        # Kept past its freshness for as long as it may stand in for a failing app or answer
        # while it is revalidated, and longer when the app can revalidate it with a 304.
        ttl = max(0.0, response.lifetime - response.initial_age)
        ttl += max(response.stale_if_error, response.stale_while_revalidate)
        ttl = max(0.001, ttl + (KEPT_FOR_REVALIDATION if response.conditional else 0.0))
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
                    await self._invalidate_after_write(scope, host, rule, headers)
                message["headers"] = [*headers, (X_CACHE, b"BYPASS")]
            await send(message)

        await self.app(scope, receive, watched)

    async def _invalidate_after_write(
        self, scope: Scope, host: str, rule: CacheRule, headers: rfc9111.Headers
    ) -> None:
        path: str = scope["path"]
        # A path whose rule never caches has no entries of its own to drop.
        tags = [exact_tag(host, path)] if rule.cache else []
        tags += [prefix_tag(host, prefix) for prefix in rule.invalidates]
        # Location and Content-Location, resolved against the request's URI, and only when of
        # the same origin (RFC 9111 4.4): another site's entries are not this response's to drop.
        scheme = scope.get("scheme", "http")
        here = f"{scheme}://{host}{path}"
        for name in (b"location", b"content-location"):
            value = rfc9111.header(headers, name)
            if value is not None:
                target = urlsplit(urljoin(here, value.decode("latin-1").strip()))
                if target.scheme == scheme and target.netloc.lower() == host and target.path:
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


def _worth_storing(stored: StoredResponse, refreshed: StoredResponse) -> bool:
    """Whether a 304's refresh must be written: it changed a header field or the lifetime, or
    the entry is half way to the end of its keeping for revalidation. A ``no-cache`` entry that
    the app confirms on every request is then written once in 300 s, not once per request."""
    changed = refreshed.headers != stored.headers or refreshed.lifetime != stored.lifetime
    aging = refreshed.stored_at - stored.stored_at > KEPT_FOR_REVALIDATION / 2
    return changed or refreshed.lifetime > 0 or aging


def _conditional_scope(scope: Scope, stored: StoredResponse | None) -> Scope:
    """The request with the client's conditional fields replaced by the stored entry's
    validators (none when ``stored`` is None: an unconditional request)."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _CONDITIONAL_FIELDS]
    return {**scope, "headers": headers + list(stored.conditional if stored else ())}


def _empty_body() -> Receive:
    """The ``receive`` of a request the cache makes itself: no body, then nothing more (the
    app's disconnect listeners wait until it is done)."""
    sent = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    return receive


async def _discard(message: Message) -> None:
    """Where a background revalidation's answer goes: nobody is waiting for it."""
