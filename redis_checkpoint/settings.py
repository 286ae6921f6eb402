"""Connection and behaviour settings, read from arguments or the environment."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .errors import ConfigurationError

__all__ = ["ENV_VARS", "SUPPORTED_SCHEMES", "Settings", "join_url", "redact_url"]

SUPPORTED_SCHEMES: tuple[str, ...] = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)

# Environment variable -> Settings field.
ENV_VARS: dict[str, str] = {
    "REDIS_URL": "url",
    "REDIS_MAX_CONNECTIONS": "max_connections",
    "REDIS_SOCKET_TIMEOUT": "socket_timeout",
    "REDIS_SOCKET_CONNECT_TIMEOUT": "socket_connect_timeout",
    "REDIS_RETRIES": "retries",
    "CACHE_ENABLED": "cache_enabled",
    "CACHE_DEFAULT_TTL": "default_ttl",
    "REDIS_KEY_PREFIX": "key_prefix",
    "REDIS_CLUSTER": "cluster",
}

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_SECRET_QUERY_KEYS = frozenset({"password", "sentinel_password"})


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    User name, hosts, ports, path and other query parameters are kept so the
    result still identifies the server in logs and error messages.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        # Never echo something we could not parse: it may hold a secret.
        return "<unparseable redis url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            userinfo = f"{user}:***"
        netloc = f"{userinfo}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k in _SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode(
                [(k, "***" if k in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
            )
    return join_url(parts.scheme, netloc, parts.path, query, parts.fragment)


def join_url(scheme: str, netloc: str, path: str, query: str = "", fragment: str = "") -> str:
    """Inverse of urlsplit that always keeps ``//`` (urlunsplit drops it for unix:///)."""
    url = f"{scheme}://{netloc}{path}"
    if query:
        url = f"{url}?{query}"
    if fragment:
        url = f"{url}#{fragment}"
    return url


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad(label: str, value: object, expectation: str) -> ConfigurationError:
    return ConfigurationError(f"{label}={value!r} {expectation}")


