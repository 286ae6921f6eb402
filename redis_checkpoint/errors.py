"""Exceptions raised by redis_checkpoint.

Each one also derives from the builtin a caller would naturally catch
(``ValueError`` for bad settings, ``ConnectionError`` for an unreachable
server, ``PermissionError`` for refused credentials), so code that does not
know this package still handles them.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ConfigurationError",
    "CorruptEntryError",
    "FallbackJournalError",
    "MissingThreadIdError",
    "RedisAuthError",
    "RedisCheckpointError",
    "RedisUnavailableError",
]


class RedisCheckpointError(Exception):
    """Base class of every error raised by redis_checkpoint."""


class ConfigurationError(RedisCheckpointError, ValueError):
    """A setting, environment variable or argument has a malformed value.

    The message names the variable or argument and the offending value.
    """


class RedisUnavailableError(RedisCheckpointError, ConnectionError):
    """Redis cannot be reached or is not serving requests.

    The message names the URL with any password replaced by ``***``.
    """


class FallbackJournalError(RedisCheckpointError, OSError):
    """The fallback journal could not be written: the call it was for is not acknowledged.

    The message names the journal file and the operating system's reason (a full disk, say).
    """


AuthReason = Literal["wrong_password", "password_required", "password_not_set", "no_permission"]

_CAUSES: dict[str, str] = {
    "wrong_password": "authentication failed: wrong password or user name",
    "password_required": "authentication failed: the server requires a password and none was given",
    "password_not_set": (
        "authentication failed: a password was given but the server has none set for this user"
    ),
    "no_permission": "permission denied: the Redis user may not run this command or use these keys",
}
_HINTS: dict[str, str] = {
    "wrong_password": (
        "put the right password in the URL (redis://USER:PASSWORD@host:port/db, or REDIS_URL), "
        "and check the ACL user exists and is enabled (ACL LIST)"
    ),
    "password_required": (
        "give the password in the URL (redis://:PASSWORD@host:port/db, or REDIS_URL)"
    ),
    "password_not_set": "remove the password from the URL, or name the ACL user it belongs to",
    "no_permission": (
        "grant the user the commands and keys this package uses, e.g. "
        "ACL SETUSER <user> +@all ~<key prefix>* &<key prefix>*"
    ),
}


class RedisAuthError(RedisCheckpointError, PermissionError):
    """Redis refused this client: WRONGPASS, NOAUTH, or NOPERM (an ACL forbids a command or key).

    Not an outage: nothing falls back to memory for it and no circuit breaker opens, since
    retrying cannot help until the password or the ACL is fixed. ``reason`` is one of
    ``wrong_password``, ``password_required``, ``password_not_set``, ``no_permission``;
    ``where`` is the server's URL with any password replaced by ``***``; ``detail`` is what the
    server said. The message names all three and a hint; it never holds a password.
    """

    reason: AuthReason
    where: str
    detail: str

    def __init__(self, reason: AuthReason, where: str, detail: str = "") -> None:
        self.reason = reason
        self.where = where
        self.detail = detail
        message = f"Redis at {where}: {_CAUSES[reason]}"
        if detail:
            message = f"{message} ({detail})"
        super().__init__(f"{message}; {_HINTS[reason]}")

    def __reduce__(self) -> tuple[type[RedisAuthError], tuple[AuthReason, str, str]]:
        return (type(self), (self.reason, self.where, self.detail))


class CorruptEntryError(RedisCheckpointError):
    """A stored entry could not be decoded."""

    key: str
    detail: str

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        self.detail = detail
        message = f"corrupt entry at key {key!r}"
        if detail:
            message = f"{message}: {detail}"
        super().__init__(message)

    def __reduce__(self) -> tuple[type[CorruptEntryError], tuple[str, str]]:
        # Default pickling would call __init__ with the formatted message as key.
        return (type(self), (self.key, self.detail))


class MissingThreadIdError(KeyError):
    """The config has no ``configurable.thread_id`` (a KeyError, as InMemorySaver raises; not a
    RedisCheckpointError, since LangGraph's own savers raise a plain KeyError for it)."""

    def __init__(self) -> None:
        super().__init__("thread_id")

    def __str__(self) -> str:
        return (
            "'thread_id': the checkpointer needs config['configurable']['thread_id'], "
            "e.g. graph.invoke(inputs, {'configurable': {'thread_id': '1'}})"
        )
