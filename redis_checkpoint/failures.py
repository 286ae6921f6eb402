"""Sorting Redis errors: an outage (the caller falls back to memory) or a refusal (wrong
password, missing ACL permission: raised as :class:`RedisAuthError`, never hidden behind the
memory tier). Every component asks these two functions, so they agree on every error."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import redis
import redis.exceptions
import redis.sentinel

from redis_checkpoint.errors import AuthReason, RedisAuthError, RedisUnavailableError
from redis_checkpoint.settings import redact_url

__all__ = ["access_error", "is_unavailable_error"]

_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = tuple(
    t
    for t in (
        redis.exceptions.ConnectionError,  # includes BusyLoadingError
        redis.exceptions.TimeoutError,
        getattr(redis.exceptions, "BusyLoadingError", None),
        getattr(redis.exceptions, "ClusterDownError", None),  # includes MasterDownError
        getattr(redis.exceptions, "ClusterError", None),
        getattr(redis.exceptions, "MasterDownError", None),
        getattr(redis.exceptions, "TryAgainError", None),
        getattr(redis.exceptions, "SlotNotCoveredError", None),
        # The server answers but cannot take writes.
        getattr(redis.exceptions, "OutOfMemoryError", None),
        getattr(redis.exceptions, "ReadOnlyError", None),
        OSError,  # includes builtin ConnectionError and socket timeouts
        asyncio.TimeoutError,
    )
    if isinstance(t, type)
)


# An error a pipeline raises carries its command: "Command # 2 (EVALSHA ab12 1 k) of pipeline
# caused error: <the server's message>"; the arguments may be payloads, so only the name is kept.
_PIPELINE_ERROR = re.compile(r"^Command # \d+ \((\S+).*?\) of pipeline caused error: (.*)$", re.S)
# Redis < 7.2 reports a command a Lua script may not run as a plain ERR.
_SCRIPT_NOPERM = "The user executing the script can't run this command"
_WRAPPERS: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisClusterException,
    redis.exceptions.ClusterError,
    redis.sentinel.MasterNotFoundError,
    RedisUnavailableError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and, through wrappers only, the errors it was raised from or while handling:
    the cluster client reports a node that refused AUTH as "cannot be connected" (from it), and
    a NOPERM on CLUSTER SLOTS as "cluster mode is not enabled" (while handling it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        if not isinstance(current, _WRAPPERS) or isinstance(
            current, redis.exceptions.ResponseError
        ):
            return  # a server reply (CLUSTERDOWN, ...) or a transport error is its own fact
        current = current.__cause__ or current.__context__


def _access_reason(exc: BaseException) -> tuple[AuthReason, str] | None:
    """(reason, what the server said) when ``exc`` is Redis refusing these credentials or this
    user's permissions, else None."""
    for error in _chain(exc):
        if isinstance(error, RedisAuthError):
            return error.reason, error.detail
        if not isinstance(error, redis.exceptions.RedisError):
            continue
        text = str(error)
        command = ""
        match = _PIPELINE_ERROR.match(text)
        if match is not None:
            command, text = match.group(1).upper(), match.group(2)
        detail = f"{command}: {text}" if command else text
        code = getattr(error, "status_code", None) or ""
        # A ResponseError built from the raw reply still starts with its code.
        first = text.split(" ", 1)[0]
        if first in ("WRONGPASS", "NOAUTH", "NOPERM"):
            code = first
        if code == "NOPERM" or isinstance(error, redis.exceptions.NoPermissionError):
            return "no_permission", detail
        if _SCRIPT_NOPERM in text:
            return "no_permission", detail
        if code == "NOAUTH" or text.startswith("Authentication required"):
            return "password_required", detail
        if code == "WRONGPASS":
            return "wrong_password", detail
        if isinstance(error, redis.exceptions.AuthenticationWrongNumberOfArgsError):
            return "wrong_password", detail  # a user name sent to a server without ACLs
        if isinstance(error, redis.exceptions.AuthenticationError):
            lowered = text.lower()
            if "without any password configured" in lowered or "no password is set" in lowered:
                return "password_not_set", detail
            return "wrong_password", detail  # "invalid password", "Invalid Username or Password"
        if isinstance(error, redis.sentinel.MasterNotFoundError) and (
            "AuthenticationError" in text
        ):
            # Each Sentinel's failure is listed by repr, "auth:AuthenticationError", no message.
            return "wrong_password", "a Sentinel refused the sentinel_password"
    return None


def access_error(exc: BaseException, where: str) -> RedisAuthError | None:
    """The :class:`RedisAuthError` to raise when ``exc`` is Redis refusing this client - a wrong
    password (WRONGPASS), a missing one (NOAUTH), an ACL that forbids a command or a key
    (NOPERM) - also inside the cluster and Sentinel clients' wrappers; None for anything else.

    ``where`` names the server in the message; it is redacted here in case it is a URL with a
    password. An error that already is a RedisAuthError is returned as it is.
    """
    if isinstance(exc, RedisAuthError):
        return exc
    found = _access_reason(exc)
    if found is None:
        return None
    reason, detail = found
    return RedisAuthError(reason, redact_url(where) if "://" in where else where, detail[:300])


def is_unavailable_error(exc: BaseException) -> bool:
    """True if ``exc`` means Redis is unreachable or not serving requests.

    Ordinary command errors (NOSCRIPT, WRONGTYPE, syntax) return False: they
    are bugs or data problems, not outages, and must not trigger fallback.
    Nor do refused credentials or permissions (:func:`access_error`), though
    redis-py raises WRONGPASS and NOAUTH as ConnectionError: serving from
    memory would hide a configuration error behind a working application.
    """
    if _access_reason(exc) is not None:
        return False
    if isinstance(exc, _UNAVAILABLE_TYPES):
        return True
    if isinstance(exc, redis.exceptions.RedisClusterException):
        # Raised when no startup node answers while (re)discovering slots; the
        # same message also wraps "Cluster mode is not enabled", a config error.
        message = str(exc)
        return "cannot be connected" in message and "not enabled" not in message
    if isinstance(exc, redis.exceptions.ResponseError):
        # Writes refused because the server cannot persist (stop-writes-on-bgsave-error).
        return str(exc).startswith("MISCONF")
    return False
