from __future__ import annotations

import pickle

import pytest

from redis_checkpoint.errors import (
    ConfigurationError,
    CorruptEntryError,
    RedisCheckpointError,
    RedisUnavailableError,
)
from redis_checkpoint.settings import Settings


def test_defaults() -> None:
    s = Settings()
    assert s.url == "redis://127.0.0.1:6379/0"
    assert s.max_connections == 50
    assert s.socket_timeout == 2.0
    assert s.socket_connect_timeout == 0.5
    assert s.retries == 1
    assert s.cache_enabled is True
    assert s.default_ttl == 3600
    assert s.key_prefix == "rc"
    assert s.cluster is None
    assert s.breaker_failure_threshold == 3
    assert s.breaker_recovery_timeout == 1.0
    assert s.breaker_max_recovery_timeout == 30.0


def test_from_env_reads_every_variable() -> None:
    env = {
        "REDIS_URL": "redis://:secret@cache.internal:6380/2",
        "REDIS_MAX_CONNECTIONS": "7",
        "REDIS_SOCKET_TIMEOUT": "0.75",
        "REDIS_SOCKET_CONNECT_TIMEOUT": "0.1",
        "REDIS_RETRIES": "0",
        "CACHE_ENABLED": "off",
        "CACHE_DEFAULT_TTL": "120",
        "REDIS_KEY_PREFIX": "app1",
        "REDIS_CLUSTER": "yes",
    }
    s = Settings.from_env(env)
    assert s == Settings(
        url="redis://:secret@cache.internal:6380/2",
        max_connections=7,
        socket_timeout=0.75,
        socket_connect_timeout=0.1,
        retries=0,
        cache_enabled=False,
        default_ttl=120,
        key_prefix="app1",
        cluster=True,
    )


