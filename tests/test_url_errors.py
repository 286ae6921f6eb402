"""A bad Redis URL, or REDIS_* setting, gets the same answer from every face: a ConfigurationError
that names the variable (REDIS_URL) or argument (url=), shows the URL with its password masked,
never any part of the password, and says the fix; the CLI exits 2 with that one line.

What only the server can tell (a db beyond its ``databases``, cluster mode asked of a lone
server) runs against real redis-server processes.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry

from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.checkpoint.aio import AsyncRedisSaver
from redis_checkpoint.checkpoint.saver import RedisSaver
from redis_checkpoint.cli import EXIT_OK, EXIT_USAGE, main
from redis_checkpoint.client import create_async_client, create_client
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.ops.health import HealthMonitor
from redis_checkpoint.settings import ENV_VARS, Settings, parse_redis_url, redact_url
from redis_checkpoint.testing import RedisSentinelGroup, RedisServer

# Port 1: should a check ever let one of these URLs through, nothing answers there.
PASSWORD_CASES = {
    # name: (URL, what must never be shown)
    "slash": ("redis://:Abc/def123@127.0.0.1:1/0", ("Abc", "def123")),
    "hash": ("redis://:Abc#def123@127.0.0.1:1/0", ("Abc", "def123")),
    "question mark": ("redis://:Abc?def123@127.0.0.1:1/0", ("Abc", "def123")),
    "at and slash": ("redis://:Abc@de/f123@127.0.0.1:1/0", ("Abc", "de/f", "f123")),
    "user, all four": ("redis://alice:p/q?r#s@t@127.0.0.1:1/0", ("p/q", "r#s", "s@t")),
    "sentinel": ("redis+sentinel://:Abc/def123@127.0.0.1:1/svc", ("Abc", "def123")),
    "unix": ("unix://:Abc/def123@/tmp/redis.sock", ("Abc", "def123")),
}
OTHER_CASES = {
    # name: (URL, a fragment of the message)
    "port not a number": ("redis://127.0.0.1:notaport/0", "port that is not a number"),
    "port 0": ("redis://127.0.0.1:0/0", "port 0, outside 1 to 65535"),
    "port 99999": ("redis://127.0.0.1:99999/0", "port 99999, outside 1 to 65535"),
    "db path not a number": ("redis://127.0.0.1:1/abc", "'/abc' as its db"),
    "db query not a number": ("redis://127.0.0.1:1/0?db=one", "db='one' in its query"),
    "sentinel db": ("redis+sentinel://127.0.0.1:1/svc/abc", "'abc' as its db"),
    "scheme typo": ("redis//127.0.0.1:1", "does not start with a scheme"),
    "no socket path": ("unix://", "no socket path"),
}
ALL_CASES = {
    **{f"password with {name}": url for name, (url, _) in PASSWORD_CASES.items()},
    **{name: url for name, (url, _) in OTHER_CASES.items()},
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def _metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# --- every face, from the environment ---------------------------------------------------------


def _use_saver() -> None:
    with RedisSaver.from_conn_string(metrics=_metrics()) as saver:
        list(saver.list_threads())


def _use_async_saver() -> None:
    async def run() -> None:
        async with AsyncRedisSaver.from_conn_string(metrics=_metrics()) as saver:
            await saver.alist_threads()

    asyncio.run(run())


def _use_engine() -> None:
    with CacheEngine(metrics=_metrics()) as engine:
        engine.get("ns", "k")


def _use_async_engine() -> None:
    async def run() -> None:
        engine = AsyncCacheEngine(metrics=_metrics())
        try:
            await engine.get("ns", "k")
        finally:
            await engine.aclose()

    asyncio.run(run())


def _use_health() -> None:
    monitor = HealthMonitor(metrics=_metrics())
    try:
        monitor.check()
    finally:
        monitor.stop()


FACES: dict[str, Callable[[], Any]] = {
    "Settings.from_env": Settings.from_env,
    "create_client": create_client,
    "create_async_client": create_async_client,
    "RedisSaver": _use_saver,
    "AsyncRedisSaver": _use_async_saver,
    "CacheEngine": _use_engine,
    "AsyncCacheEngine": _use_async_engine,
    "HealthMonitor": _use_health,
}


def _error_from(face: Callable[[], Any]) -> str:
    """The message of the ConfigurationError ``face`` raises, and of the errors it was raised
    from or while handling (a traceback shows them all)."""
    with pytest.raises(ConfigurationError) as info:
        face()
    chain: list[str] = []
    error: BaseException | None = info.value
    while error is not None and len(chain) < 8:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    return " <- ".join(chain)


def _cli_error(*argv: str) -> str:
    code, out, err = _cli(*argv)
    assert code == EXIT_USAGE, (code, out, err)
    assert err.startswith("redis-checkpoint: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("face", FACES, ids=list(FACES))
@pytest.mark.parametrize("case", PASSWORD_CASES, ids=list(PASSWORD_CASES))
def test_password_with_url_delimiters_is_never_shown(
    case: str, face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, secrets = PASSWORD_CASES[case]
    monkeypatch.setenv("REDIS_URL", url)
    text = _error_from(FACES[face])
    assert text.startswith("REDIS_URL='") and " <- " not in text, text
    assert "percent-encode" in text and "%2F" in text and "%40" in text
    for secret in secrets:
        assert secret not in text, (secret, text)
    assert ":***@" in text  # masked from the ':' to the last '@'; the host is still shown


@pytest.mark.parametrize("case", PASSWORD_CASES, ids=list(PASSWORD_CASES))
def test_password_with_url_delimiters_cli(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url, secrets = PASSWORD_CASES[case]
    monkeypatch.setenv("REDIS_URL", url)
    for argv in (("threads", "list"), ("health",), ("stats",)):
        err = _cli_error(*argv)
        assert "REDIS_URL='" in err and "percent-encode" in err
        assert not any(secret in err for secret in secrets), err
    # Given as --url, the message names the argument.
    monkeypatch.delenv("REDIS_URL")
    err = _cli_error("--url", url, "health")
    assert "url='" in err and "REDIS_URL" not in err
    assert not any(secret in err for secret in secrets), err


@pytest.mark.parametrize("face", FACES, ids=list(FACES))
@pytest.mark.parametrize("case", OTHER_CASES, ids=list(OTHER_CASES))
def test_malformed_url_from_every_face(
    case: str, face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, fragment = OTHER_CASES[case]
    monkeypatch.setenv("REDIS_URL", url)
    text = _error_from(FACES[face])
    assert text.startswith("REDIS_URL='"), text
    assert fragment in text, text


@pytest.mark.parametrize("case", OTHER_CASES, ids=list(OTHER_CASES))
def test_malformed_url_cli_exits_2(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url, fragment = OTHER_CASES[case]
    monkeypatch.setenv("REDIS_URL", url)
    err = _cli_error("threads", "list")
    assert "REDIS_URL='" in err and fragment in err


@pytest.mark.parametrize("case", ALL_CASES, ids=list(ALL_CASES))
def test_url_passed_as_argument_is_named_url(case: str) -> None:
    url = ALL_CASES[case]
    for build in (
        lambda: Settings(url=url),
        lambda: create_client(url),
        lambda: CacheEngine(url, metrics=_metrics()),
        lambda: HealthMonitor(url, metrics=_metrics()),
    ):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert str(info.value).startswith("url='"), str(info.value)


def test_non_numeric_port_is_hidden() -> None:
    # redis://user:password (the '@host' forgotten) reads as host 'user', port 'password'.
    with pytest.raises(ConfigurationError) as info:
        Settings(url="redis://default:s3cret")
    assert "s3cret" not in str(info.value)
    assert "url='redis://default:***'" in str(info.value)


def test_scheme_typo_is_shown_as_written_but_masked() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"REDIS_URL": "redis//127.0.0.1:1/0"})
    assert "REDIS_URL='redis//127.0.0.1:1/0'" in str(info.value)  # not '://redis//...'
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"REDIS_URL": "redis//:s3cret@127.0.0.1:1/0"})
    assert "REDIS_URL='redis//:***@127.0.0.1:1/0'" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_redis_py_url_errors_become_configuration_errors() -> None:
    # Past our checks, redis-py's own parser (a query option) raised a bare ValueError.
    with pytest.raises(ConfigurationError) as info:
        create_client("redis://127.0.0.1:1/0?socket_timeout=abc")
    assert str(info.value).startswith("url='redis://127.0.0.1:1/0?socket_timeout=abc' is not a")


def test_several_hosts_need_a_cluster_or_sentinel_url() -> None:
    with pytest.raises(ConfigurationError, match="lists 2 hosts"):
        create_client("redis://127.0.0.1:1,127.0.0.1:2/0")


# --- empty REDIS_URL ---------------------------------------------------------------------------


@pytest.mark.parametrize("face", FACES, ids=list(FACES))
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_redis_url_is_an_error(
    face: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", value)
    text = _error_from(FACES[face])
    assert text.startswith("REDIS_URL is set but empty"), text
    assert "unset it" in text


def test_empty_redis_url_cli_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    assert "REDIS_URL is set but empty" in _cli_error("health")


def test_an_explicit_url_wins_over_a_bad_redis_url() -> None:
    # The variable is not even read, so it cannot fail a call that does not use it.
    for bad in ("", "redis//nope", "redis://127.0.0.1:notaport/0"):
        settings = Settings.from_env({"REDIS_URL": bad}, url="redis://127.0.0.1:1/0")
        assert settings.url == "redis://127.0.0.1:1/0"
        assert settings.source("url") == "url"


def test_source_names_the_variable_or_the_argument() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_CLUSTER": "yes"}
    settings = Settings.from_env(env)
    assert settings.source("url") == "REDIS_URL" and settings.source("cluster") == "REDIS_CLUSTER"
    assert settings.source("retries") == "retries"
    kept = settings.replace(retries=3)
    assert kept.source("url") == "REDIS_URL" and kept.retries == 3
    assert kept.source("retries") == "retries"
    assert settings.replace(url="redis://127.0.0.1:2/0").source("url") == "url"
    assert Settings(url="redis://127.0.0.1:1/0").source("url") == "url"


# --- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:Abc/def123@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://:Abc#def123@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://:Abc?def123@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://:a@b/c@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://alice:a/b@127.0.0.1:6379/0", "redis://alice:***@127.0.0.1:6379/0"),
        # A raw '&' or '#' may be part of a password given in the query.
        ("redis://h:1/0?password=ab&cd", "redis://h:1/0?password=***"),
        ("redis://h:1/0?password=ab#cd", "redis://h:1/0?password=***"),
        # A raw '@' in it: either reading of the URL is masked.
        ("redis://h:1/0?password=p@ss", "redis://h:***"),
        ("redis//:pw@h:1", "redis//:***@h:1"),
        ("user:pw@h://x", "user:***@h://x"),
        ("unix:///run/a@b.sock", "unix:///run/a@b.sock"),
        ("REDIS://h:1/0", "REDIS://h:1/0"),  # shown as written
    ],
)
def test_redact_url_masks_every_reading(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_percent_encoded_and_raw_at_passwords_are_accepted() -> None:
    assert parse_redis_url("redis://:Abc%2Fdef%23%3F%40@127.0.0.1:6379/3").db == 3
    # A raw '@' alone is read the same by everyone (the last '@' ends the password).
    assert parse_redis_url("redis://:Abc@def@127.0.0.1:6379/0").hosts == ("127.0.0.1:6379",)
    assert parse_redis_url("redis://127.0.0.1:6379/0?password=p@ss").db == 0


# --- real servers: passwords that work ----------------------------------------------------------


def _round_trip(url: str) -> None:
    """The saver, the engine and the CLI all reach the server behind ``url``."""
    with RedisSaver.from_conn_string(url, metrics=_metrics()) as saver:
        assert isinstance(list(saver.list_threads()), list)
    with CacheEngine(url, metrics=_metrics(), memory=None) as engine:
        engine.set("url-errors", "k", "v")
        assert engine.get("url-errors", "k") == "v"
    code, _, err = _cli("--url", url, "health")
    assert code == EXIT_OK, err


def test_percent_encoded_password_with_delimiters_works(redis_server_bin: str) -> None:
    password = "Abc/def#g?h@i"
    with RedisServer(password=password, binary=redis_server_bin) as server:
        encoded = f"redis://:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
        assert "%2F" in encoded
        _round_trip(encoded)
        # The same password written raw: refused before any connection, nothing of it shown.
        raw = f"redis://:{password}@127.0.0.1:{server.port}/0"
        for face in (
            lambda: RedisSaver.from_conn_string(raw).__enter__(),
            lambda: CacheEngine(raw),
        ):
            with pytest.raises(ConfigurationError, match="percent-encode") as info:
                face()
            assert not any(part in str(info.value) for part in ("Abc", "def", "g?h", "h@i"))


def test_raw_at_in_password_keeps_working(redis_server_bin: str) -> None:
    with RedisServer(password="Abc@def123", binary=redis_server_bin) as server:
        _round_trip(f"redis://:Abc@def123@127.0.0.1:{server.port}/0")


# --- real servers: a db the server does not have -------------------------------------------------


def _db_url(server: RedisServer, db: int) -> str:
    return f"redis://127.0.0.1:{server.port}/{db}"


def _open_saver(url: str, require_redis: bool = True) -> None:
    with RedisSaver.from_conn_string(url, require_redis=require_redis, metrics=_metrics()):
        pass


def test_db_beyond_the_servers_databases_saver(redis_server_bin: str) -> None:
    with RedisServer(args=["--databases", "4"], binary=redis_server_bin) as server:
        url = _db_url(server, 7)
        expected = (
            f"url='{url}' selects db 7, but the server has 4 databases (0 to 3): use a db from 0 "
            "to 3 in the url= argument"
        )
        for require_redis in (True, False):
            with pytest.raises(ConfigurationError) as info:
                _open_saver(url, require_redis)
            assert str(info.value).startswith(expected), str(info.value)

            async def run(require: bool) -> None:
                async with AsyncRedisSaver.from_conn_string(url, require_redis=require):
                    pass

            with pytest.raises(ConfigurationError) as info:
                asyncio.run(run(require_redis))
            assert str(info.value).startswith(expected), str(info.value)
        # A db the server has is fine.
        with RedisSaver.from_conn_string(_db_url(server, 3)) as saver:
            assert list(saver.list_threads()) == []


def test_db_beyond_the_servers_databases_from_redis_url(
    redis_server_bin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RedisServer(binary=redis_server_bin) as server:
        monkeypatch.setenv("REDIS_URL", _db_url(server, 99))
        text = _error_from(_use_saver)
        assert text.startswith(f"REDIS_URL='{_db_url(server, 99)}' selects db 99"), text
        assert "has 16 databases (0 to 15)" in text and "in REDIS_URL" in text
        for argv in (("threads", "list"), ("stats",), ("invalidate", "--namespace", "ns")):
            err = _cli_error(*argv)
            assert "selects db 99" in err and "16 databases" in err


def test_db_beyond_the_databases_of_a_server_that_hides_config(redis_server_bin: str) -> None:
    args = ["--databases", "4", "--rename-command", "CONFIG", ""]
    with RedisServer(args=args, binary=redis_server_bin) as server:
        with pytest.raises(ConfigurationError) as info:
            _open_saver(_db_url(server, 7))
        assert "selects db 7, but the server does not have it" in str(info.value)
        assert "CONFIG GET databases" in str(info.value)


def test_db_beyond_the_databases_behind_sentinel(redis_server_bin: str) -> None:
    with RedisSentinelGroup(replicas=0, sentinels=1, binary=redis_server_bin) as group:
        url = f"{group.url}/99"
        with pytest.raises(ConfigurationError, match="selects db 99, but the server has 16"):
            _open_saver(url)


def test_db_beyond_the_servers_databases_engine(redis_server: RedisServer) -> None:
    url = _db_url(redis_server, 99)
    with (
        CacheEngine(url, metrics=_metrics()) as engine,
        pytest.raises(ConfigurationError, match="selects db 99"),
    ):
        engine.get("ns", "k")


def test_db_beyond_the_servers_databases_engine_invalidation(redis_server: RedisServer) -> None:
    # Invalidations already raise what a command raised: now the db and the server's count.
    with CacheEngine(_db_url(redis_server, 99), metrics=_metrics()) as engine:
        for invalidate in (lambda: engine.delete("ns", "k"), lambda: engine.clear("ns")):
            with pytest.raises(ConfigurationError, match="selects db 99, but the server has 16"):
                invalidate()


def test_db_beyond_the_servers_databases_health_cli(redis_server: RedisServer) -> None:
    err = _cli_error("--url", _db_url(redis_server, 99), "health")
    assert "selects db 99" in err


# --- real servers: cluster mode asked of a lone server -------------------------------------------


def test_cluster_asked_of_a_lone_server_same_words_everywhere(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("REDIS_CLUSTER", "yes")
    expected = (
        f"cannot use Redis Cluster: REDIS_CLUSTER=true asks for it, but the server at "
        f"REDIS_URL='{redis_server.url}' is not a cluster node (cluster mode is not enabled): "
        "set REDIS_CLUSTER=auto (or false) for a single server, or point REDIS_URL at a node of "
        "the cluster"
    )
    for face in (_use_saver, _use_async_saver, _use_engine, _use_health):
        assert _error_from_chain(face) == expected

    async def without_ping() -> None:
        async with AsyncRedisSaver.from_conn_string(require_redis=False, metrics=_metrics()):
            pass

    with pytest.raises(ConfigurationError) as info:
        asyncio.run(without_ping())
    assert str(info.value) == expected
    for argv in (("threads", "list"), ("health",), ("invalidate", "--namespace", "ns")):
        assert _cli_error(*argv) == f"redis-checkpoint: {expected}\n"


def _error_from_chain(face: Callable[[], Any]) -> str:
    # The message, whatever redis-py exception it was raised from.
    with pytest.raises(ConfigurationError) as info:
        face()
    return str(info.value)


@pytest.mark.parametrize(
    ("url_suffix", "overrides", "asked"),
    [
        ("", {"cluster": True}, "cluster=True asks for it"),
        ("?cluster=true", {}, "cluster=true in the query of the url= argument asks for it"),
    ],
)
def test_cluster_asked_by_argument_or_query(
    redis_server: RedisServer, url_suffix: str, overrides: dict[str, Any], asked: str
) -> None:
    with pytest.raises(ConfigurationError, match=asked):
        create_client(redis_server.url + url_suffix, **overrides)


def test_cluster_scheme_against_a_lone_server(redis_server: RedisServer) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    with pytest.raises(ConfigurationError) as info:
        create_client(url)
    assert "the redis+cluster:// scheme of the url= argument asks for it" in str(info.value)
    assert "use redis:// for a single server" in str(info.value)


def test_cluster_asked_of_a_lone_server_async_engine(redis_server: RedisServer) -> None:
    async def run() -> None:
        settings = Settings(url=redis_server.url, cluster=True)
        engine = AsyncCacheEngine(settings, metrics=_metrics())
        try:
            await engine.get("ns", "k")
        finally:
            await engine.aclose()

    with pytest.raises(ConfigurationError, match="cannot use Redis Cluster"):
        asyncio.run(run())
