"""The cache engine's one core: every operation as a plan of round trips, with no I/O of its own.

An operation is a generator. It yields :class:`Send` (the commands of one round trip; the driver
sends back their replies or throws the error), :class:`Sleep` (a single-flight waiter backing off)
or :class:`Compute` (run the caller's function; the driver sends back its result). The sync
driver (:class:`~redis_checkpoint.cache.engine.CacheEngine`) and the async one
(:class:`~redis_checkpoint.cache.engine.AsyncCacheEngine`) only do those three things, so they
share every line of the logic below.

How invalidation works without KEYS or FLUSHDB, across processes and on Redis Cluster
-------------------------------------------------------------------------------------
* **Namespace**: each namespace has a generation counter (``...:#gen``). Every entry is written
  by a small Lua script that stamps the current generation into the stored value
  (``RC1:<gen>:<payload>``); every read fetches the counter with the entries in the same MGET and
  treats an entry of another generation as a miss. Clearing a namespace is one ``INCR``: O(1),
  atomic, seen at once by every process. Old entries are never read again and leave by their TTL.
* **Tag**: a write with tags adds the entry's key to one set per tag (``...:#tag:<tag>``, expiring
  no sooner than its longest-lived member); invalidating a tag deletes the set's members and the
  set in one Lua call.
* **Key**: ``DEL``.
* All keys of a namespace carry the hash tag ``{namespace}`` (see :mod:`.keys`), so each of these
  multi-key commands touches one slot and is valid on a cluster. The price: one namespace lives
  on one cluster node.
* Under an evicting ``maxmemory-policy`` the counter itself could be evicted; entries written
  after the last clear would then read as misses (safe), but entries from before an older clear
  could come back. Run caches on ``volatile-*`` policies, where the counter (no TTL) is never
  evicted.

While Redis is unavailable (the circuit breaker is open, or a call just failed with a connection
error) reads and writes go to the bounded in-memory tier and invalidations are applied there and
queued; the queue is replayed to Redis before anything else once Redis answers, and the memory
tier is then emptied (see :mod:`.memory`). The application never sees a Redis error from a
lookup or a write, with one exception: a Redis that refuses this client (wrong or missing
password, an ACL forbidding a command or a key) raises :class:`~redis_checkpoint.RedisAuthError`
from every call. That is not an outage - the server answered - and serving from memory would hide
a configuration error that retrying cannot fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypedDict, TypeVar

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.cache.keys import KeyLayout
from redis_checkpoint.cache.memory import MemoryTier
from redis_checkpoint.cache.stats import CacheStats
from redis_checkpoint.errors import ConfigurationError, RedisAuthError
from redis_checkpoint.failures import access_error, is_unavailable_error
from redis_checkpoint.metrics import Metrics, get_metrics
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import Compute, LoadScripts, Script, Send, Sleep, send_with_scripts

__all__ = [
    "DEFAULT",
    "DEFAULT_TTLS",
    "MISSING",
    "CacheCore",
    "CoreOptions",
]

log = logging.getLogger("redis_checkpoint.cache")
T = TypeVar("T")

#: Default TTL in seconds per kind of cache. Embeddings: 7 days, since a vector depends only on
#: the text and the model (both in the key) and never goes stale; a week keeps a re-index of the
#: same corpus warm while letting the vectors of a model no longer used leave on their own.
DEFAULT_TTLS: Final[Mapping[str, int]] = {
    "ai": 1800,
    "embeddings": 7 * 24 * 3600,
    "api": 600,
    "db": 300,
    "session": 7200,
    "conversation": 3600,
}

#: Values larger than this (encoded) are not cached; see ``max_value_bytes``.
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: What a lookup returns for a key it does not hold (``None`` is a cacheable value).
MISSING: Final[Any] = _Marker("MISSING")
#: "Use the namespace's TTL" (``None`` means no expiry).
DEFAULT: Final[Any] = _Marker("DEFAULT")

Ttl = float | None


CacheStep = Send | LoadScripts | Sleep | Compute
CachePlan = Generator[CacheStep, Any, T]


# KEYS: generation, entries..., tag sets...
# ARGV: ttl in ms (0 = none), tag-set size above which a write prunes it, the number of entries,
# one limit per tag set (0 = none), payloads (one per entry).
_SET = Script(
    "set",
    """
