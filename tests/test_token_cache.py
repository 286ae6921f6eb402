"""TokenCache on a test-started redis-server: hits, TTLs from the token's own expiry, negative
results, revocation across instances, single-flight, an outage, and a scan of every key and
value in the server for any trace of a raw token."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import json
import logging
import re
import secrets
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from cache_helpers import private_metrics, unique

from redis_checkpoint.cache import tokens as tokens_module
from redis_checkpoint.cache.tokens import TokenCache

SECRET = "test-secret-" + "k" * 20


def token_cache(url: str, prefix: str | None = None, **options: Any) -> TokenCache:
    options.setdefault("secret", SECRET)
    return TokenCache(url, prefix=prefix or unique("tokens"), metrics=private_metrics(), **options)


@pytest.fixture
def cache(redis_url: str) -> Iterator[TokenCache]:
    tokens = token_cache(redis_url)
    try:
        yield tokens
    finally:
        tokens.close()


def entry_keys(client: redis.Redis, tokens: TokenCache) -> list[bytes]:
    """The keys of the cache's entries (not its tag sets, locks or generation counter)."""
    base = tokens.engine.core.layout.base(tokens.namespace).encode()
    entry = re.compile(re.escape(base) + rb":#[0-9a-f]{32}")
    return [key for key in client.scan_iter(match=base + b":*") if entry.fullmatch(key)]


def the_entry_pttl(client: redis.Redis, tokens: TokenCache) -> int:
    [key] = entry_keys(client, tokens)
    return int(client.pttl(key))


