"""SQLAlchemy 2: a ``Select``'s rows through the query cache, sync and async.

``cache.execute(session, select(...))`` returns a real :class:`sqlalchemy.engine.Result`
(``.all()``, ``.scalars()``, ``.mappings()``, ``.one()``, attribute access on rows) built from
the cached rows, on a miss exactly as on a hit. The key is the statement compiled for the bind's
dialect, its bound parameters and the database's URL (password hidden), so two databases never
share an entry. By default an entry is tagged with the name of every table the statement reads,
so ``cache.invalidate("orders")`` (or a write wrapped in ``cache.invalidates("orders")``) drops
every cached query that touched ``orders``.

Only column rows are cached (``select(User.id, User.name)``, a Core table, a text query with
``.columns``): ORM entities are live objects of a session and are refused with a TypeError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table
from sqlalchemy.engine import IteratorResult, Result
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.visitors import iterate

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.keys import digest
from redis_checkpoint.cache.query import plain_rows

if TYPE_CHECKING:
    from redis_checkpoint.cache.query import QueryCache

__all__ = ["aexecute_cached", "execute_cached", "statement_key", "table_names"]


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
    params = sorted(([str(k), v] for k, v in compiled.params.items()), key=lambda kv: kv[0])
    try:
        material = codec.dumps(plain_rows(params))
    except TypeError as exc:
        raise TypeError(f"cannot build a cache key from the statement parameters: {exc}") from None
    return digest(
        "sqlalchemy", engine.url.render_as_string(hide_password=True), str(compiled), material
    )


def table_names(statement: ClauseElement) -> list[str]:
    """The names (``schema.name`` when a schema is set) of the tables a statement reads."""
    names = {
        f"{node.schema}.{node.name}" if node.schema else node.name
        for node in iterate(statement)
        if isinstance(node, Table)
    }
    return sorted(names)


def _rows(result: Result[Any]) -> list[Any]:
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


def _result(stored: Sequence[Any]) -> Result[Any]:
    keys, rows = stored
    return IteratorResult(SimpleResultMetaData(keys), iter(rows))


def _options(
    statement: ClauseElement, ttl: float | None, tags: Sequence[str] | None
) -> dict[str, Any]:
    return {"ttl": ttl, "tags": table_names(statement) if tags is None else list(tags)}


def execute_cached(
    cache: QueryCache,
    bind: Any,
    statement: ClauseElement,
    *,
    ttl: float | None = None,
    tags: Sequence[str] | None = None,
) -> Result[Any]:
    """The statement's result from the cache, else from ``bind`` (a Session or Connection).
    ``tags=None`` tags the entry with the tables read."""
    stored = cache.cached_call(
        statement_key(bind, statement),
        lambda: _rows(bind.execute(statement)),
        **_options(statement, ttl, tags),
    )
    return _result(stored)


async def aexecute_cached(
    cache: QueryCache,
    bind: Any,
    statement: ClauseElement,
    *,
    ttl: float | None = None,
    tags: Sequence[str] | None = None,
) -> Result[Any]:
    """:func:`execute_cached` on an AsyncSession or AsyncConnection."""

    async def load() -> list[Any]:
        return _rows(await bind.execute(statement))

    stored = await cache.acached_call(
        statement_key(bind, statement), load, **_options(statement, ttl, tags)
    )
    return _result(stored)
