"""Server-side sessions for ASGI apps: a drop-in for Starlette's ``SessionMiddleware`` that keeps
the data in Redis and only a signed, unguessable session id in the cookie.

::

    from redis_checkpoint import SessionMiddleware      # instead of starlette's

    app.add_middleware(SessionMiddleware, secret_key=os.environ["SESSION_SECRET"])

``request.session`` is the same dict. What changes:

* **The cookie holds an id, not the data**: 256 random bits and an HMAC-SHA256 signature
  (``HttpOnly``, ``SameSite=lax``, ``Path=/``; ``https_only=True`` adds ``Secure``; ``domain``,
  ``max_age``, ``partitioned`` as Starlette's). Redis keys hold a SHA-256 digest of the id, so
  reading Redis gives no usable cookie. A tampered, truncated, foreign or expired cookie is a
  new empty session, never an error.
* **One hash per session**, one field per key: a request writes only the keys it changed, so
  two concurrent requests that change different keys both keep their changes. A request that
  only read its session writes nothing (its idle timer is slid in the read's round trip); an
  empty new session writes nothing and sets no cookie. One round trip to read, at most one more
  to write.
* **Expiry**: ``idle_timeout`` (7,200 s) slides on every request; ``max_lifetime`` (default
  ``max_age``, or 14 days) caps a session from its creation, whatever its activity.
* **Login and logout**: :func:`regenerate_session` gives the session a new id and drops the old
  one (against session fixation); ``request.session.clear()`` ends it; a session whose
  ``user_key`` entry (``"user_id"``) names a user is indexed, and
  :func:`invalidate_user_sessions` (or :meth:`SessionStore.invalidate_user`) ends all of that
  user's sessions, in every process.
* **Values** are JSON, as in Starlette's cookie; a value that cannot be encoded raises
  ``TypeError`` where the handler sets it, not when the response leaves.
* **While Redis is away** (``on_unavailable``): ``"fail_closed"`` (the default) answers 503 to
  a request that must read or write a session, because a per-process copy could not see a
  logout made in another process, so a revoked session could keep working; ``"memory"`` keeps
  serving from the sessions this process read or wrote (bounded), owes the writes and writes
  them back when Redis answers again: for a single process, or where staying up matters more.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from http.cookies import SimpleCookie
from typing import Any, Final, Literal

import redis

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.cache.keys import escape
from redis_checkpoint.client import AsyncRedisClient, create_async_client, describe_client
from redis_checkpoint.errors import RedisUnavailableError
from redis_checkpoint.failures import is_unavailable_error
from redis_checkpoint.settings import Settings
from redis_checkpoint.web.exchange import ASGIApp, ASGISend, Message, Receive, Scope

__all__ = [
    "SessionMiddleware",
    "SessionStore",
    "invalidate_user_sessions",
    "regenerate_session",
]

log = logging.getLogger("redis_checkpoint.web.sessions")

DEFAULT_IDLE_TIMEOUT: Final = 7200.0
DEFAULT_MAX_AGE: Final = 14 * 24 * 3600
#: How many sessions a process keeps a copy of for ``on_unavailable="memory"``.
HELD_SESSIONS: Final = 10_000
_SCOPE_KEY: Final = "redis_checkpoint.sessions"
_CREATED: Final = b"~created"
_FIELD: Final = b"d:"  # a session key's field: "d:" + the key, so "~..." stay ours

# Reads a session and slides its idle timer in one round trip; a session past its absolute
# lifetime is deleted instead. KEYS: the session hash. ARGV: now (ms), idle ms, lifetime ms.
_LOAD: Final = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return fields end
local created = tonumber(redis.call('HGET', KEYS[1], '~created') or '0')
local left = created + tonumber(ARGV[3]) - tonumber(ARGV[1])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return {}
end
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[2]), left))
return fields
"""