local gen = redis.call('GET', KEYS[1]) or '0'
local ttl = tonumber(ARGV[1])
local prune_above = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tags = #KEYS - 1 - n
-- A limited tag set makes room first: random members of its own go, nothing else.
for t = 1, tags do
  local limit = tonumber(ARGV[3 + t])
  if limit > 0 then
    local set = KEYS[1 + n + t]
    -- The entries being written leave the set first (and come back below): never victims.
    for i = 1, n do
      redis.call('SREM', set, KEYS[i + 1])
    end
    local excess = redis.call('SCARD', set) + n - limit
    if excess > 0 then
      for _, victim in ipairs(redis.call('SPOP', set, excess)) do
        redis.call('DEL', victim)
      end
    end
  end
end
for i = 1, n do
  local value = 'RC1:' .. gen .. ':' .. ARGV[3 + tags + i]
  if ttl > 0 then
    redis.call('SET', KEYS[i + 1], value, 'PX', ttl)
  else
    redis.call('SET', KEYS[i + 1], value)
  end
end
for t = n + 2, #KEYS do
  local left = redis.call('PTTL', KEYS[t])
  for i = 1, n do
    redis.call('SADD', KEYS[t], KEYS[i + 1])
  end
  if ttl <= 0 then
    redis.call('PERSIST', KEYS[t])
  elseif left == -2 or (left >= 0 and left < ttl) then
    redis.call('PEXPIRE', KEYS[t], ttl)
  end
  -- A long-lived tag set keeps the keys of expired entries: each write drops a few of them.
  if redis.call('SCARD', KEYS[t]) > prune_above then
    for _, member in ipairs(redis.call('SRANDMEMBER', KEYS[t], 16)) do
      if redis.call('EXISTS', member) == 0 then
        redis.call('SREM', KEYS[t], member)
      end
    end
  end
end
return n
""",
)

# KEYS: the tag set. Deletes its members (all in the tag set's slot) and the set.
_INVALIDATE_TAG = Script(
    "invalidate_tag",
    """
