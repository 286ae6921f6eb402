"""Auth-token checks (JWT verification, OAuth introspection, API-key lookups) cached under a keyed
hash of the token: ``TokenCache``.

The raw token never reaches Redis. An entry's key is the digest (:func:`derive_key`) of the check
function's name, the token's HMAC-SHA256 under the app's secret and the check's other arguments;
its value is ``[until, result]`` in the cache codec (msgpack, no pickle); its tags are
``token:<first 128 bits of the HMAC>`` (for :meth:`TokenCache.revoke`), ``sub:<subject>`` (for
:meth:`TokenCache.revoke_subject`) and the app's own. Without the secret, nothing in Redis tells
which token an entry belongs to. A result or a tag that holds the token verbatim (a check that
echoes its input) is returned uncached, with a warning.

How long a result is kept:

* a truthy result until its own expiry (``expires_at(result)``; by default its ``exp`` or
  ``expires_at``, as a key of a mapping or an attribute), never longer than ``max_ttl``
  (3600 s), and for ``max_ttl`` when its expiry is unknown; an already expired one is returned
  as is and not cached;
* a falsy result (``None``, ``False``, empty) for ``negative_ttl`` (30 s; 0: not cached);
* an exception is never cached: it propagates, and the next check runs again.

Every check goes through the engine's single-flight (``get_or_compute``): concurrent checks of
one token, in threads, tasks or processes, run the check function once. The single-flight
stores the result before its expiry and tags are known (they come from the result), so the
caller that ran the check then rewrites the entry with its own TTL and tags, one round trip
later; until then it lives :data:`SETTLING_TTL` at most. A read also compares ``until`` with the
clock, so a result is never served past its expiry, whatever the TTL in Redis says.

A revocation (by token, subject or tag) deletes the entries in every process, at once. As with
any cache filled after a check, a revocation that lands while a check of the same token is
running can miss that check's entry: revoke upstream first, then here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar, cast

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.cache.face import EngineOwner, UsesEngines
from redis_checkpoint.cache.keys import Digest, derive_key
from redis_checkpoint.client import AsyncRedisClient, SyncRedisClient
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import Compute, Invoke, adrive, drive

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from redis_checkpoint.cache.core import CoreOptions

__all__ = ["MIN_SECRET_BYTES", "SETTLING_TTL", "TokenCache"]

log = logging.getLogger("redis_checkpoint.cache")
P = ParamSpec("P")
R = TypeVar("R")
Token = TypeVar("Token", bound="str | bytes")

#: The shortest secret accepted: the HMAC that hides tokens is only as strong as its key.
MIN_SECRET_BYTES: Final = 16
#: At most this long (seconds) an entry lives as the single-flight wrote it, before the caller
#: that ran the check rewrites it with its own TTL and tags.
SETTLING_TTL: Final = 5.0
#: Where a result's expiry is found by default: a key of a mapping, else an attribute.
_EXPIRY_FIELDS: Final = ("exp", "expires_at")


@dataclass(frozen=True)
class _Checked:
    """A check's result and until when it may be served (POSIX seconds; None: not cached).
    ``tags`` are its entry's tags: known to the caller that ran the check, not stored."""

    until: float | None
    result: Any
    tags: tuple[str, ...] = ()

    def live(self) -> bool:
        return self.until is not None and self.until > time.time()


class _NotCached(Exception):
    """Raised by the encoder to keep a result out of Redis; carries it out of the single-flight
    (which then stores nothing and releases its lock)."""

    def __init__(self, checked: _Checked) -> None:
        super().__init__("not cached")
        self.checked = checked


@dataclass(frozen=True)
class _Call:
    """One check: its entry's key, its token's tag and the token itself (kept in memory only, to
    make sure nothing written holds it)."""

    key: Digest
    tag: str
    token: bytes