# Writes what a request changed in a session that still exists, in one round trip: fields and
# values, then the fields removed. The TTL stays as the read slid it; a session that expired
# since is not brought back. KEYS: the session hash. ARGV: n, n field/value pairs, removed...
_UPDATE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, 1 + 2 * n)) end
if #ARGV > 1 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 2 + 2 * n)) end
return 1
"""
#: More fields than this in one change go through a pipeline (Lua's unpack has a stack limit).
_UPDATE_FIELDS: Final = 400


class Session(dict[str, Any]):
    """``request.session``: a dict whose values must be JSON, checked when they are set."""

    def __init__(
        self, data: Mapping[str, Any] | None = None, *, loaded: Mapping[str, bytes] | None = None
    ) -> None:
        super().__init__(data or {})
        #: Each key's JSON as read from Redis: what the response compares against.
        self.loaded: dict[str, bytes] = dict(loaded or {})
        self.accessed = False
        self.regenerate = False

    def mark_accessed(self) -> None:
        """Starlette's ``request.session`` calls this: the response then says Vary: Cookie."""
        self.accessed = True

    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys are strings, not {type(key).__name__}")
        _json_of(value, key)  # a value JSON cannot hold fails here, in the handler
        self.accessed = True
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __ior__(self, other: Any) -> Session:  # type: ignore[override,misc]
        self.update(other)
        return self


def _json_of(value: Any, key: str) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"session[{key!r}] = {type(value).__name__}: session values must be JSON "
            f"(str, int, float, bool, None, lists and dicts of them): {exc}"
        ) from None


def regenerate_session(request: Any) -> None:
    """Give the session a new id at the end of this request, keeping its data and ending the
    old id (call it at login: an id planted before login is then worthless)."""
    _session_of(request).regenerate = True


async def invalidate_user_sessions(request: Any, user_id: str) -> int:
    """End every session of ``user_id`` (logout everywhere), in every process; returns how many
    were ended."""
    store = _scope_of(request).get(_SCOPE_KEY)
    if not isinstance(store, SessionStore):
        raise RuntimeError("invalidate_user_sessions() needs a request behind SessionMiddleware")
    return await store.invalidate_user(user_id)


def _scope_of(request: Any) -> Scope:
    scope = getattr(request, "scope", request)
    if not isinstance(scope, dict):
        raise TypeError("pass a Starlette Request (or an ASGI scope)")
    return scope


def _session_of(request: Any) -> Session:
    session = _scope_of(request).get("session")
    if not isinstance(session, Session):
        raise RuntimeError("this request has no session: is SessionMiddleware installed?")
    return session


class SessionUnavailableError(RedisUnavailableError):
    """The session store's Redis is away (the middleware answers 503 when it fails closed;
    :func:`invalidate_user_sessions` raises it, as a logout it cannot promise)."""


