"""The query cache's keys and tags (pure).

A query's key is its text (and database) with its parameters. A decorated function's key is its
module and qualified name plus its bound arguments, without the database handle it runs on; its
tags may hold ``{argument}`` fields filled from the same arguments. Both derive through
:func:`redis_checkpoint.cache.keys.derive_key`, as every face's keys do.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis_checkpoint.cache.keys import derive_key, digest
from redis_checkpoint.cache.query.rows import plain_rows

__all__ = ["CallKey", "expand_tags", "params_key"]

_DRIVER_MODULES = ("sqlalchemy.", "sqlite3", "psycopg", "asyncpg", "aiosqlite")
_HANDLE_CLASSES = frozenset(
    {
        "Session",
        "AsyncSession",
        "scoped_session",
        "async_scoped_session",
        "Connection",
        "AsyncConnection",
        "Engine",
        "AsyncEngine",
        "Cursor",
        "AsyncCursor",
        "ServerCursor",
        "AsyncServerCursor",
        "Pool",
    }
)


def params_key(*scope: str, params: Any, what: str) -> str:
    """The key of ``scope`` (a query's text, its database) with its parameters: a sequence, or a
    mapping whose order does not matter. ``what`` names the parameters in a TypeError."""
    if isinstance(params, Mapping):
        params = sorted(([str(k), v] for k, v in params.items()), key=lambda kv: kv[0])
    return derive_key(*scope, material=plain_rows(params), what=what)


def _is_db_handle(value: Any) -> bool:
    """A connection, session, cursor, engine or pool of SQLAlchemy, a known driver, or any
    DB-API connection (it has ``cursor()`` and ``commit()``). Statements and other values of
    those libraries are not handles: they stay in the key."""
    for cls in type(value).__mro__:
        if cls.__name__ in _HANDLE_CLASSES and cls.__module__.startswith(_DRIVER_MODULES):
            return True
    return callable(getattr(value, "cursor", None)) and callable(getattr(value, "commit", None))


class CallKey:
    """Builds keys and tags from a function's bound arguments."""

    def __init__(
        self,
        function: Callable[..., Any],
        key: Callable[..., str] | None,
        tags: Sequence[str],
        ignore: Sequence[str],
    ) -> None:
        if isinstance(tags, str):
            raise TypeError("tags must be a sequence of strings, e.g. tags=['orders']")
        self.function = function
        self.name = f"{function.__module__}.{function.__qualname__}"
        self.signature = inspect.signature(function)
        self.custom = key
        self.tags = tuple(tags)
        self.ignore = frozenset(ignore)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> inspect.BoundArguments:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound

    def key(self, bound: inspect.BoundArguments) -> str:
        if self.custom is not None:
            return digest(self.name, self.custom(*bound.args, **bound.kwargs))
        kept: list[Any] = []
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                kept.extend([k, v] for k, v in sorted(value.items()) if not _is_db_handle(v))
            elif name not in self.ignore and not _is_db_handle(value):
                kept.append([name, value])
        return derive_key(
            self.name,
            material=plain_rows(kept),
            what=f"for {self.function.__qualname__}",
            hint="pass key=... or ignore=[...]",
        )

    def expand(self, bound: inspect.BoundArguments) -> list[str]:
        return expand_tags(self.tags, bound.arguments)


def expand_tags(tags: Sequence[str], arguments: Mapping[str, Any]) -> list[str]:
    """Fill ``{name}`` fields of the tags from the arguments (KeyError names a missing one)."""
    try:
        return [tag.format_map(arguments) if "{" in tag else tag for tag in tags]
    except (KeyError, IndexError) as exc:
        raise ValueError(f"a tag in {list(tags)} names an unknown argument: {exc}") from None
