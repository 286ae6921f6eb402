"""A refused password or ACL is not an outage: RedisAuthError naming the cause, on real servers.

The server below requires a password and has two ACL users: ``noscript`` may run everything
but EVAL/EVALSHA (the cache's writes are scripts), ``fenced`` may only touch keys under
``allowed:``. Every cache face, the health monitor, the management API and the CLI must raise
or report RedisAuthError - never serve from memory, never open a breaker, never print a
password.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.exceptions as rexc
import redis.sentinel
from cache_helpers import CountingEmbeddings, private_metrics, unique
from http_helpers import make_app
from langchain_core.outputs import Generation
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_checkpoint import (
    AsyncCacheEngine,
    CachedEmbeddings,
    CacheEngine,
    HealthMonitor,
    LLMCache,
    NodeCache,
    QueryCache,
    RedisAuthError,
    RedisSaver,
    create_management_app,
)
from redis_checkpoint.cache.engine import _Engine
from redis_checkpoint.cli import EXIT_AUTH, main
from redis_checkpoint.client import (
    acheck_connection,
    check_connection,
    create_async_client,
    create_client,
)
from redis_checkpoint.failures import access_error, is_unavailable_error
from redis_checkpoint.testing import RedisClusterServers, RedisSentinelGroup, RedisServer

PASSWORD = "Sup3r-s3cret-default"
WRONG = "Wr0ng-guess-4711"
NOSCRIPT_PW = "n0script-pw-0815"
FENCED_PW = "f3nced-pw-2342"
NOCHAN_PW = "n0chan-pw-1337"
SECRETS = (PASSWORD, WRONG, NOSCRIPT_PW, FENCED_PW, NOCHAN_PW)


@pytest.fixture(scope="module")
def secured(redis_server_bin: str) -> Iterator[RedisServer]:
    server = RedisServer(binary=redis_server_bin, password=PASSWORD)
    with server:
        admin = server.client()
        admin.execute_command(
            "ACL", "SETUSER", "noscript", "on", f">{NOSCRIPT_PW}", "~*", "&*", "+@all",
            "-eval", "-evalsha",
        )  # fmt: skip
        admin.execute_command(
            "ACL", "SETUSER", "fenced", "on", f">{FENCED_PW}", "~allowed:*", "&*", "+@all"
        )
        admin.execute_command(
            "ACL", "SETUSER", "nochan", "on", f">{NOCHAN_PW}", "~*", "resetchannels", "+@all"
        )
        admin.close()
        yield server


def url(server: RedisServer, user: str = "", password: str | None = None) -> str:
    auth = f"{user}:{password}@" if password is not None else ""
    return f"redis://{auth}{server.host}:{server.port}/0"


@pytest.fixture(scope="module")
def urls(secured: RedisServer) -> dict[str, str]:
    return {
        "wrong": url(secured, "", WRONG),
        "none": url(secured),
        "noscript": url(secured, "noscript", NOSCRIPT_PW),
        "fenced": url(secured, "fenced", FENCED_PW),
        "nochan": url(secured, "nochan", NOCHAN_PW),
        "good": url(secured, "", PASSWORD),
    }


# (url name, reason, words the message must hold)
REFUSALS = [
    ("wrong", "wrong_password", "wrong password"),
    ("none", "password_required", "requires a password and none was given"),
]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a password leaked into {text!r}"


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.exc_info[1] if r.exc_info else ''}"
        for r in caplog.records
    )


def assert_refused(
    exc: pytest.ExceptionInfo[RedisAuthError], reason: str, words: str, port: int
) -> None:
    error = exc.value
    assert error.reason == reason
    assert words in str(error)
    assert f"127.0.0.1:{port}" in str(error)
    assert_no_secret(str(error), repr(error), error.where)


def assert_no_fallback(engine: _Engine[Any]) -> None:
    core = engine.core
    assert core.breaker.state == "closed"
    assert core.breaker.failures == 0 and core.breaker.opened_count == 0
    assert not core.serving_from_memory
    assert core.memory is not None and core.memory.size_bytes == 0


# -- recognising the errors (no server) --------------------------------------------------------


def _raised(outer: BaseException, *, cause: BaseException | None = None) -> BaseException:
    """``outer`` as raised from ``cause`` (as redis-py's wrappers do), or while handling it."""
    try:
        try:
            if cause is not None:
                raise cause
            raise outer
        except BaseException as inner:
            if inner is outer:
                raise
            raise outer from inner
    except BaseException as caught:
        return caught


def _during(outer: BaseException, handling: BaseException) -> BaseException:
    try:
        try:
            raise handling
        except BaseException:
            raise outer  # noqa: B904 - implicit chaining (__context__) is what is tested
    except BaseException as caught:
        return caught


WRONGPASS = rexc.AuthenticationError(
    "invalid username-password pair or user is disabled.", status_code="WRONGPASS"
)
CONSTRUCTED: list[tuple[str, Callable[[], BaseException], str | None]] = [
    ("WRONGPASS", lambda: WRONGPASS, "wrong_password"),
    (
        "NOAUTH via HELLO",
        lambda: rexc.AuthenticationError(
            "HELLO must be called with the client already authenticated", status_code="NOAUTH"
        ),
        "password_required",
    ),
    (
        "NOAUTH text",
        lambda: rexc.AuthenticationError("Authentication required."),
        "password_required",
    ),
    (
        "AUTH without a password set",
        lambda: rexc.AuthenticationError(
            "AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        ),
        "password_not_set",
    ),
    (
        "redis-py's own",
        lambda: rexc.AuthenticationError("Invalid Username or Password"),
        "wrong_password",
    ),
    (
        "AUTH arity (no ACLs)",
        lambda: rexc.AuthenticationWrongNumberOfArgsError("wrong number of arguments for 'auth'"),
        "wrong_password",
    ),
    (
        "NOPERM command",
        lambda: rexc.NoPermissionError(
            "this user has no permissions to run the 'evalsha' command", status_code="NOPERM"
        ),
        "no_permission",
    ),
    (
        "NOPERM as a plain ResponseError",
        lambda: rexc.ResponseError("NOPERM this user has no permissions to access one of the keys"),
        "no_permission",
    ),
    (
        "WRONGPASS as ResponseError",
        lambda: rexc.ResponseError("WRONGPASS invalid pair"),
        "wrong_password",
    ),
    (
        "NOAUTH as ResponseError",
        lambda: rexc.ResponseError("NOAUTH Authentication required."),
        "password_required",
    ),
    (
        "a script's forbidden command (Redis < 7.2)",
        lambda: rexc.ResponseError(
            "The user executing the script can't run this command or subcommand script: ab12"
        ),
        "no_permission",
    ),
    (
        "cluster: no startup node took the password",
        lambda: _raised(
            rexc.RedisClusterException(
                "Redis Cluster cannot be connected. Please provide at least one reachable node: "
                "invalid username-password pair or user is disabled."
            ),
            cause=WRONGPASS,
        ),
        "wrong_password",
    ),
    (
        "cluster: NOPERM on CLUSTER SLOTS reads as 'not enabled'",
        lambda: _during(
            rexc.RedisClusterException("Cluster mode is not enabled on this node"),
            rexc.NoPermissionError(
                "this user has no permissions to run the 'cluster|slots' command"
            ),
        ),
        "no_permission",
    ),
    (
        "cluster: retries exhausted on a refusal",
        lambda: _raised(rexc.ClusterError("TTL exhausted."), cause=WRONGPASS),
        "wrong_password",
    ),
    (
        "sentinel: the Sentinels refused the sentinel password",
        lambda: redis.sentinel.MasterNotFoundError(
            "No master found for 'mymaster' : Sentinel<host=127.0.0.1,port=26379> - "
            "auth:AuthenticationError"
        ),
        "wrong_password",
    ),
    (
        "RedisAuthError itself",
        lambda: RedisAuthError("no_permission", "redis://h:1/0"),
        "no_permission",
    ),
    # Outages stay outages, and ordinary command errors stay errors.
    ("connection refused", lambda: rexc.ConnectionError("Error 111 connecting"), None),
    (
        "cluster: no startup node answers",
        lambda: _raised(
            rexc.RedisClusterException("Redis Cluster cannot be connected. Please provide ..."),
            cause=rexc.ConnectionError("Error 111 connecting"),
        ),
        None,
    ),
    (
        "CLUSTERDOWN is a server's reply, whatever it was raised during",
        lambda: _during(rexc.ClusterDownError("The cluster is down"), WRONGPASS),
        None,
    ),
    (
        "a transport error is its own fact",
        lambda: _during(rexc.TimeoutError("Timeout reading from socket"), WRONGPASS),
        None,
    ),
    (
        "sentinel: no master, no refusal",
        lambda: redis.sentinel.MasterNotFoundError("No master found for 'm'"),
        None,
    ),
    ("WRONGTYPE", lambda: rexc.ResponseError("WRONGTYPE Operation against a key"), None),
    ("NOSCRIPT", lambda: rexc.NoScriptError("No matching script."), None),
    (
        "NOPERM inside a payload is not a refusal",
        lambda: rexc.ResponseError(
            "Command # 1 (SET k NOPERM) of pipeline caused error: WRONGTYPE Operation"
        ),
        None,
    ),
]


@pytest.mark.parametrize(
    ("make", "reason"), [(m, r) for _, m, r in CONSTRUCTED], ids=[n for n, _, _ in CONSTRUCTED]
)
def test_access_error_and_is_unavailable_error(
    make: Callable[[], BaseException], reason: str | None
) -> None:
    exc = make()
    denied = access_error(exc, "redis://user:hunter2@cache.internal:6380/0")
    if reason is None:
        assert denied is None
        return
    assert denied is not None and denied.reason == reason
    assert not is_unavailable_error(exc)  # though most of them are ConnectionError or OSError
    assert "hunter2" not in str(denied)
    if denied is not exc:
        assert "redis://user:***@cache.internal:6380/0" in str(denied)


def test_outages_stay_outages() -> None:
    assert is_unavailable_error(rexc.ConnectionError("Error 111 connecting"))
    assert is_unavailable_error(
        _raised(
            rexc.RedisClusterException("Redis Cluster cannot be connected. Please ..."),
            cause=rexc.ConnectionError("Error 111"),
        )
    )
    assert is_unavailable_error(_during(rexc.ClusterDownError("The cluster is down"), WRONGPASS))
    assert is_unavailable_error(redis.sentinel.MasterNotFoundError("No master found for 'm'"))
    assert not is_unavailable_error(rexc.ResponseError("WRONGTYPE Operation against a key"))


def test_a_pipeline_error_keeps_the_command_name_only() -> None:
    exc = rexc.NoPermissionError(
        "Command # 2 (EVALSHA 5f3a 3 rc:cache:{ns}:#gen rc:cache:{ns}:k payload-bytes) of "
        "pipeline caused error: this user has no permissions to access one of the keys used "
        "as arguments"
    )
    denied = access_error(exc, "redis://h:1/0")
    assert denied is not None and denied.reason == "no_permission"
    assert denied.detail.startswith("EVALSHA: this user has no permissions to access")
    assert "payload-bytes" not in str(denied)
    assert "ACL SETUSER" in str(denied)  # the hint


def test_redis_auth_error_is_a_permission_error_and_pickles() -> None:
    error = RedisAuthError("wrong_password", "redis://u:***@h:1/0", "invalid pair")
    assert isinstance(error, PermissionError)
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason, again.where, again.detail, str(again)) == (
        error.reason,
        error.where,
        error.detail,
        str(error),
    )


# -- connecting ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reason", "words"), REFUSALS)
def test_check_connection_names_the_cause(
    secured: RedisServer, urls: dict[str, str], name: str, reason: str, words: str
) -> None:
    client = create_client(urls[name])
    try:
        with pytest.raises(RedisAuthError) as exc:
            check_connection(client, urls[name])
        assert_refused(exc, reason, words, secured.port)
    finally:
        client.close()
    good = create_client(urls["good"])
    try:
        check_connection(good, urls["good"])  # the same server takes the right password
    finally:
        good.close()


async def test_acheck_connection_names_the_cause(
    secured: RedisServer, urls: dict[str, str]
) -> None:
    client = create_async_client(urls["wrong"])
    try:
        with pytest.raises(RedisAuthError) as exc:
            await acheck_connection(client, urls["wrong"])
        assert_refused(exc, "wrong_password", "wrong password", secured.port)
    finally:
        await client.aclose()


def test_the_saver_does_not_start_on_memory(secured: RedisServer, urls: dict[str, str]) -> None:
    with pytest.raises(RedisAuthError) as exc, RedisSaver.from_conn_string(urls["wrong"]):
        pass
    assert_refused(exc, "wrong_password", "wrong password", secured.port)


def test_the_saver_names_a_user_without_scripts_or_outside_its_keys(
    secured: RedisServer, urls: dict[str, str]
) -> None:
    from tests.test_fallback import build, turn

    for name in ("noscript", "fenced"):
        with RedisSaver.from_conn_string(urls[name], key_prefix=unique("ns")) as saver:
            graph = build().compile(checkpointer=saver)
            for _ in range(saver.breaker.failure_threshold + 2):
                with pytest.raises(RedisAuthError) as exc:
                    turn(graph, "t", "hello")
                assert_refused(exc, "no_permission", "permission denied", secured.port)
                assert_saver_refused(saver, exc)


def assert_saver_refused(saver: Any, exc: pytest.ExceptionInfo[RedisAuthError]) -> None:
    assert saver.breaker_state == "closed" and saver.breaker.failures == 0
    assert saver.memory is not None and saver.memory.pending == 0
    assert saver._router.fallback_calls == 0
    assert_no_secret(str(exc.value), repr(exc.value))


def test_a_rotated_password_stops_the_saver_with_a_clear_error(
    secured: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The saver's user gets a new password and its connections are killed: the saver's
    reconnection is refused, and every turn says so instead of going on in memory."""
    from tests.test_fallback import build, turn

    admin = secured.client()
    admin.execute_command("ACL", "SETUSER", "rotated", "on", ">old-pw-1", "~*", "&*", "+@all")
    rotated = url(secured, "rotated", "old-pw-1")
    with (
        caplog.at_level(logging.DEBUG),
        RedisSaver.from_conn_string(rotated, key_prefix=unique("rot")) as saver,
    ):
        graph = build().compile(checkpointer=saver)
        turn(graph, "t", "before")
        admin.execute_command("ACL", "SETUSER", "rotated", "resetpass", ">new-pw-2")
        admin.execute_command("CLIENT", "KILL", "USER", "rotated")
        for _ in range(saver.breaker.failure_threshold + 2):
            with pytest.raises(RedisAuthError) as exc:
                turn(graph, "t", "during")
            assert_refused(exc, "wrong_password", "wrong password", secured.port)
            assert_saver_refused(saver, exc)
    assert "old-pw-1" not in log_text(caplog) and "new-pw-2" not in log_text(caplog)
    admin.close()


async def test_a_revoked_permission_stops_the_async_saver(secured: RedisServer) -> None:
    from redis_checkpoint import AsyncRedisSaver
    from tests.test_fallback import build, cfg

    admin = secured.client()
    admin.execute_command("ACL", "SETUSER", "revoked", "on", ">rev-pw-3", "~*", "&*", "+@all")
    revoked = url(secured, "revoked", "rev-pw-3")
    async with AsyncRedisSaver.from_conn_string(revoked, key_prefix=unique("rev")) as saver:
        graph = build().compile(checkpointer=saver)
        await graph.ainvoke({"messages": [("user", "before")]}, cfg("t"))
        admin.execute_command("ACL", "SETUSER", "revoked", "-evalsha", "-eval")
        for _ in range(saver.breaker.failure_threshold + 2):
            with pytest.raises(RedisAuthError) as exc:
                await graph.ainvoke({"messages": [("user", "during")]}, cfg("t"))
            assert_refused(exc, "no_permission", "may not run this command", secured.port)
            assert_saver_refused(saver, exc)
        admin.execute_command("ACL", "SETUSER", "revoked", "+evalsha", "+eval")
        state = await graph.ainvoke({"messages": [("user", "after")]}, cfg("t"))
        assert [m.content for m in state["messages"]][::2] == ["before", "after"]
    admin.close()


# -- the cache engine and its faces ----------------------------------------------------------


@pytest.mark.parametrize(("name", "reason", "words"), REFUSALS)
def test_engine_raises_and_never_falls_back(
    secured: RedisServer,
    urls: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    name: str,
    reason: str,
    words: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    with CacheEngine(urls[name], prefix=unique("auth"), metrics=private_metrics()) as engine:
        # More calls than the breaker's failure threshold: an outage would have opened it.
        for _ in range(engine.core.breaker.failure_threshold + 2):
            with pytest.raises(RedisAuthError) as exc:
                engine.set("ns", "k", "v")
            assert_refused(exc, reason, words, secured.port)
            with pytest.raises(RedisAuthError):
                engine.get("ns", "k")
            with pytest.raises(RedisAuthError):
                engine.invalidate_tags("ns", "t")
            assert_no_fallback(engine)
        assert engine.core.pending_invalidations == 0  # nothing queued "for when Redis is back"
        with pytest.raises(RedisAuthError):
            engine.ping()
        assert_no_fallback(engine)
    assert_no_secret(log_text(caplog))


def test_engine_on_a_given_client_names_it(secured: RedisServer) -> None:
    # No retries: redis-py's default retries a refused AUTH with backoff, for seconds.
    client = redis.Redis(
        host=secured.host, port=secured.port, password=WRONG, retry=Retry(NoBackoff(), 0)
    )
    with CacheEngine(client, prefix=unique("auth"), metrics=private_metrics()) as engine:
        with pytest.raises(RedisAuthError) as exc:
            engine.get("ns", "k")
        assert_refused(exc, "wrong_password", "wrong password", secured.port)
    client.close()


def test_a_user_without_scripts_gets_noperm_naming_the_command(
    secured: RedisServer, urls: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with CacheEngine(urls["noscript"], prefix=unique("auth"), metrics=private_metrics()) as engine:
        assert engine.get("ns", "k", "default") == "default"  # MGET is allowed
        for _ in range(engine.core.breaker.failure_threshold + 2):
            with pytest.raises(RedisAuthError) as exc:
                engine.set("ns", "k", "v")  # a script
            assert_refused(exc, "no_permission", "evalsha", secured.port)
            assert "ACL SETUSER" in str(exc.value)
            assert_no_fallback(engine)
        for _ in range(2):  # the second call is not stalled by a lock the first left behind
            with pytest.raises(RedisAuthError, match="evalsha"):
                engine.get_or_compute("ns", "other", lambda: "computed")
            admin = secured.client()
            assert admin.exists(engine.core.layout.lock("ns", "other")) == 0
            admin.close()
        assert engine.get("ns", "k", "default") == "default"  # still nothing stored anywhere
        assert_no_fallback(engine)
    assert_no_secret(log_text(caplog))


def test_a_user_fenced_to_a_key_pattern_gets_noperm_for_the_keys(
    secured: RedisServer, urls: dict[str, str]
) -> None:
    outside = CacheEngine(urls["fenced"], prefix=unique("auth"), metrics=private_metrics())
    inside = CacheEngine(
        urls["fenced"], prefix=f"allowed:{unique('auth')}", metrics=private_metrics()
    )
    with outside, inside:
        with pytest.raises(RedisAuthError) as exc:
            outside.get("ns", "k")
        assert_refused(exc, "no_permission", "keys", secured.port)
        assert "~<key prefix>*" in str(exc.value)
        assert_no_fallback(outside)
        # The same user under its pattern works: the refusal was the ACL, not the server.
        assert inside.set("ns", "k", "v") and inside.get("ns", "k") == "v"


async def test_async_engine_raises_and_never_falls_back(
    secured: RedisServer, urls: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engine = AsyncCacheEngine(urls["wrong"], prefix=unique("auth"), metrics=private_metrics())
    try:
        for _ in range(engine.core.breaker.failure_threshold + 2):
            with pytest.raises(RedisAuthError) as exc:
                await engine.get("ns", "k")
            assert_refused(exc, "wrong_password", "wrong password", secured.port)
            with pytest.raises(RedisAuthError):
                await engine.set("ns", "k", "v")
            assert_no_fallback(engine)
    finally:
        await engine.aclose()
    noscript = AsyncCacheEngine(urls["noscript"], prefix=unique("auth"), metrics=private_metrics())
    try:
        with pytest.raises(RedisAuthError, match="evalsha"):
            await noscript.set("ns", "k", "v")
        assert_no_fallback(noscript)
    finally:
        await noscript.aclose()
    assert_no_secret(log_text(caplog))


FACES = ["llm", "embeddings", "node", "query"]


def _use_face(kind: str, target: str, prefix: str) -> tuple[Any, Callable[[], Any], list[Any]]:
    """A face on ``target`` and a call that reads and writes through it; the list records
    computations the face ran (a face that raised must not have run any)."""
    options: dict[str, Any] = {"prefix": prefix, "metrics": private_metrics()}
    ran: list[Any] = []
    if kind == "llm":
        llm = LLMCache(target, **options)

        def call() -> Any:
            llm.update("prompt", "model", [Generation(text="answer")])
            return llm.lookup("prompt", "model")

        return llm, call, ran
    if kind == "embeddings":
        model = CountingEmbeddings()
        embeddings = CachedEmbeddings(model, target, **options)
        return embeddings, lambda: embeddings.embed_documents(["a", "b"]), model.documents
    if kind == "node":
        node: NodeCache[Any] = NodeCache(target, **options)

        def call() -> Any:
            node.set({(("graph",), "key"): ("value", 60)})
            return node.get([(("graph",), "key")])

        return node, call, ran
    query = QueryCache(target, **options)
    return query, lambda: query.get_or_load("select 1", None, lambda: ran.append(1) or [1]), ran


@pytest.mark.parametrize("kind", FACES)
@pytest.mark.parametrize("name", ["wrong", "none", "noscript"])
def test_every_face_raises_and_never_falls_back(
    secured: RedisServer,
    urls: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    kind: str,
    name: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    face, call, ran = _use_face(kind, urls[name], unique("auth"))
    try:
        for _ in range(face.engine.core.breaker.failure_threshold + 2):
            with pytest.raises(RedisAuthError) as exc:
                call()
            reason = {"wrong": "wrong_password", "none": "password_required"}.get(
                name, "no_permission"
            )
            assert exc.value.reason == reason
            assert_no_secret(str(exc.value))
            assert_no_fallback(face.engine)
        if name != "noscript":  # that user may read: a miss computes, then the write fails
            assert ran == []
    finally:
        face.close()
    assert_no_secret(log_text(caplog))


# -- Redis Cluster: the cluster client wraps the refusals --------------------------------------


@pytest.fixture
def cluster_user(redis_cluster: RedisClusterServers) -> Iterator[str]:
    """An ACL user without scripts on every node of the shared cluster; removed afterwards."""
    name = unique("noscript").replace("-", "_")
    for node in redis_cluster.nodes:
        with node.client() as client:
            client.execute_command(
                "ACL", "SETUSER", name, "on", f">{NOSCRIPT_PW}", "~*", "&*", "+@all",
                "-eval", "-evalsha",
            )  # fmt: skip
    try:
        yield name
    finally:
        for node in redis_cluster.nodes:
            with node.client() as client:
                client.execute_command("ACL", "DELUSER", name)


@pytest.mark.cluster
async def test_cluster_refusals_are_named_not_outages(
    redis_cluster: RedisClusterServers, cluster_user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    address = redis_cluster.url.removeprefix("redis+cluster://")
    # No such user: the sync cluster client connects in its constructor, and reports it as
    # "Redis Cluster cannot be connected" raised from the AuthenticationError.
    wrong = f"redis+cluster://nobody:{WRONG}@{address}"
    with pytest.raises(RedisAuthError) as exc:
        CacheEngine(wrong, prefix=unique("auth"), metrics=private_metrics())
    assert exc.value.reason == "wrong_password" and address in str(exc.value)
    assert_no_secret(str(exc.value))
    engine = AsyncCacheEngine(wrong, prefix=unique("auth"), metrics=private_metrics())
    try:
        for _ in range(engine.core.breaker.failure_threshold + 2):
            with pytest.raises(RedisAuthError) as exc:
                await engine.get("ns", "k")
            assert exc.value.reason == "wrong_password"
            assert_no_fallback(engine)
    finally:
        await engine.aclose()
    limited = f"redis+cluster://{cluster_user}:{NOSCRIPT_PW}@{address}"
    with CacheEngine(limited, prefix=unique("auth"), metrics=private_metrics()) as sync_engine:
        assert sync_engine.get("ns", "k", "default") == "default"
        with pytest.raises(RedisAuthError, match="evalsha") as exc:
            sync_engine.set("ns", "k", "v")
        assert exc.value.reason == "no_permission"
        assert_no_fallback(sync_engine)
    assert_no_secret(log_text(caplog))


def test_sentinel_primary_refusing_the_password_is_named(redis_server_bin: str) -> None:
    with RedisSentinelGroup(replicas=0, sentinels=1, binary=redis_server_bin) as group:
        hosts = group.url.removeprefix("redis+sentinel://")
        wrong = f"redis+sentinel://nobody:{WRONG}@{hosts}"  # the Sentinels find the primary...
        with CacheEngine(wrong, prefix=unique("auth"), metrics=private_metrics()) as engine:
            for _ in range(engine.core.breaker.failure_threshold + 2):
                with pytest.raises(RedisAuthError) as exc:  # ...which refuses the user
                    engine.get("ns", "k")
                assert exc.value.reason == "wrong_password"
                assert "nobody:***@" in str(exc.value)
                assert_no_secret(str(exc.value))
                assert_no_fallback(engine)


# -- HTTP middleware -------------------------------------------------------------------------


async def test_http_middleware_raises_instead_of_bypassing(
    secured: RedisServer, urls: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Even with the memory tier allowed, a refusal must not be cached around.
    app = make_app(urls["wrong"], unique("auth"), fallback_to_memory=True)
    transport = httpx.ASGITransport(app=app)  # raises what the app raised, as a server logs it
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for _ in range(app.engine.core.breaker.failure_threshold + 2):
                with pytest.raises(RedisAuthError) as exc:
                    await client.get("/plain")
                assert_refused(exc, "wrong_password", "wrong password", secured.port)
                assert_no_fallback(app.engine)
        assert app.counts["BYPASS"] == 0 and app.calls["/plain"] == 0  # type: ignore[attr-defined]
    finally:
        await app.aclose()
    assert_no_secret(log_text(caplog))


async def test_near_cache_stays_off_and_says_why_when_pubsub_is_forbidden(
    secured: RedisServer, urls: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(urls["nochan"], unique("auth"), local_ttl=60)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            first = await client.get("/plain")  # starts the subscriber
            for _ in range(500):  # until the subscriber has been refused (bounded, not timed)
                if any("near cache off" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
            second = await client.get("/plain")
        refusals = [r for r in caplog.records if "near cache off" in r.getMessage()]
        assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
        assert "permission denied" in refusals[0].getMessage()
        assert not app.invalidations.usable  # other processes' writes would go unheard
        # The cache itself works for this user: from Redis, not from the near cache.
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert app.near is not None and len(app.near) == 0
    finally:
        await app.aclose()
    assert_no_secret(log_text(caplog))


# -- operations: health, management API, CLI ---------------------------------------------------


@pytest.mark.parametrize(("name", "reason", "words"), REFUSALS)
def test_health_reports_auth_failed_not_down(
    secured: RedisServer, urls: dict[str, str], name: str, reason: str, words: str
) -> None:
    monitor = HealthMonitor(urls[name], metrics=private_metrics())
    try:
        report = monitor.check()
    finally:
        monitor.stop()
    assert report.status == "auth_failed" and not report.up
    assert report.reason == reason
    assert report.error is not None and words in report.error
    assert_no_secret(json.dumps(report.as_dict(), default=str))


def test_health_names_a_component_whose_password_is_refused(
    secured: RedisServer, urls: dict[str, str]
) -> None:
    engine = CacheEngine(urls["wrong"], prefix=unique("auth"), metrics=private_metrics())
    monitor = HealthMonitor(urls["good"], components=[engine], metrics=private_metrics())
    try:
        report = monitor.check()
    finally:
        monitor.stop()
        engine.close()
    assert report.status == "auth_failed" and report.reason == "wrong_password"
    [component] = report.components
    assert component.reachable is False and component.breaker == "closed"
    assert component.error is not None and "wrong password" in component.error
    assert "used_memory" in report.redis  # the monitor itself got in
    assert_no_secret(json.dumps(report.as_dict(), default=str))


async def test_management_health_route_says_auth_failed(
    secured: RedisServer, urls: dict[str, str]
) -> None:
    engine = AsyncCacheEngine(urls["wrong"], prefix=unique("auth"), metrics=private_metrics())
    metrics = private_metrics()
    app = create_management_app(engine=engine, token="t", metrics=metrics)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            response = await client.get("/health")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "auth_failed" and body["reason"] == "wrong_password"
            assert_no_secret(response.text)
            stats = await client.get("/stats", headers={"Authorization": "Bearer t"})
            assert "wrong password" in stats.text
            assert_no_secret(stats.text)
    finally:
        await engine.aclose()


def _cli(*argv: str) -> tuple[int, str, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("argv", "name", "words"),
    [
        (("health",), "wrong", "wrong password"),
        (("invalidate", "--namespace", "ns", "--tag", "t"), "wrong", "wrong password"),
        (("invalidate", "--namespace", "ns", "--tag", "t"), "noscript", "evalsha"),
        (("threads", "list"), "none", "requires a password"),
        (("stats",), "wrong", "wrong password"),
    ],
    ids=["health", "invalidate-wrongpass", "invalidate-noperm", "threads-noauth", "stats"],
)
def test_cli_prints_one_line_and_exits_with_exit_auth(
    secured: RedisServer, urls: dict[str, str], argv: tuple[str, ...], name: str, words: str
) -> None:
    if argv[0] == "invalidate":
        # A namespace that holds keys: one that holds none is "not found" before any script.
        with secured.client() as admin:
            admin.set("rc:cache:{ns}:an-entry", "x")
    code, out, err = _cli("--url", urls[name], *argv)
    assert code == EXIT_AUTH, (out, err)
    assert_no_secret(out, err)
    if argv[0] == "health":
        assert "auth_failed" in out and words in out
    else:
        assert err.count("\n") == 1 and err.startswith("redis-checkpoint: Redis at ")
        assert words in err and f"127.0.0.1:{secured.port}" in err