@dataclass(frozen=True)
class Settings:
    """Everything needed to build clients and the layers on top of them.

    ``default_ttl`` of 0 is normalised to ``None`` (no expiry). ``cluster`` of
    ``None`` means "decide from the URL".
    """

    url: str = "redis://127.0.0.1:6379/0"
    max_connections: int = 50
    socket_timeout: float = 2.0
    socket_connect_timeout: float = 0.5
    retries: int = 1
    cache_enabled: bool = True
    default_ttl: int | None = 3600
    key_prefix: str = "rc"
    cluster: bool | None = None
    breaker_failure_threshold: int = 3
    breaker_recovery_timeout: float = 1.0
    breaker_max_recovery_timeout: float = 30.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = _validate(field.name, getattr(self, field.name), field.name)
            # Normalised values (0 TTL -> None, int timeouts -> float).
            object.__setattr__(self, field.name, value)
        if self.breaker_max_recovery_timeout < self.breaker_recovery_timeout:
            raise ConfigurationError(
                f"breaker_max_recovery_timeout={self.breaker_max_recovery_timeout!r} "
                f"must be >= breaker_recovery_timeout={self.breaker_recovery_timeout!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from environment variables.

        Explicit keyword ``overrides`` win over the environment; an override
        of ``None`` counts as not given (use ``default_ttl=0`` for no expiry).
        Empty environment variables count as unset.
        """
        env = os.environ if environ is None else environ
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(unknown)}; expected some of {sorted(known)}"
            )
        values: dict[str, Any] = {}
        for var, name in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or not raw.strip():
                continue
            raw = raw.strip()
            # Errors quote the text as written in the environment.
            shown = redact_url(raw) if name == "url" else raw
            values[name] = _validate(name, _PARSERS[name](var, raw), var, shown)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        return cls(**values)

    def redacted_url(self) -> str:
        """The URL with its password replaced by ``***``, safe for logs."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        # The generated repr would show the password, in logs, tracebacks, and even the repr of
        # the bound method ``settings.redacted_url`` if someone forgets to call it.
        shown = (
            f"{f.name}={self.redacted_url() if f.name == 'url' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"{type(self).__name__}({', '.join(shown)})"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(unknown)}; expected some of {sorted(known)}"
            )
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self


# --- parsing of environment strings -------------------------------------------------


def _parse_str(var: str, raw: str) -> str:
    return raw


def _parse_int(var: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _bad(var, raw, "is not an integer") from None


def _parse_float(var: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _bad(var, raw, "is not a number (expected seconds, e.g. 2.0)") from None
    if not math.isfinite(value):
        raise _bad(var, raw, "is not a finite number (expected seconds, e.g. 2.0)")
    return value


def _parse_bool(var: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _bad(var, raw, "is not a boolean (expected true/false, 1/0, yes/no or on/off)")


def _parse_ttl(var: str, raw: str) -> int | None:
    if raw.lower() == "none":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _bad(
            var, raw, "is not a TTL (expected whole seconds, or 0/none for no expiry)"
        ) from None


def _parse_cluster(var: str, raw: str) -> bool | None:
    if raw.lower() == "auto":
        return None
    try:
        return _parse_bool(var, raw)
    except ConfigurationError:
        raise _bad(var, raw, "is not a boolean (expected true/false or auto)") from None


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "url": _parse_str,
    "max_connections": _parse_int,
    "socket_timeout": _parse_float,
    "socket_connect_timeout": _parse_float,
    "retries": _parse_int,
    "cache_enabled": _parse_bool,
    "default_ttl": _parse_ttl,
    "key_prefix": _parse_str,
    "cluster": _parse_cluster,
}


# --- validation of typed values -----------------------------------------------------


_UNSET: Any = object()


def _validate(name: str, value: Any, label: str, shown: Any = _UNSET) -> Any:
    """Check one field; ``label`` is what the error names (field or env var)."""
    if shown is _UNSET:
        shown = redact_url(value) if name == "url" and isinstance(value, str) else value
    if name == "url":
        if not isinstance(value, str) or not value:
            raise _bad(label, shown, "must be a non-empty redis URL string")
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme not in SUPPORTED_SCHEMES:
            raise _bad(
                label,
                shown,
                f"has unsupported scheme {scheme!r} (expected one of "
                f"{', '.join(s + '://' for s in SUPPORTED_SCHEMES)})",
            )
        return value
    if name in ("max_connections", "breaker_failure_threshold"):
        if not _is_int(value) or value < 1:
            raise _bad(label, shown, "must be a positive integer")
        return value
    if name == "retries":
        if not _is_int(value) or value < 0:
            raise _bad(label, shown, "must be an integer >= 0")
        return value
    if name in (
        "socket_timeout",
        "socket_connect_timeout",
        "breaker_recovery_timeout",
        "breaker_max_recovery_timeout",
    ):
        if not _is_number(value) or value <= 0:
            raise _bad(label, shown, "must be a positive number of seconds")
        return float(value)
    if name == "cache_enabled":
        if not isinstance(value, bool):
            raise _bad(label, shown, "must be a bool")
        return value
    if name == "default_ttl":
        if value is None:
            return None
        if not _is_int(value) or value < 0:
            raise _bad(label, shown, "must be whole seconds >= 0, or None/0 for no expiry")
        return value or None
    if name == "key_prefix":
        if not isinstance(value, str) or not value:
            raise _bad(label, shown, "must be a non-empty string")
        if any(c in "{}" or c.isspace() for c in value):
            raise _bad(label, shown, "must not contain '{', '}' or whitespace")
        return value
    if name == "cluster":
        if value is not None and not isinstance(value, bool):
            raise _bad(label, shown, "must be True, False or None (decide from the URL)")
        return value
    raise _bad(label, shown, "is not a known setting")  # pragma: no cover