def test_from_env_empty_environment_gives_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    # Blank values count as unset, except REDIS_URL (tests/test_url_errors.py).
    assert Settings.from_env({"REDIS_RETRIES": "", "CACHE_DEFAULT_TTL": "  "}) == Settings()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("1", True),
        ("YES", True),
        ("On", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_cache_enabled_spellings(raw: str, expected: bool) -> None:
    assert Settings.from_env({"CACHE_ENABLED": raw}).cache_enabled is expected


@pytest.mark.parametrize("raw", ["0", "none", "None", "NONE"])
def test_ttl_no_expiry_spellings(raw: str) -> None:
    assert Settings.from_env({"CACHE_DEFAULT_TTL": raw}).default_ttl is None


def test_ttl_zero_argument_means_no_expiry() -> None:
    assert Settings(default_ttl=0).default_ttl is None
    assert Settings(default_ttl=None).default_ttl is None


def test_cluster_auto() -> None:
    assert Settings.from_env({"REDIS_CLUSTER": "auto"}).cluster is None
    assert Settings.from_env({"REDIS_CLUSTER": "false"}).cluster is False


def test_overrides_win_over_env_and_none_means_not_given() -> None:
    env = {"REDIS_URL": "redis://env-host:6379/0", "REDIS_MAX_CONNECTIONS": "9"}
    s = Settings.from_env(env, url="redis://arg-host:6379/1", max_connections=None)
    assert s.url == "redis://arg-host:6379/1"
    assert s.max_connections == 9  # None override does not clobber the env value
    assert Settings.from_env(env, default_ttl=0).default_ttl is None


@pytest.mark.parametrize(
    ("var", "raw", "fragment"),
    [
        ("REDIS_SOCKET_TIMEOUT", "abc", "REDIS_SOCKET_TIMEOUT='abc' is not a number"),
        ("REDIS_SOCKET_CONNECT_TIMEOUT", "-1", "REDIS_SOCKET_CONNECT_TIMEOUT='-1' must be"),
        ("REDIS_SOCKET_TIMEOUT", "nan", "REDIS_SOCKET_TIMEOUT='nan' is not a finite number"),
        ("REDIS_MAX_CONNECTIONS", "ten", "REDIS_MAX_CONNECTIONS='ten' is not an integer"),
        ("REDIS_MAX_CONNECTIONS", "0", "REDIS_MAX_CONNECTIONS='0' must be a positive integer"),
        ("REDIS_RETRIES", "-2", "REDIS_RETRIES='-2' must be an integer >= 0"),
        ("CACHE_ENABLED", "maybe", "CACHE_ENABLED='maybe' is not a boolean"),
        ("CACHE_DEFAULT_TTL", "1h", "CACHE_DEFAULT_TTL='1h' is not a TTL"),
        ("CACHE_DEFAULT_TTL", "-5", "CACHE_DEFAULT_TTL='-5' must be whole seconds"),
        ("REDIS_KEY_PREFIX", "a{b}", "REDIS_KEY_PREFIX='a{b}' must not contain"),
        ("REDIS_CLUSTER", "sometimes", "REDIS_CLUSTER='sometimes' is not a boolean"),
        ("REDIS_URL", "http://example.com", "REDIS_URL='http://example.com' has unsupported"),
    ],
)
def test_malformed_env_names_variable_and_value(var: str, raw: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({var: raw})
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_connections": 0}, "max_connections=0"),
        ({"max_connections": True}, "max_connections=True"),
        ({"socket_timeout": 0}, "socket_timeout=0"),
        ({"socket_connect_timeout": -0.5}, "socket_connect_timeout=-0.5"),
        ({"retries": -1}, "retries=-1"),
        ({"key_prefix": ""}, "key_prefix=''"),
        ({"key_prefix": "a b"}, "key_prefix='a b'"),
        ({"key_prefix": "x}"}, "key_prefix='x}'"),
        ({"key_prefix": "tab\there"}, "key_prefix="),
        ({"breaker_failure_threshold": 0}, "breaker_failure_threshold=0"),
        ({"breaker_recovery_timeout": 0.0}, "breaker_recovery_timeout=0.0"),
        (
            {"breaker_recovery_timeout": 5.0, "breaker_max_recovery_timeout": 1.0},
            "breaker_max_recovery_timeout=1.0 must be >= breaker_recovery_timeout=5.0",
        ),
        ({"cluster": "yes"}, "cluster='yes'"),
        ({"default_ttl": 1.5}, "default_ttl=1.5"),
    ],
)
def test_post_init_validation(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="socket_timeuot"):
        Settings.from_env({}, socket_timeuot=1.0)


def test_bad_url_error_does_not_leak_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(url="http://user:hunter2@example.com")
    assert "hunter2" not in str(info.value)
    assert "user:***@example.com" in str(info.value)


def test_redacted_url() -> None:
    s = Settings(url="rediss://alice:s3cret@db.example:6390/3")
    assert s.redacted_url() == "rediss://alice:***@db.example:6390/3"
    assert "s3cret" not in repr(s.redacted_url())


def test_settings_are_frozen_and_hashable() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.url = "redis://x"  # type: ignore[misc]
    assert hash(s) == hash(Settings())


def test_replace_applies_changes() -> None:
    s = Settings().replace(key_prefix="other", retries=None)
    assert s.key_prefix == "other"
    assert s.retries == 1


def test_error_hierarchy() -> None:
    assert issubclass(ConfigurationError, RedisCheckpointError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(RedisUnavailableError, RedisCheckpointError)
    assert issubclass(RedisUnavailableError, ConnectionError)
    err = CorruptEntryError("rc:checkpoint:t1", "bad msgpack")
    assert err.key == "rc:checkpoint:t1"
    assert "rc:checkpoint:t1" in str(err)
    assert isinstance(err, RedisCheckpointError)
    clone = pickle.loads(pickle.dumps(err))
    assert clone.key == err.key
    assert str(clone) == str(err)
