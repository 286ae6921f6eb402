"""Exceptions raised by redis_checkpoint.

Each one also derives from the builtin a caller would naturally catch
(``ValueError`` for bad settings, ``ConnectionError`` for an unreachable
server), so code that does not know this package still handles them.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "CorruptEntryError",
    "FallbackJournalError",
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