def _timestamp(value: Any) -> float | None:
    """POSIX seconds of an expiry given as a number or a datetime (a naive one is local time, as
    ``datetime.timestamp`` reads it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return None


def _default_expiry(result: Any) -> float | None:
    """``exp`` (JWT claims) or ``expires_at``: a key of a mapping, else an attribute."""
    for name in _EXPIRY_FIELDS:
        found = result.get(name) if isinstance(result, Mapping) else getattr(result, name, None)
        seconds = _timestamp(found)
        if seconds is not None:
            return seconds
    return None


def _default_subject(result: Any) -> str | None:
    """A mapping's ``sub`` (JWT claims, an introspection response)."""
    if not isinstance(result, Mapping):
        return None
    subject = result.get("sub")
    if isinstance(subject, int) and not isinstance(subject, bool):
        return str(subject)
    return subject if isinstance(subject, str) and subject else None


def _as_bytes(text: str | bytes) -> bytes:
    return text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)


def _duration(name: str, value: Any, *, zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r} must be seconds (int or float)")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name}={value!r} must be {'>= 0' if zero else '> 0'} seconds")
    return float(value)


def _load_checked(payload: bytes) -> _Checked:
    data = codec.loads(payload)
    if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], float)):
        raise ValueError("a token cache entry must be [until, result]")
    return _Checked(data[0], data[1])