class SessionStore:
    """Where sessions live: one Redis hash per session under ``<prefix>:session:<digest>``, and
    a set per user of the digests of that user's sessions. Usable outside a request too (an
    admin task that logs a user out everywhere)."""

    def __init__(
        self,
        target: str | Settings | AsyncRedisClient | None = None,
        *,
        prefix: str | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_lifetime: float = DEFAULT_MAX_AGE,
        on_unavailable: Literal["fail_closed", "memory"] = "fail_closed",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout={idle_timeout!r} must be > 0 seconds")
        if on_unavailable not in ("fail_closed", "memory"):
            raise ValueError(f"on_unavailable={on_unavailable!r}: 'fail_closed' or 'memory'")
        if target is None or isinstance(target, (str, Settings)):
            self.client: AsyncRedisClient = create_async_client(target)
            self._owns_client = True
        else:
            self.client = target
            self._owns_client = False
        if prefix is None:
            prefix = (target if isinstance(target, Settings) else Settings.from_env()).key_prefix
        self.prefix = f"{prefix}:session"
        self.idle_timeout = float(idle_timeout)
        self.max_lifetime = float(max_lifetime)
        self.on_unavailable = on_unavailable
        self.breaker = breaker or CircuitBreaker("sessions")
        self._load_script = self.client.register_script(_LOAD)
        self._update_script = self.client.register_script(_UPDATE)
        # on_unavailable="memory": the sessions this process read or wrote, newest last, and
        # the writes Redis has not seen yet, oldest first.
        self._held: collections.OrderedDict[str, dict[bytes, bytes]] = collections.OrderedDict()
        self._owed: list[tuple[str, dict[bytes, bytes], list[bytes], bool]] = []

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    # -- keys ---------------------------------------------------------------------------

    def key(self, session_id: str) -> str:
        return f"{self.prefix}:{hashlib.sha256(session_id.encode()).hexdigest()}"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}-user:{escape(user_id)}"

    # -- Redis, or the fallback -----------------------------------------------------------

    async def _redis(self, work: Any) -> Any:
        """Run ``work`` (an awaitable factory) on Redis; raises SessionUnavailableError when
        Redis is away (counted by the breaker)."""
        if not self.breaker.allow_request():
            where = describe_client(self.client)
            raise SessionUnavailableError(f"sessions: Redis at {where} is away (circuit open)")
        try:
            if self._owed:
                await self._write_back()
            result = await work()
        except (redis.RedisError, OSError) as exc:
            if not is_unavailable_error(exc):
                self.breaker.record_success()
                raise
            self.breaker.record_failure()
            where = describe_client(self.client)
            raise SessionUnavailableError(f"sessions: Redis at {where}: {exc}") from exc
        self.breaker.record_success()
        return result

    async def load(self, session_id: str) -> dict[bytes, bytes] | None:
        """The session's fields, its idle timer slid; None when it does not exist."""
        key = self.key(session_id)
        now_ms = int(time.time() * 1000)
        args = [now_ms, int(self.idle_timeout * 1000), int(self.max_lifetime * 1000)]
        try:
            flat = await self._redis(lambda: self._load_script(keys=[key], args=args))
        except SessionUnavailableError:
            if self.on_unavailable == "fail_closed":
                raise
            held = self._held.get(key)
            return dict(held) if held else None
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        if self.on_unavailable == "memory" and fields:
            self._hold(key, fields)
        return fields or None

    async def save(
        self,
        session_id: str,
        changed: Mapping[bytes, bytes],
        removed: Iterable[bytes],
        *,
        replace: bool = False,
        drop: Iterable[str] = (),
        user: tuple[str | None, str | None] = (None, None),
        created: float | None = None,
    ) -> None:
        """Write a session's changed and removed fields (``replace``: its whole content, after
        deleting what was there); end the sessions in ``drop``; move it between users' sets."""
        key = self.key(session_id)
        removed = list(removed)
        old_user, new_user = user
        lifetime_left = self.max_lifetime - (time.time() - (created or time.time()))
        ttl_ms = max(1, int(min(self.idle_timeout, lifetime_left) * 1000))

        async def update() -> None:
            flat = [item for pair in changed.items() for item in pair]
            await self._update_script(keys=[key], args=[len(changed), *flat, *removed])

        async def work() -> None:
            pipe = self.client.pipeline(transaction=False)
            for dropped in drop:
                pipe.delete(self.key(dropped))
            _queue_write(pipe, key, changed, removed, replace, ttl_ms)
            digest = key.rsplit(":", 1)[1]
            if old_user is not None and old_user != new_user:
                pipe.srem(self.user_key(old_user), digest)
            if new_user is not None and changed:
                pipe.sadd(self.user_key(new_user), digest)
                pipe.pexpire(self.user_key(new_user), max(1, int(self.max_lifetime * 1000)))
            for dropped in drop:
                if old_user is not None:
                    pipe.srem(self.user_key(old_user), self.key(dropped).rsplit(":", 1)[1])
            await pipe.execute()

        # The common case, a change to a live session of the same user: one script call.
        simple = not replace and not drop and old_user == new_user and created is not None
        small = len(changed) + len(removed) <= _UPDATE_FIELDS
        try:
            await self._redis(update if simple and small else work)
        except SessionUnavailableError:
            if self.on_unavailable == "fail_closed":
                raise
            self._owed.append((key, dict(changed), removed, replace))
            for dropped in drop:
                self._owed.append((self.key(dropped), {}, [], True))
                self._held.pop(self.key(dropped), None)
        if self.on_unavailable == "memory":
            held = {} if replace else dict(self._held.get(key, {}))
            for name in removed:
                held.pop(name, None)
            held.update(changed)
            self._hold(key, held)

    async def delete(self, session_id: str, user_id: str | None = None) -> None:
        await self.save(session_id, {}, [], replace=True, user=(user_id, None))

    async def invalidate_user(self, user_id: str) -> int:
        """End every session of ``user_id``; returns how many ended."""
        user_key = self.user_key(user_id)

        async def work() -> int:
            digests = await self.client.smembers(user_key)
            keys = [f"{self.prefix}:{d.decode() if isinstance(d, bytes) else d}" for d in digests]
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.delete(key)
            pipe.delete(user_key)
            replies = await pipe.execute()
            for key in keys:
                self._held.pop(key, None)
            return sum(int(reply) for reply in replies[: len(keys)])

        ended: int = await self._redis(work)
        return ended

    # -- memory fallback ------------------------------------------------------------------

    def _hold(self, key: str, fields: dict[bytes, bytes]) -> None:
        self._held[key] = fields
        self._held.move_to_end(key)
        while len(self._held) > HELD_SESSIONS:
            self._held.popitem(last=False)

    @property
    def owed(self) -> int:
        """Session writes made while Redis was away and not yet written back."""
        return len(self._owed)

    async def _write_back(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, changed, removed, replace in self._owed:
            _queue_write(pipe, key, changed, removed, replace, int(self.idle_timeout * 1000))
        await pipe.execute()
        log.info("wrote back %d session writes made while Redis was away", len(self._owed))
        self._owed.clear()


class SessionMiddleware:
    """Server-side sessions on Redis; see the module documentation. The first arguments are
    Starlette's ``SessionMiddleware``'s, so an app switches by changing one import."""

    def __init__(
        self,
        app: ASGIApp,
        secret_key: object,
        session_cookie: str = "session",
        max_age: int | None = DEFAULT_MAX_AGE,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        target: str | Settings | AsyncRedisClient | None = None,
        prefix: str | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_lifetime: float | None = None,
        user_key: str | None = "user_id",
        on_unavailable: Literal["fail_closed", "memory"] = "fail_closed",
        breaker: CircuitBreaker | None = None,
        store: SessionStore | None = None,
    ) -> None:
        secret = str(secret_key).encode()
        if len(secret) < 16:
            raise ValueError("secret_key must be at least 16 bytes (use secrets.token_urlsafe())")
        self.app = app
        self._secret = secret
        self.session_cookie = session_cookie
        self.max_age = max_age
        self.path = path
        flags = f"; path={path}; httponly; samesite={same_site}"
        if https_only:
            flags += "; secure"
        if domain is not None:
            flags += f"; domain={domain}"
        if partitioned:
            flags += "; partitioned"
        self._flags = flags
        self.user_key = user_key
        if max_lifetime is None:
            max_lifetime = float(max_age) if max_age is not None else DEFAULT_MAX_AGE
        self.store = store or SessionStore(
            target,
            prefix=prefix,
            idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
            on_unavailable=on_unavailable,
            breaker=breaker,
        )

    async def aclose(self) -> None:
        await self.store.aclose()

    # -- the cookie -----------------------------------------------------------------------

    def _sign(self, session_id: str) -> str:
        mac = hmac.new(self._secret, session_id.encode(), hashlib.sha256).digest()
        return f"{session_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    def _session_id(self, scope: Scope) -> str | None:
        """The id a request's cookie carries, if its signature holds."""
        cookie = _cookie(scope, self.session_cookie)
        if cookie is None or "." not in cookie:
            return None
        session_id = cookie.rsplit(".", 1)[0]
        if not hmac.compare_digest(self._sign(session_id), cookie):
            return None
        return session_id

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[_SCOPE_KEY] = self.store
        session_id = self._session_id(scope)
        fields: dict[bytes, bytes] | None = None
        if session_id is not None:
            try:
                fields = await self.store.load(session_id)
            except SessionUnavailableError:
                await _unavailable(send)
                return
        session = _decoded(fields) if fields is not None else None
        created: float | None = None
        if session is None:
            session_id = None  # unknown, expired or unreadable: new if the app writes one
            scope["session"] = Session()
        else:
            scope["session"] = session
            created = float(fields.get(_CREATED, b"0")) / 1000 if fields else None
        old_user = self._user(scope["session"].loaded)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                session: Session = scope["session"]
                try:
                    cookie = await self._save(session_id, session, created, old_user)
                except SessionUnavailableError:
                    await _unavailable(send)
                    raise _Replaced() from None
                headers = list(message.get("headers", ()))
                if session.accessed:
                    headers.append((b"vary", b"Cookie"))
                if cookie is not None:
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except _Replaced:
            return

    def _user(self, loaded: Mapping[str, bytes]) -> str | None:
        raw = loaded.get(self.user_key) if self.user_key else None
        return None if raw is None else str(json.loads(raw))

    async def _save(
        self,
        session_id: str | None,
        session: Session,
        created: float | None,
        old_user: str | None,
    ) -> str | None:
        """Write what the request changed; the Set-Cookie value to send, if any."""
        now = {key: _json_of(value, key) for key, value in session.items()}
        changed = {
            _FIELD + key.encode(): value
            for key, value in now.items()
            if session.loaded.get(key) != value
        }
        removed = [_FIELD + key.encode() for key in session.loaded if key not in now]
        new_user = self._user(now)
        if session_id is None:
            if not now:
                return None  # an empty new session: nothing stored, no cookie
            session_id, created = secrets.token_urlsafe(32), time.time()
            changed = {_FIELD + key.encode(): value for key, value in now.items()}
            changed[_CREATED] = str(int(created * 1000)).encode()
        elif not now:
            if not session.loaded and not session.regenerate:
                return None
            await self.store.delete(session_id, old_user)
            return self._expired_cookie()
        elif session.regenerate:
            old_id, session_id = session_id, secrets.token_urlsafe(32)
            changed = {_FIELD + key.encode(): value for key, value in now.items()}
            changed[_CREATED] = str(int((created or time.time()) * 1000)).encode()
            await self.store.save(
                session_id,
                changed,
                [],
                replace=True,
                drop=[old_id],
                user=(old_user, new_user),
                created=created,
            )
            return self._cookie(session_id)
        elif not changed and not removed:
            return None  # only read: the load already slid its timer
        else:
            await self.store.save(
                session_id, changed, removed, user=(old_user, new_user), created=created
            )
            return self._cookie(session_id)  # sent again, as Starlette does: Max-Age slides
        # A new id: replace, so the write makes the hash (and gives it its TTL) with the data.
        await self.store.save(
            session_id, changed, [], replace=True, user=(None, new_user), created=created
        )
        return self._cookie(session_id)

    def _cookie(self, session_id: str) -> str:
        max_age = f"; Max-Age={self.max_age}" if self.max_age is not None else ""
        return f"{self.session_cookie}={self._sign(session_id)}{max_age}{self._flags}"

    def _expired_cookie(self) -> str:
        expired = "; expires=Thu, 01 Jan 1970 00:00:00 GMT"
        return f"{self.session_cookie}=null{expired}{self._flags}"


def _decoded(fields: Mapping[bytes, bytes]) -> Session | None:
    """The session a hash holds; None (with a warning) for one this middleware did not write."""
    try:
        loaded = {
            name[len(_FIELD) :].decode(): value
            for name, value in fields.items()
            if name.startswith(_FIELD)
        }
        float(fields.get(_CREATED, b"0"))
        return Session({key: json.loads(value) for key, value in loaded.items()}, loaded=loaded)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        log.warning("a session hash that is not ours was ignored: %s", exc)
        return None


class _Replaced(Exception):
    """The response was replaced by a 503: the app's messages go nowhere."""


def _queue_write(
    pipe: Any,
    key: str,
    changed: Mapping[bytes, bytes],
    removed: Sequence[bytes],
    replace: bool,
    ttl_ms: int,
) -> None:
    """Queue one session's write on a pipeline: its old content gone (``replace``), fields
    removed, fields set and its TTL."""
    if replace:
        pipe.delete(key)
    if removed:
        pipe.hdel(key, *removed)
    if changed:
        # redis-py types hset's mapping with a union key type a dict of bytes does not match.
        mapping: dict[Any, bytes] = dict(changed)
        pipe.hset(key, mapping=mapping)
        pipe.pexpire(key, ttl_ms)


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header: no session cookie in it
                continue
            if name in jar:
                return jar[name].value
    return None


async def _unavailable(send: ASGISend) -> None:
    """Fail closed: the session store is away, so the request is refused, not run without it."""
    body = b"session store unavailable, try again shortly"
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"5"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
