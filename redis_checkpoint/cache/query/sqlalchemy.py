"""SQLAlchemy 2: what ``QueryCache.execute``/``aexecute`` need to cache a ``Select``'s rows.

``cache.execute(session, select(...))`` returns a real :class:`sqlalchemy.engine.Result`
(``.all()``, ``.scalars()``, ``.mappings()``, ``.one()``, attribute access on rows) built from
the cached rows, on a miss exactly as on a hit. The key is the statement compiled for the bind's
dialect, its bound parameters and the database's URL (password hidden), so two databases never
share an entry. By default an entry is tagged with the name of every table the statement reads,
so ``cache.invalidate("orders")`` (or a write wrapped in ``cache.invalidates("orders")``) drops
every cached query that touched ``orders``.

Only column rows are cached (``select(User.id, User.name)``, a Core table, a text query with
``.columns``): ORM entities are live objects of a session and are refused with a TypeError.

SQLAlchemy is an optional dependency: only ``QueryCache.execute``/``aexecute`` import this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import IteratorResult, Result
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.visitors import iterate

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.query.keys import params_key
from redis_checkpoint.cache.query.rows import plain_rows

__all__ = ["as_result", "key_and_tags", "statement_key", "stored_rows", "table_names"]


def _sync_bind(bind: Any) -> Any:
    """The sync Engine or Connection under a Session, AsyncSession, Connection or
    AsyncConnection."""
    sync = getattr(bind, "sync_session", None) or getattr(bind, "sync_connection", None) or bind
    get_bind = getattr(sync, "get_bind", None)
    return get_bind() if callable(get_bind) else sync


def statement_key(bind: Any, statement: ClauseElement) -> str:
    """Digest of the database URL, the dialect's SQL text and the bound parameters."""
    target = _sync_bind(bind)
    engine = getattr(target, "engine", target)
    compiled = statement.compile(dialect=engine.dialect)
    url = engine.url.render_as_string(hide_password=True)
    return params_key(
        "sqlalchemy",
        url,
        str(compiled),
        params=compiled.params,
        what="from the statement parameters",
    )


def table_names(statement: ClauseElement) -> list[str]:
    """The names (``schema.name`` when a schema is set) of the tables a statement reads."""
    names = {
        f"{node.schema}.{node.name}" if node.schema else node.name
        for node in iterate(statement)
        if isinstance(node, Table)
    }
    return sorted(names)


def key_and_tags(
    bind: Any, statement: ClauseElement, tags: Sequence[str] | None
) -> tuple[str, list[str]]:
    """The statement's key, and its tags: ``tags``, or with None the tables it reads."""
    key = statement_key(bind, statement)
    return key, table_names(statement) if tags is None else list(tags)


def stored_rows(result: Result[Any]) -> list[Any]:
    """What the cache stores of a result: its column names and its rows as tuples."""
    keys = list(result.keys())
    rows = [tuple(row) for row in result.all()]
    stored = plain_rows([keys, rows])
    try:
        codec.dumps(stored)
    except TypeError as exc:
        raise TypeError(
            f"cannot cache these rows: {exc}; cache column selects "
            "(select(User.id, User.name)), not ORM entities"
        ) from None
    return stored  # type: ignore[no-any-return]


def as_result(stored: Sequence[Any]) -> Result[Any]:
    """A Result over stored rows, as the database would have returned it."""
    keys, rows = stored
    return IteratorResult(SimpleResultMetaData(keys), iter(rows))