class TokenCache(UsesEngines):
    """Cache an app's per-request token check: ``@tokens.cached_check`` on a sync or async
    function whose first positional argument is the token (str or bytes), or
    ``tokens.check(token, fn, ...)`` / ``await tokens.acheck(token, fn, ...)``.

    ``secret``: the HMAC key that hides tokens (at least :data:`MIN_SECRET_BYTES` bytes; keep it
    in the app's configuration; a new secret orphans every entry, which then expires).
    ``target``/``engine``/``async_engine`` and the engine options as for the other faces.
    ``max_ttl``: the longest a result is kept; ``negative_ttl``: how long a falsy one is (0: not
    cached). ``expires_at(result)``: its expiry in POSIX seconds (or a datetime), None if
    unknown; ``subject(result)``: its subject, for :meth:`revoke_subject`; ``tags(result)``:
    more tags, for :meth:`invalidate_tags` (neither is asked of a falsy result).

    An entry is keyed by the check function's module and qualified name, the token and the
    other arguments: whatever else the check depends on (an audience, a tenant: a bound
    method's instance, a closure's variables) must be an argument, or get its own namespace.
    """

    def __init__(
        self,
        target: str | Settings | SyncRedisClient | AsyncRedisClient | None = None,
        *,
        secret: str | bytes,
        engine: CacheEngine | None = None,
        async_engine: AsyncCacheEngine | None = None,
        namespace: str = "tokens",
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        expires_at: Callable[[Any], float | None] | None = None,
        subject: Callable[[Any], str | None] | None = None,
        tags: Callable[[Any], Sequence[str]] | None = None,
        **engine_options: Unpack[CoreOptions],
    ) -> None:
        if not isinstance(secret, (str, bytes)):
            raise TypeError(f"secret must be str or bytes, not {type(secret).__name__}")
        key = _as_bytes(secret)
        if len(key) < MIN_SECRET_BYTES:
            # The secret itself is never shown: it would end up in logs.
            raise ValueError(
                f"TokenCache needs a secret of at least {MIN_SECRET_BYTES} bytes, got "
                f"{len(key)}: the HMAC that keeps tokens out of Redis is only as strong as its "
                "key (make one with secrets.token_hex(32) and keep it in the app's config)"
            )
        self.max_ttl = _duration("max_ttl", max_ttl, zero=False)
        self.negative_ttl = _duration("negative_ttl", negative_ttl, zero=True)
        self._secret = key
        self._expires_at = expires_at or _default_expiry
        self._subject = subject or _default_subject
        self._tags = tags
        self._engines = EngineOwner(
            target, engine, async_engine, engine_options, face=type(self).__name__
        )
        self.namespace = namespace
        self._engines.core.stats.set_cache_type(namespace, "token")
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()

    # -- keys and entries (shared by both drivers) ---------------------------------------------

    def token_tag(self, token: str | bytes) -> str:
        """The tag of every entry of ``token``: 128 bits of its HMAC, never the token."""
        return self._tag_of(self._mac(token))

    @staticmethod
    def _tag_of(mac: str) -> str:
        return f"token:{mac[:32]}"

    def _mac(self, token: str | bytes) -> str:
        if not isinstance(token, (str, bytes)):
            raise TypeError(
                f"the token (the check's first positional argument) must be str or bytes, "
                f"not {type(token).__name__}"
            )
        return hmac.new(self._secret, _as_bytes(token), hashlib.sha256).hexdigest()

    def _call(
        self,
        token: str | bytes,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> _Call:
        name = getattr(fn, "__qualname__", None)
        if not isinstance(name, str):
            # A partial or a callable object: two of them would share entries.
            raise TypeError(
                f"cannot key checks made by {fn!r}: pass a function (its module and qualified "
                "name are in the key), with what varies as arguments"
            )
        mac = self._mac(token)
        key = derive_key(
            "token-check",
            f"{fn.__module__}.{name}",
            type(token).__name__,  # a check may answer a str and a bytes token differently
            mac,
            material=[list(args), {k: kwargs[k] for k in sorted(kwargs)}],
            what=f"for {name}",
            hint="pass the check's other arguments as data the cache codec keeps (str, int...)",
        )
        return _Call(key, self._tag_of(mac), _as_bytes(token))

    def _settle(self, result: Any) -> _Checked:
        """Until when ``result`` may be served, and its tags (the caching policy)."""
        now = time.time()
        if not result:
            if not self.negative_ttl:
                return _Checked(None, result)
            return _Checked(now + min(self.negative_ttl, self.max_ttl), result)
        until = now + self.max_ttl
        expiry = self._expires_at(result)
        if expiry is not None:
            seconds = _timestamp(expiry)
            if seconds is None:
                raise TypeError(
                    f"expires_at returned {type(expiry).__name__}: it must return POSIX seconds "
                    "(int or float), a datetime, or None"
                )
            # Written so that NaN counts as expired: an unreadable expiry is not trusted.
            if not seconds > now:
                return _Checked(None, result)
            until = min(until, seconds)
        return _Checked(until, result, self._result_tags(result))

    def _result_tags(self, result: Any) -> tuple[str, ...]:
        subject = self._subject(result)
        found = [f"sub:{subject}"] if subject else []
        if self._tags is not None:
            extra = self._tags(result)
            if isinstance(extra, str) or not all(isinstance(tag, str) for tag in extra):
                raise TypeError("tags(result) must return a sequence of str")
            found.extend(extra)
        return tuple(found)

    def _encode(self, token: bytes, checked: _Checked) -> bytes:
        """The stored form of a check; :class:`_NotCached` for one that must not be stored."""
        if checked.until is None:
            raise _NotCached(checked)
        try:
            payload = codec.dumps([checked.until, checked.result])
        except TypeError as exc:
            self._not_cached("unencodable", f"a token check's result is not cached: {exc}")
            raise _NotCached(checked) from None
        if token and (token in payload or any(token in _as_bytes(t) for t in checked.tags)):
            self._not_cached(
                "token-in-result",
                "a token check's result (or a tag of it) holds the token itself: not cached, "
                "so that the token never reaches Redis",
            )
            raise _NotCached(checked)
        return payload

    def _not_cached(self, kind: str, message: str) -> None:
        self._engines.core.stats.error(self.namespace, kind)
        with self._warned_lock:
            first = kind not in self._warned
            self._warned.add(kind)
        if first:  # once per kind: a check runs on every request
            log.warning("%s (namespace %r; said once)", message, self.namespace)

    def _plan(self, call: _Call, load: Callable[[], Any]) -> Generator[Invoke | Compute, Any, Any]:
        """The steps of one check, shared by both drivers: :class:`Invoke` of the driver's
        engine, and :class:`Compute` (the driver runs ``load``: the check, then
        :meth:`_settle`)."""
        ran: list[bool] = []

        def compute() -> Any:
            ran.append(True)  # this caller ran the check: the entry needs its TTL and tags
            return load()

        encode = functools.partial(self._encode, call.token)
        options = {
            "ttl": min(SETTLING_TTL, self.max_ttl),
            "tags": [call.tag],
            "encode": encode,
            "decode": _load_checked,
        }
        try:
            checked = yield Invoke("get_or_compute", (self.namespace, call.key, compute), options)
        except _NotCached as refused:
            return refused.checked.result
        if not ran:
            if checked.live():
                return checked.result
            # Stored by a host whose clock is behind ours: past its expiry here, so checked anew.
            yield Invoke("delete", (self.namespace, call.key))
            checked = yield Compute()
        if checked.until is None:
            return checked.result
        seconds = checked.until - time.time()
        if seconds <= 0:  # expired while it was being stored
            yield Invoke("delete", (self.namespace, call.key))
            return checked.result
        tags = [call.tag, *checked.tags]
        with contextlib.suppress(_NotCached):  # the encoder said why
            yield Invoke(
                "set",
                (self.namespace, call.key, checked),
                {"ttl": seconds, "tags": tags, "encode": encode},
            )
        return checked.result

    # -- checks ----------------------------------------------------------------------------------

    def check(
        self,
        token: Token,
        fn: Callable[Concatenate[Token, P], R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """``fn(token, *args, **kwargs)``, cached; run once for concurrent checks of one token."""
        call = self._call(token, fn, args, kwargs)
        engine = self.engine

        def load() -> _Checked:
            return self._settle(fn(token, *args, **kwargs))

        def handle(step: Invoke | Compute) -> Any:
            return load() if isinstance(step, Compute) else step.on(engine)

        return cast(R, drive(self._plan(call, load), handle))

    async def acheck(
        self,
        token: Token,
        fn: Callable[Concatenate[Token, P], Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """:meth:`check` for an async ``fn``, on redis.asyncio."""
        call = self._call(token, fn, args, kwargs)
        engine = self.async_engine

        async def load() -> _Checked:
            return self._settle(await fn(token, *args, **kwargs))

        async def handle(step: Invoke | Compute) -> Any:
            return await (load() if isinstance(step, Compute) else step.on(engine))

        return cast(R, await adrive(self._plan(call, load), handle))

    def cached_check(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async check whose first positional argument is the token: each
        call returns :meth:`check`'s (or :meth:`acheck`'s) result."""

        def split(args: Sequence[Any]) -> tuple[Any, Sequence[Any]]:
            if not args:
                raise TypeError(
                    f"{fn.__qualname__}: pass the token as the first positional argument"
                )
            return args[0], args[1:]

        checker = cast(Callable[..., Any], fn)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token, rest = split(args)
                return await self.acheck(token, checker, *rest, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            token, rest = split(args)
            return cast(R, self.check(token, checker, *rest, **kwargs))

        return wrapper

    # -- revocation ------------------------------------------------------------------------------

    def revoke(self, token: str | bytes) -> int:
        """Drop every cached check of ``token`` (any function, any arguments), in every process;
        returns how many entries were deleted. Also what makes a new API key's cached negative
        go at once."""
        return self.engine.invalidate_tags(self.namespace, self.token_tag(token))

    def revoke_subject(self, subject: str) -> int:
        """Drop every cached check whose result has ``subject``, in every process."""
        return self.engine.invalidate_tags(self.namespace, f"sub:{subject}")

    def invalidate_tags(self, *tags: str) -> int:
        """Drop every cached check tagged with one of ``tags`` (by ``tags(result)``)."""
        return self.engine.invalidate_tags(self.namespace, *tags)

    def clear(self) -> None:
        """Drop every cached check of this namespace (one INCR)."""
        self.engine.clear(self.namespace)

    async def arevoke(self, token: str | bytes) -> int:
        return await self.async_engine.invalidate_tags(self.namespace, self.token_tag(token))

    async def arevoke_subject(self, subject: str) -> int:
        return await self.async_engine.invalidate_tags(self.namespace, f"sub:{subject}")

    async def ainvalidate_tags(self, *tags: str) -> int:
        return await self.async_engine.invalidate_tags(self.namespace, *tags)

    async def aclear(self) -> None:
        await self.async_engine.clear(self.namespace)