class Counting:
    """A check (``verify``) that records the tokens it was asked about and answers with claims
    (an instance is not a check itself: callable objects are refused, see below)."""

    def __init__(self, answer: Any = None, *, delay: float = 0.0) -> None:
        self.calls: list[Any] = []
        self.answer = answer
        self.delay = delay
        self.lock = threading.Lock()

    def verify(self, token: str | bytes, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls.append((token, args, kwargs))
        time.sleep(self.delay)
        if callable(self.answer):
            return self.answer(token)
        if self.answer is None:
            return {"sub": "alice", "exp": time.time() + 600, "scope": "read"}
        return self.answer


# -- hits, TTLs, negatives, errors -------------------------------------------------------------


def test_a_hit_skips_the_check_and_counts_in_the_engine_stats(cache: TokenCache) -> None:
    check = Counting()

    @cache.cached_check
    def verify(token: str) -> dict[str, Any]:
        """Verify a JWT."""
        return check.verify(token)  # type: ignore[no-any-return]

    first = verify("eyJ.first.token")
    assert verify("eyJ.first.token") == first
    assert len(check.calls) == 1
    verify("eyJ.second.token")
    assert len(check.calls) == 2
    stats = cache.engine.stats()[cache.namespace]
    assert (stats.hits, stats.misses) == (1, 2)
    assert verify.__name__ == "verify" and verify.__doc__ == "Verify a JWT."


def test_the_ttl_is_the_tokens_remaining_life(cache: TokenCache, redis_client: redis.Redis) -> None:
    cache.check("jwt-with-100s-left", lambda t: {"sub": "bob", "exp": time.time() + 100})
    assert 98_000 <= the_entry_pttl(redis_client, cache) <= 100_000
    # Revocation finds the entry as long as it lives: its tag sets live as long.
    layout = cache.engine.core.layout
    for tag in (cache.token_tag("jwt-with-100s-left"), "sub:bob"):
        assert int(redis_client.pttl(layout.tag(cache.namespace, tag))) >= 98_000


def test_the_ttl_is_capped_at_max_ttl(redis_url: str, redis_client: redis.Redis) -> None:
    capped = token_cache(redis_url, max_ttl=60)
    capped.check("long-lived-jwt", lambda t: {"sub": "bob", "exp": time.time() + 86_400})
    assert 58_000 <= the_entry_pttl(redis_client, capped) <= 60_000
    by_default = token_cache(redis_url)  # 3600 s
    by_default.check("jwt-for-two-hours", lambda t: {"sub": "bob", "exp": time.time() + 7200})
    assert 3_598_000 <= the_entry_pttl(redis_client, by_default) <= 3_600_000
    unknown = token_cache(redis_url, max_ttl=120)
    unknown.check("no-expiry-known", lambda t: {"sub": "bob"})
    assert 118_000 <= the_entry_pttl(redis_client, unknown) <= 120_000


def test_an_expires_at_datetime_and_custom_callables(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # The default finds a mapping's expires_at, here an aware datetime (the codec keeps it).
    keyed = token_cache(redis_url)
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=40)
    keyed.check("api-key-1", lambda t: {"sub": "acct-1", "expires_at": soon})
    assert 38_000 <= the_entry_pttl(redis_client, keyed) <= 40_000

    check = Counting(lambda t: {"user": "carol", "valid_until": time.time() + 50, "org": "acme"})
    custom = token_cache(
        redis_url,
        expires_at=lambda r: r["valid_until"],
        subject=lambda r: r["user"],
        tags=lambda r: [f"org:{r['org']}"],
    )
    custom.check("opaque-1", check.verify)
    assert 48_000 <= the_entry_pttl(redis_client, custom) <= 50_000
    assert custom.revoke_subject("carol") == 1
    custom.check("opaque-1", check.verify)
    assert custom.invalidate_tags("org:acme") == 1
    custom.check("opaque-1", check.verify)
    custom.check("opaque-1", check.verify)
    assert len(check.calls) == 3


def test_an_expired_result_is_returned_as_is_and_not_cached(
    cache: TokenCache, redis_client: redis.Redis
) -> None:
    expired = {"sub": "dave", "exp": time.time() - 5}
    check = Counting(expired)
    assert cache.check("expired-jwt", check.verify) == expired
    assert cache.check("expired-jwt", check.verify) == expired
    assert len(check.calls) == 2
    assert entry_keys(redis_client, cache) == []
    assert cache.engine.stats()[cache.namespace].sets == 0  # not even for a moment


def test_a_negative_result_is_cached_for_negative_ttl_then_asked_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    tokens = token_cache(redis_url, negative_ttl=1)
    check = Counting(False)
    assert tokens.check("unknown-api-key", check.verify) is False
    assert tokens.check("unknown-api-key", check.verify) is False
    assert len(check.calls) == 1
    assert 0 < the_entry_pttl(redis_client, tokens) <= 1000
    time.sleep(1.1)
    assert tokens.check("unknown-api-key", check.verify) is False
    assert len(check.calls) == 2


def test_negative_ttl_zero_never_caches_a_negative(
    redis_url: str, redis_client: redis.Redis
) -> None:
    tokens = token_cache(redis_url, negative_ttl=0)
    check = Counting({})
    assert tokens.check("unknown-key", check.verify) == {}
    assert tokens.check("unknown-key", check.verify) == {}
    assert len(check.calls) == 2
    assert entry_keys(redis_client, tokens) == []
    assert tokens.engine.stats()[tokens.namespace].sets == 0


def test_an_exception_propagates_and_is_not_cached(
    cache: TokenCache, redis_client: redis.Redis
) -> None:
    calls: list[str] = []

    @cache.cached_check
    def verify(token: str) -> dict[str, Any]:
        calls.append(token)
        raise PermissionError("bad signature")

    for _ in range(2):
        with pytest.raises(PermissionError, match="bad signature"):
            verify("forged-jwt")
    assert len(calls) == 2
    assert entry_keys(redis_client, cache) == []


def test_other_arguments_are_keyed_apart(cache: TokenCache) -> None:
    check = Counting()

    @cache.cached_check
    def verify(token: str, scope: str, *, audience: str) -> dict[str, Any]:
        return check.verify(token, scope, audience=audience)  # type: ignore[no-any-return]

    verify("shared-token", "read", audience="a")
    verify("shared-token", "read", audience="b")
    verify("shared-token", "write", audience="a")
    verify("shared-token", "read", audience="a")
    assert [call[1:] for call in check.calls] == [
        (("read",), {"audience": "a"}),
        (("read",), {"audience": "b"}),
        (("write",), {"audience": "a"}),
    ]


def test_another_secret_finds_nothing(redis_url: str) -> None:
    prefix = unique("secrets")
    check = Counting()
    token_cache(redis_url, prefix).check("the-token", check.verify)
    token_cache(redis_url, prefix).check("the-token", check.verify)
    token_cache(redis_url, prefix, secret="another-secret-of-32-bytes-long!").check(
        "the-token", check.verify
    )
    assert len(check.calls) == 2


def test_a_stale_entry_is_checked_again(
    cache: TokenCache, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An entry read by a host whose clock is ahead, past the result's exp: never served.
    check = Counting(lambda t: {"sub": "erin", "exp": time.time() + 100})
    cache.check("skewed-token", check.verify)
    assert entry_keys(redis_client, cache) != []
    ahead = types.SimpleNamespace(time=lambda: time.time() + 200)
    monkeypatch.setattr(tokens_module, "time", ahead)
    cache.check("skewed-token", check.verify)
    assert len(check.calls) == 2
    assert entry_keys(redis_client, cache) == []  # dropped, and the re-check was expired here


# -- what is refused -----------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["x" * 15, b"x" * 15, ""])
def test_a_short_secret_is_refused(redis_url: str, secret: str | bytes) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes") as refused:
        TokenCache(redis_url, secret=secret)
    assert "x" * 15 not in str(refused.value)  # the secret is not shown
    TokenCache(redis_url, secret="x" * 16).close()


def test_bad_arguments_are_refused(cache: TokenCache, redis_url: str) -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        TokenCache(redis_url, secret=12345678901234567890)  # type: ignore[arg-type]
    for options in ({"max_ttl": 0}, {"max_ttl": float("inf")}, {"negative_ttl": -1}):
        with pytest.raises(ValueError, match="seconds"):
            TokenCache(redis_url, secret=SECRET, **options)

    @cache.cached_check
    def verify(token: Any) -> bool:
        return True

    with pytest.raises(TypeError, match="first positional argument"):
        verify(token="by-keyword")
    with pytest.raises(TypeError, match="str or bytes"):
        verify(12345)
    # A partial (or a callable object) has no name to key on: two of them would share entries.
    with pytest.raises(TypeError, match="cannot key"):
        cache.check("token", functools.partial(verify))


def test_an_unencodable_result_is_returned_uncached_with_one_warning(
    cache: TokenCache, caplog: pytest.LogCaptureFixture
) -> None:
    odd = {"sub": "frank", "exp": time.time() + 60, "session": object()}
    check = Counting(odd)
    with caplog.at_level(logging.WARNING, logger="redis_checkpoint.cache"):
        assert cache.check("token-a", check.verify) is odd
        assert cache.check("token-a", check.verify) is odd
    assert len(check.calls) == 2
    warned = [r for r in caplog.records if "not cached" in r.getMessage()]
    assert len(warned) == 1 and "object" in warned[0].getMessage()
    assert cache.engine.stats()[cache.namespace].errors == 2


def test_a_result_or_tag_holding_the_token_is_not_cached(
    cache: TokenCache, redis_client: redis.Redis
) -> None:
    echo = Counting(lambda t: {"sub": "gina", "exp": time.time() + 60, "token": t})
    raw = "opaque-" + secrets.token_urlsafe(24)
    assert cache.check(raw, echo.verify)["token"] == raw
    cache.check(raw, echo.verify)
    assert len(echo.calls) == 2
    as_subject = Counting(lambda t: {"sub": t, "exp": time.time() + 60})  # an API key as sub
    cache.check(raw, as_subject.verify)
    cache.check(raw, as_subject.verify)
    assert len(as_subject.calls) == 2
    assert entry_keys(redis_client, cache) == []


# -- revocation ------------------------------------------------------------------------------


def test_revoke_subject_from_another_instance_drops_the_entries(redis_url: str) -> None:
    prefix = unique("revoke-sub")
    first = token_cache(redis_url, prefix)
    other_process = token_cache(redis_url, prefix)  # its own engine, client and memory tier
    subjects = {"jwt-h1": "henry", "jwt-h2": "henry", "jwt-i1": "iris"}
    check = Counting(lambda t: {"sub": subjects[t], "exp": time.time() + 600})
    for token in subjects:
        first.check(token, check.verify)
    assert other_process.revoke_subject("henry") == 2
    for token in subjects:
        first.check(token, check.verify)
    assert [call[0] for call in check.calls[3:]] == ["jwt-h1", "jwt-h2"]  # iris stayed cached
    first.close()
    other_process.close()


def test_revoke_token_drops_all_its_variants(cache: TokenCache) -> None:
    check = Counting()

    @cache.cached_check
    def verify(token: str | bytes, *, audience: str = "api") -> dict[str, Any]:
        return check.verify(token)  # type: ignore[no-any-return]

    for token in ("tok-revoked", b"tok-revoked", "tok-kept"):
        verify(token)
        verify(token, audience="admin")
    assert len(check.calls) == 6
    assert cache.revoke(b"tok-revoked") == 4
    for token in ("tok-revoked", b"tok-revoked", "tok-kept"):
        verify(token)
        verify(token, audience="admin")
    assert len(check.calls) == 10
    assert cache.token_tag("tok-revoked") == cache.token_tag(b"tok-revoked")


def test_revoke_drops_a_cached_negative(cache: TokenCache) -> None:
    created: set[str] = set()
    check = Counting(lambda t: {"sub": "kim"} if t in created else None)
    assert cache.check("sk_new_key_0001", check.verify) is None
    created.add("sk_new_key_0001")
    assert cache.check("sk_new_key_0001", check.verify) is None  # the cached negative
    cache.revoke("sk_new_key_0001")  # the app just created the key
    assert cache.check("sk_new_key_0001", check.verify) == {"sub": "kim"}


async def test_async_checks_hits_and_revocations(redis_url: str) -> None:
    tokens = token_cache(redis_url)
    calls: list[str] = []

    @tokens.cached_check
    async def introspect(token: str) -> dict[str, Any]:
        calls.append(token)
        await asyncio.sleep(0)
        return {"active": True, "sub": "lena", "exp": time.time() + 300}

    assert (await introspect("opaque-async"))["sub"] == "lena"
    await introspect("opaque-async")
    assert len(calls) == 1
    assert await tokens.arevoke_subject("lena") == 1
    await introspect("opaque-async")
    assert await tokens.arevoke("opaque-async") == 1
    await tokens.acheck("opaque-async", introspect.__wrapped__)  # type: ignore[attr-defined]
    assert len(calls) == 3
    assert tokens.async_engine.round_trips > 0  # the async driver did the work
    await tokens.aclose()


# -- single flight -----------------------------------------------------------------------------


def test_ten_threads_checking_one_new_token_run_the_check_once(cache: TokenCache) -> None:
    check = Counting(delay=0.2)
    start = threading.Barrier(10)
    results: list[Any] = []

    def worker() -> None:
        start.wait()
        results.append(cache.check("brand-new-token", check.verify))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(check.calls) == 1
    assert len(results) == 10 and all(result == results[0] for result in results)


def test_threads_of_two_instances_run_the_check_once(redis_url: str) -> None:
    # No shared process state: only the Redis lock and the first write keep this to one run.
    prefix = unique("flight")
    first, second = token_cache(redis_url, prefix), token_cache(redis_url, prefix)
    check = Counting(delay=0.3)
    start = threading.Barrier(6)
    results: list[Any] = []

    def worker(tokens: TokenCache) -> None:
        start.wait()
        results.append(tokens.check("cross-process-token", check.verify))

    threads = [threading.Thread(target=worker, args=(t,)) for t in (first, second) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(check.calls) == 1 and len(results) == 6
    first.close()
    second.close()


async def test_ten_tasks_checking_one_new_token_run_the_check_once(redis_url: str) -> None:
    tokens = token_cache(redis_url)
    calls: list[str] = []

    async def verify(token: str) -> dict[str, Any]:
        calls.append(token)
        await asyncio.sleep(0.2)
        return {"sub": "mia", "exp": time.time() + 60}

    results = await asyncio.gather(*(tokens.acheck("brand-new-async", verify) for _ in range(10)))
    assert len(calls) == 1 and all(result == results[0] for result in results)
    await tokens.aclose()


# -- Redis away ------------------------------------------------------------------------------


def test_with_redis_down_the_check_runs_and_answers(dead_url: str) -> None:
    uncached = token_cache(dead_url, memory=None)
    check = Counting()
    for _ in range(3):
        assert uncached.check("token-during-outage", check.verify)["sub"] == "alice"
    assert len(check.calls) == 3  # nothing to keep it in
    with_memory = token_cache(dead_url)  # the engine's memory tier answers meanwhile
    assert with_memory.check("token-during-outage", check.verify)["sub"] == "alice"
    assert with_memory.check("token-during-outage", check.verify)["sub"] == "alice"
    assert len(check.calls) == 4
    assert with_memory.revoke_subject("alice") == 1  # queued for Redis, applied in memory
    with_memory.check("token-during-outage", check.verify)
    assert len(check.calls) == 5


async def test_with_redis_down_an_async_check_runs_and_answers(dead_url: str) -> None:
    tokens = token_cache(dead_url, memory=None)

    async def verify(token: str) -> dict[str, Any]:
        return {"sub": "noor", "exp": time.time() + 60}

    assert (await tokens.acheck("async-outage", verify))["sub"] == "noor"
    await tokens.aclose()


# -- not one byte of a raw token in Redis ----------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_like(subject: str, lifetime: float) -> str:
    header = {"kid": secrets.token_hex(8), "alg": "RS256", "typ": "JWT"}
    claims = {"sub": subject, "exp": int(time.time() + lifetime), "jti": secrets.token_hex(8)}
    parts = [json.dumps(header).encode(), json.dumps(claims).encode(), secrets.token_bytes(64)]
    return ".".join(_b64(part) for part in parts)


def decode_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return claims


def every_stored_blob(client: redis.Redis) -> Iterator[bytes]:
    """Every key of the server and every piece of every value, whatever its type."""
    server: Any = client  # its replies are bytes (the stubs allow str too)
    for key in server.scan_iter(count=1000):
        yield key
        kind = server.type(key)
        if kind == b"string":
            yield server.get(key) or b""
        elif kind == b"hash":
            for field, value in server.hgetall(key).items():
                yield field
                yield value
        elif kind == b"set":
            yield from server.smembers(key)
        elif kind == b"zset":
            yield from (member for member, _ in server.zrange(key, 0, -1, withscores=True))
        elif kind == b"list":
            yield from server.lrange(key, 0, -1)
        elif kind == b"stream":
            for entry_id, fields in server.xrange(key):
                yield entry_id
                for field, value in fields.items():
                    yield field
                    yield value
        elif kind != b"none":  # expired since the SCAN
            yield server.dump(key) or b""


def traces(raw_tokens: list[bytes], client: redis.Redis, width: int = 12) -> list[bytes]:
    """The stored blobs that hold any ``width``-byte piece of a raw token, or an unkeyed
    SHA-256 of one (what a careless cache would key on)."""
    pieces = {token[i : i + width] for token in raw_tokens for i in range(len(token) - width + 1)}
    pieces |= {hashlib.sha256(token).hexdigest().encode() for token in raw_tokens}
    found = []
    for blob in every_stored_blob(client):
        if any(blob[i : i + width] in pieces for i in range(len(blob) - width + 1)) or any(
            digest in blob for digest in pieces if len(digest) == 64
        ):
            found.append(blob)
    return found


def test_no_raw_token_reaches_redis(redis_url: str, redis_client: redis.Redis) -> None:
    tokens = token_cache(redis_url, negative_ttl=60)
    known_keys: dict[bytes, dict[str, Any]] = {}

    @tokens.cached_check
    def verify_jwt(token: str, *, audience: str) -> dict[str, Any]:
        return decode_claims(token) | {"aud": audience}

    @tokens.cached_check
    def look_up_api_key(key: str | bytes) -> dict[str, Any] | None:
        return known_keys.get(key.encode() if isinstance(key, str) else key)

    raw: list[str | bytes] = []
    for i in range(8):
        token = jwt_like(f"user-{i}", lifetime=600 + i)
        raw.append(token)
        assert verify_jwt(token, audience="api")["sub"] == f"user-{i}"
        verify_jwt(token, audience="admin")
    for i in range(6):
        key = "sk_live_" + secrets.token_urlsafe(24)
        known_keys[key.encode()] = {"sub": f"acct-{i}", "scopes": ["read", "write"]}
        raw.append(key)
        assert look_up_api_key(key) == {"sub": f"acct-{i}", "scopes": ["read", "write"]}
    for i in range(4):
        key_bytes = b"pat_" + secrets.token_hex(20).encode()
        known_keys[key_bytes] = {"sub": f"bot-{i}", "expires_at": time.time() + 900}
        raw.append(key_bytes)
        assert look_up_api_key(key_bytes) is not None
    for _ in range(3):
        unknown = "sk_live_" + secrets.token_urlsafe(24)  # negatives are stored too
        raw.append(unknown)
        assert look_up_api_key(unknown) is None
    tokens.revoke(raw[0])  # revocations write nothing of the token either
    tokens.revoke_subject("acct-1")

    base = tokens.engine.core.layout.base(tokens.namespace).encode()
    ours = list(redis_client.scan_iter(match=base + b":*"))
    assert len(entry_keys(redis_client, tokens)) == 2 * 7 + 5 + 4 + 3  # the scan sees the cache
    assert len(ours) > 25  # and its tag sets

    raw_bytes = [t.encode() if isinstance(t, str) else t for t in raw]
    assert len(raw_bytes) == 21
    assert traces(raw_bytes, redis_client) == []

    # The scan would have seen a leak: a piece of a token written anywhere is found.
    canary = base + b":canary"
    redis_client.hset(canary, "note", b"leaked " + raw_bytes[9][3:15] + b" here")
    try:
        assert len(traces(raw_bytes, redis_client)) == 1
    finally:
        redis_client.delete(canary)
    tokens.close()