local members = redis.call('SMEMBERS', KEYS[1])
local deleted = 0
for i = 1, #members, 500 do
  deleted = deleted + redis.call('DEL', unpack(members, i, math.min(i + 499, #members)))
end
redis.call('DEL', KEYS[1])
return deleted
""",
)

# KEYS: the lock; ARGV: the owner's token. Only the owner releases it.
_UNLOCK = Script(
    "unlock",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)

# KEYS: the generation counter; ARGV: a value no entry carries. Clears the namespace: INCR, or,
# for a counter that is not an integer (something else wrote it), a fresh start at ARGV[1].
_CLEAR = Script(
    "clear",
    """
local ok, n = pcall(redis.call, 'INCR', KEYS[1])
if ok then return n end
redis.call('SET', KEYS[1], ARGV[1])
return tonumber(ARGV[1])
""",
)

CACHE_SCRIPTS: Final[tuple[Script, ...]] = (_SET, _INVALIDATE_TAG, _UNLOCK, _CLEAR)
_MAGIC = b"RC1:"

Status = Literal["ok", "down", "error"]


class CoreOptions(TypedDict, total=False):
    """:class:`CacheCore`'s keyword options, which engines and faces pass on: typed, so that a
    user's mypy catches a misspelt one (tests/test_typing.py keeps the two lists equal)."""

    prefix: str | None
    breaker: CircuitBreaker | None
    metrics: Metrics | None
    memory: MemoryTier | Literal[True] | None
    max_value_bytes: int
    namespace_ttls: Mapping[str, Ttl] | None
    lock_timeout: float
    wait_timeout: float
    clock: Callable[[], float]


class CacheCore:
    """State and logic shared by the sync and async engines of one cache.

    ``prefix`` defaults to ``<settings.key_prefix>:cache``. ``namespace_ttls`` maps a namespace
    to its default TTL (seconds, ``None`` for no expiry); other namespaces use
    ``settings.default_ttl``. ``memory`` is the fallback tier (``None`` disables fallback: reads
    miss and writes are dropped while Redis is away). With ``settings.cache_enabled`` false the
    cache never touches Redis: lookups miss and computations always run.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        prefix: str | None = None,
        breaker: CircuitBreaker | None = None,
        metrics: Metrics | None = None,
        memory: MemoryTier | Literal[True] | None = True,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        namespace_ttls: Mapping[str, Ttl] | None = None,
        lock_timeout: float = 30.0,
        wait_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or Settings.from_env()
        if max_value_bytes < 1:
            raise ValueError(f"max_value_bytes={max_value_bytes!r} must be >= 1")
        if lock_timeout <= 0 or wait_timeout <= 0:
            raise ValueError("lock_timeout and wait_timeout must be > 0 seconds")
        self.metrics = metrics or get_metrics()
        self.layout = KeyLayout(prefix or f"{self.settings.key_prefix}:cache")
        self.breaker = breaker or CircuitBreaker.from_settings(
            self.settings, "cache", on_transition=self.metrics.breaker_transition
        )
        self.memory: MemoryTier | None = MemoryTier() if memory is True else memory
        self.stats = CacheStats(self.metrics)
        self.enabled = self.settings.cache_enabled
        self.max_value_bytes = max_value_bytes
        self.namespace_ttls: dict[str, Ttl] = dict(namespace_ttls or {})
        self.lock_timeout = lock_timeout
        #: A write to a tag set larger than this checks 16 random members and drops the expired.
        self.tag_prune_threshold = 1024
        self.wait_timeout = wait_timeout
        self._clock = clock
        self._lock = threading.Lock()
        # Invalidations made while Redis was away, replayed before anything else on recovery.
        self._pending: list[tuple[Any, ...]] = []
        #: Where Redis is, for error messages (no password); engines on a client describe it.
        self.where = self.settings.redacted_url()

    # -- configuration -------------------------------------------------------------------------

    def ttl_for(self, namespace: str, ttl: Any = DEFAULT) -> Ttl:
        """The TTL a write uses: ``ttl`` if given, else the namespace's, else the settings'."""
        if ttl is DEFAULT:
            ttl = self.namespace_ttls.get(namespace, self.settings.default_ttl)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))):
            raise TypeError(f"ttl={ttl!r} must be seconds (int or float) or None")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl={ttl!r} must be > 0 seconds, or None for no expiry")
        return ttl

    @property
    def pending_invalidations(self) -> int:
        return len(self._pending)

    @property
    def serving_from_memory(self) -> bool:
        return self.breaker.state != "closed"

    # -- talking to Redis ----------------------------------------------------------------------

    def _redis(
        self, namespace: str, commands: tuple[tuple[Any, ...], ...], *, quiet: bool = True
    ) -> Generator[CacheStep, Any, tuple[Status, list[Any]]]:
        """Send ``commands`` unless Redis is known to be away. "down": use the memory tier;
        "error": a command failed (counted; raised instead when not ``quiet``)."""
        if not self.breaker.allow_request():
            return "down", []
        if self._pending and not (yield from self._replay()):
            return "down", []
        try:
            replies = yield from send_with_scripts(commands, CACHE_SCRIPTS)
        except Exception as exc:
            self._refused(exc)
            if is_unavailable_error(exc):
                self._failed(exc)
                return "down", []
            # The server answered: it is up, whatever the command's problem was.
            self.breaker.record_success()
            if not quiet:
                raise
            self.stats.error(namespace, "redis")
            log.warning("cache command failed in namespace %r: %r", namespace, exc)
            return "error", []
        self._succeeded()
        return "ok", replies

    def probe(self) -> CachePlan[bool]:
        """A health check: PING Redis whatever the breaker says. An answer replays the queued
        invalidations, closes the breaker and empties the memory tier (as the next call would);
        a connection error counts as a failure. True when Redis answered."""
        try:
            yield Send((("PING",),))
        except Exception as exc:
            self._refused(exc)
            if is_unavailable_error(exc):
                self._failed(exc)
            return False
        if not (yield from self._replay()):
            return False
        self._succeeded()
        return True

    def _replay(self) -> Generator[CacheStep, Any, bool]:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return True
        try:
            yield from send_with_scripts(tuple(pending), CACHE_SCRIPTS)
        except Exception as exc:
            kept = access_error(exc, self.where) is not None or isinstance(exc, ConfigurationError)
            if is_unavailable_error(exc) or kept:
                with self._lock:  # kept for when Redis is back, or the configuration fixed
                    self._pending[:0] = pending
            self._refused(exc)
            if is_unavailable_error(exc):
                self._failed(exc)
                return False
            log.error("replaying %d invalidations failed, dropped: %r", len(pending), exc)
        else:
            log.warning("replayed %d invalidations made while Redis was away", len(pending))
        self._succeeded()
        return True

    def _refused(self, exc: BaseException) -> None:
        """Raise RedisAuthError if ``exc`` is Redis refusing this client. The server answered,
        so the breaker counts a success (a half-open probe must not wedge it), but the memory
        tier is not used: the caller has to learn that the password or the ACL is wrong."""
        denied = access_error(exc, self.where)
        if denied is not None:
            self._succeeded()
            raise denied from exc
        if isinstance(exc, ConfigurationError):
            # A db the server lacks, cluster mode asked of a lone server: as with a refusal,
            # waiting will not fix it, so the caller hears it instead of a quiet miss.
            self._succeeded()
            raise exc

    def _succeeded(self) -> None:
        if self.breaker.state == "closed":
            if self.breaker.failures:
                self.breaker.record_success()  # failures must be consecutive to open it
            return
        self.breaker.record_success()
        if self.memory is not None:
            self.memory.clear()
        self.metrics.set_fallback("cache", False, len(self._pending))
        log.warning("Redis is reachable again; the cache left its memory tier")

    def _failed(self, exc: BaseException) -> None:
        before = self.breaker.state
        self.breaker.record_failure()
        if before == "closed" and self.breaker.state == "open":
            log.warning("Redis is unavailable (%s); the cache serves from memory", exc)
            if self.memory is not None:
                # A write that raced the end of the last outage may linger there: start clean.
                self.memory.clear()
        self.metrics.set_fallback("cache", self.breaker.state != "closed", len(self._pending))

    def _queue(self, command: tuple[Any, ...]) -> None:
        with self._lock:
            self._pending.append(command)

    # -- entries -------------------------------------------------------------------------------

    def _unwrap(self, namespace: str, raw: Any, generation: bytes) -> bytes | None:
        """The payload of a stored value, or None for a miss (absent, older generation, or
        corrupt: counted as an error)."""
        if raw is None:
            return None
        if isinstance(raw, bytes) and raw.startswith(_MAGIC):
            end = raw.find(b":", len(_MAGIC))
            if end > 0:
                return raw[end + 1 :] if raw[len(_MAGIC) : end] == generation else None
        self.stats.error(namespace, "corrupt")
        return None

    def _decode(
        self, namespace: str, payloads: Iterable[bytes | None], decode: Callable[[bytes], Any]
    ) -> list[Any]:
        values: list[Any] = []
        for payload in payloads:
            value = MISSING
            if payload is not None:
                try:
                    value = decode(payload)
                except Exception as exc:
                    self.stats.error(namespace, "corrupt")
                    log.warning("undecodable cache entry in namespace %r: %r", namespace, exc)
            values.append(value)
        return values

    def _fetch(
        self, namespace: str, keys: Sequence[str | bytes], decode: Callable[[bytes], Any]
    ) -> Generator[CacheStep, Any, list[Any]]:
        entry_keys = [self.layout.entry(namespace, key) for key in keys]
        generation_key = self.layout.generation(namespace)
        status, replies = yield from self._redis(
            namespace, (("MGET", generation_key, *entry_keys),)
        )
        payloads: list[bytes | None]
        if status == "ok":
            found = replies[0]
            generation = found[0] or b"0"
            payloads = [self._unwrap(namespace, raw, generation) for raw in found[1:]]
        elif status == "down" and self.memory is not None:
            self.stats.fallback(namespace, "get")
            payloads = self.memory.get_many(entry_keys)
        else:
            payloads = [None] * len(keys)
        return self._decode(namespace, payloads, decode)

    def get_many(
        self,
        namespace: str,
        keys: Sequence[str | bytes],
        decode: Callable[[bytes], Any],
        *,
        count: bool = True,
    ) -> CachePlan[list[Any]]:
        """The decoded value of each key, or MISSING. One round trip (MGET) for the batch.
        ``count=False``: no hits or misses counted (the caller counts what the lookup was)."""
        if not self.enabled or not keys:
            if count:
                self.stats.lookups(namespace, 0, len(keys))
            return [MISSING] * len(keys)
        start = time.perf_counter()
        values = yield from self._fetch(namespace, keys, decode)
        hits = sum(value is not MISSING for value in values)
        if count:
            self.stats.lookups(namespace, hits, len(values) - hits)
        self.stats.timed(namespace, "get", time.perf_counter() - start)
        return values

    def set_many(
        self,
        namespace: str,
        items: Sequence[tuple[str | bytes, Any]],
        encode: Callable[[Any], bytes],
        *,
        ttl: Any = DEFAULT,
        tags: Sequence[str] = (),
        tag_limits: Mapping[str, int] | None = None,
    ) -> CachePlan[int]:
        """Store the items in one round trip; returns how many were stored.

        ``tag_limits`` bounds tags of ``tags``: a tag holding that many entries already loses
        random ones of its own to make room (so a flood of new keys under one tag evicts nothing
        else); the memory tier does not apply them. Encoding errors (TypeError) reach the caller
        before anything is written; values over ``max_value_bytes`` are skipped and counted.
        """
        seconds = self.ttl_for(namespace, ttl)
        unique_tags = list(dict.fromkeys(tags))
        limits = dict(tag_limits or {})
        for tag, limit in limits.items():
            if tag not in unique_tags:
                raise ValueError(f"tag_limits names {tag!r}, which is not one of the tags")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"the limit of tag {tag!r} must be an int >= 1, not {limit!r}")
        entry_keys: list[str] = []
        payloads: list[bytes] = []
        for key, value in items:
            payload = encode(value)
            if not isinstance(payload, bytes):
                raise TypeError(f"the encoder returned {type(payload).__name__}, not bytes")
            if len(payload) > self.max_value_bytes:
                self.stats.oversize(namespace)
                continue
            entry_keys.append(self.layout.entry(namespace, key))
            payloads.append(payload)
        if not self.enabled or not payloads:
            return 0
        start = time.perf_counter()
        tag_keys = [self.layout.tag(namespace, tag) for tag in unique_tags]
        ttl_ms = 0 if seconds is None else max(1, int(seconds * 1000))
        command = (
            "EVALSHA",
            _SET.sha,
            1 + len(entry_keys) + len(tag_keys),
            self.layout.generation(namespace),
            *entry_keys,
            *tag_keys,
            ttl_ms,
            self.tag_prune_threshold,
            len(entry_keys),
            *(limits.get(tag, 0) for tag in unique_tags),
            *payloads,
        )
        status, _ = yield from self._redis(namespace, (command,))
        if status == "down" and self.memory is not None:
            self.stats.fallback(namespace, "set")
            base = self.layout.base(namespace)
            for entry_key, payload in zip(entry_keys, payloads, strict=True):
                self.memory.set(entry_key, payload, seconds, base, tag_keys)
        stored = len(payloads) if status != "error" else 0
        if stored:
            self.stats.stored(namespace, stored)
        self.stats.timed(namespace, "set", time.perf_counter() - start)
        return stored

    # -- invalidation --------------------------------------------------------------------------

    def _invalidate(
        self, namespace: str, scope: str, command: tuple[Any, ...], in_memory: Callable[[], int]
    ) -> CachePlan[int]:
        start = time.perf_counter()
        status, replies = yield from self._redis(namespace, (command,), quiet=False)
        if status == "down":
            self._queue(command)
            self.stats.fallback(namespace, f"invalidate_{scope}")
        removed = in_memory() if self.memory is not None else 0
        if status == "ok" and scope != "namespace":
            removed = int(replies[0])
        self.stats.deleted(namespace, scope, max(removed, 1) if scope == "namespace" else removed)
        self.stats.timed(namespace, f"invalidate_{scope}", time.perf_counter() - start)
        return removed

    def delete(self, namespace: str, keys: Sequence[str | bytes]) -> CachePlan[int]:
        """Delete entries; returns how many existed."""
        if not keys:
            return 0
        entry_keys = [self.layout.entry(namespace, key) for key in keys]
        memory = self.memory
        return (
            yield from self._invalidate(
                namespace,
                "key",
                ("DEL", *entry_keys),
                lambda: memory.delete(entry_keys) if memory is not None else 0,
            )
        )

    def invalidate_tags(self, namespace: str, tags: Sequence[str]) -> CachePlan[int]:
        """Delete every entry of ``namespace`` written with one of ``tags``, in every process."""
        removed = 0
        memory = self.memory
        for tag in dict.fromkeys(tags):
            tag_key = self.layout.tag(namespace, tag)
            command = ("EVALSHA", _INVALIDATE_TAG.sha, 1, tag_key)
            removed += yield from self._invalidate(
                namespace,
                "tag",
                command,
                lambda key=tag_key: memory.invalidate_tag(key) if memory is not None else 0,  # type: ignore[misc]
            )
        return removed

    def clear(self, namespace: str) -> CachePlan[int]:
        """Invalidate every entry of ``namespace`` at once (one INCR; no scan)."""
        base = self.layout.base(namespace)
        memory = self.memory
        return (
            yield from self._invalidate(
                namespace,
                "namespace",
                # Microseconds since 1970: above any count INCR reached, so no old entry revives.
                (
                    "EVALSHA",
                    _CLEAR.sha,
                    1,
                    self.layout.generation(namespace),
                    time.time_ns() // 1000,
                ),
                lambda: memory.clear_namespace(base) if memory is not None else 0,
            )
        )

    # -- single flight -------------------------------------------------------------------------

    def claim(self, namespace: str, key: str | bytes, seconds: float) -> CachePlan[bool]:
        """Take ``key``'s lock for ``seconds`` unless a caller in any process holds it: one
        caller does a piece of work for everyone (a background refresh). False while Redis is
        away or refuses: then nobody is sure to be alone, so nobody does it."""
        lock_ms = max(1, int(seconds * 1000))
        status, replies = yield from self._redis(
            namespace, (("SET", self.layout.lock(namespace, key), "1", "NX", "PX", lock_ms),)
        )
        return status == "ok" and bool(replies[0])

    def _unlock(self, namespace: str, lock_key: str, token: str) -> Generator[CacheStep, Any, None]:
        try:
            yield from self._redis(namespace, (("EVALSHA", _UNLOCK.sha, 1, lock_key, token),))
        except RedisAuthError:
            # An ACL without scripts: a lock left behind would stall every caller of this key
            # for lock_timeout before it too got the error. DEL is the owner's (unless the
            # computation outlived the lock, which its expiry already made unsafe).
            with contextlib.suppress(RedisAuthError):
                yield from self._redis(namespace, (("DEL", lock_key),))
            raise

    def get_or_compute(
        self,
        namespace: str,
        key: str | bytes,
        decode: Callable[[bytes], Any],
        encode: Callable[[Any], bytes],
        *,
        ttl: Any = DEFAULT,
        tags: Sequence[str] = (),
        lock_timeout: float | None = None,
        wait_timeout: float | None = None,
    ) -> CachePlan[Any]:
        """The cached value, or the result of Compute stored for the next caller.

        Across processes the first caller takes a Redis lock (``SET NX PX``, expiring after
        ``lock_timeout`` so a crashed leader cannot block the key for long) and computes; the
        others poll for its result with a growing back-off (2 ms to 50 ms). If the leader fails,
        nothing is cached, the lock is released and a waiter takes over. A waiter that waited
        ``wait_timeout`` in all computes on its own, as does everyone while Redis is away.
        """
        [value] = yield from self.get_many(namespace, [key], decode)
        if value is not MISSING or not self.enabled:
            if value is MISSING:
                value = yield Compute()
            return value
        lock_key = self.layout.lock(namespace, key)
        token = os.urandom(16).hex()
        lock_ms = max(1, int((lock_timeout or self.lock_timeout) * 1000))
        deadline = self._clock() + (wait_timeout or self.wait_timeout)
        delay = 0.002
        while True:
            status, replies = yield from self._redis(
                namespace, (("SET", lock_key, token, "NX", "PX", lock_ms),)
            )
            if status != "ok":
                break
            if replies[0]:
                try:
                    value = yield Compute()
                    yield from self.set_many(namespace, [(key, value)], encode, ttl=ttl, tags=tags)
                except GeneratorExit:
                    raise  # closed (a cancelled task): no more round trips; the lock expires
                except BaseException:
                    yield from self._unlock(namespace, lock_key, token)
                    raise
                yield from self._unlock(namespace, lock_key, token)
                return value
            if delay == 0.002:  # the first wait of this caller
                self.stats.singleflight_wait(namespace, "redis")
            yield Sleep(delay)
            delay = min(delay * 2, 0.05)
            [value] = yield from self._fetch(namespace, [key], decode)
            if value is not MISSING:
                return value
            if self._clock() >= deadline:
                break
        value = yield Compute()
        yield from self.set_many(namespace, [(key, value)], encode, ttl=ttl, tags=tags)
        return value
