"""SQLAlchemy 2 Select results through the query cache: SQLite (sync and aiosqlite) always, the
real PostgreSQL at 127.0.0.1:5432 (psycopg, sync and async) when reachable (required on CI)."""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from cache_helpers import private_metrics, unique
from query_helpers import POSTGRES_URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session

from redis_checkpoint import QueryCache
from redis_checkpoint.cache.query.sqlalchemy import statement_key, table_names

UTC_PLUS_2 = dt.timezone(dt.timedelta(hours=2))
metadata = sa.MetaData()
customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50)),
    sa.Column("ref", sa.Uuid),
    sa.Column("since", sa.Date),
)
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.ForeignKey("customers.id")),
    sa.Column("total", sa.Numeric(12, 2)),
    sa.Column("placed", sa.DateTime(timezone=True)),
    sa.Column("note", sa.LargeBinary, nullable=True),
)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __table__ = customers


def _seed(connection: sa.Connection) -> None:
    connection.execute(
        customers.insert(),
        [
            {"id": 1, "name": "ada", "ref": uuid.UUID(int=1), "since": dt.date(2020, 1, 31)},
            {"id": 2, "name": "bob", "ref": uuid.UUID(int=2), "since": dt.date(2021, 6, 1)},
        ],
    )
    placed = dt.datetime(2026, 11, 26, 12, 30, tzinfo=UTC_PLUS_2)
    connection.execute(
        orders.insert(),
        [
            {"id": 1, "customer_id": 1, "total": Decimal("10.50"), "placed": placed, "note": b"x"},
            {"id": 2, "customer_id": 1, "total": Decimal("0.05"), "placed": placed, "note": None},
            {"id": 3, "customer_id": 2, "total": Decimal("7.00"), "placed": placed, "note": None},
        ],
    )


def report(since: int = 0) -> sa.Select[Any]:
    return (
        sa.select(
            customers.c.name,
            customers.c.ref,
            customers.c.since,
            sa.func.count(orders.c.id).label("n"),
            sa.func.sum(orders.c.total).label("spent"),
            sa.func.max(orders.c.placed).label("last"),
        )
        .join(orders, orders.c.customer_id == customers.c.id)
        .where(customers.c.id > since)
        .group_by(customers.c.name, customers.c.ref, customers.c.since)
        .order_by(customers.c.name)
    )


class Counter:
    """Counts the statements a SQLAlchemy engine sends to its database."""

    def __init__(self, target: sa.Engine) -> None:
        self.statements = 0
        sa.event.listen(target, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.statements += 1


@pytest.fixture
def cache(redis_url: str) -> Iterator[QueryCache]:
    query_cache = QueryCache(redis_url, prefix=unique("sqla"), metrics=private_metrics())
    try:
        yield query_cache
    finally:
        query_cache.close()


@pytest.fixture
def sqlite_engine(tmp_path: Any) -> Iterator[sa.Engine]:
    db = sa.create_engine(f"sqlite:///{tmp_path}/shop.db")
    metadata.create_all(db)
    with db.begin() as connection:
        _seed(connection)
    try:
        yield db
    finally:
        db.dispose()


def _check_rows(result: sa.Result[Any], timezone_kept: bool) -> None:
    rows = result.all()
    assert [row.name for row in rows] == ["ada", "bob"]
    ada = rows[0]
    assert ada.ref == uuid.UUID(int=1) and ada.since == dt.date(2020, 1, 31)
    assert ada.n == 2 and ada.spent == Decimal("10.55")
    if timezone_kept:
        assert ada.last == dt.datetime(2026, 11, 26, 10, 30, tzinfo=dt.timezone.utc)
        assert ada.last.utcoffset() is not None


def test_select_rows_cached_on_sqlite(cache: QueryCache, sqlite_engine: sa.Engine) -> None:
    counter = Counter(sqlite_engine)
    with Session(sqlite_engine) as session:
        first = cache.execute(session, report())
        sent = counter.statements
        second = cache.execute(session, report())
        assert counter.statements == sent  # the second came from Redis
        first_rows, second_rows = first.all(), second.all()
        assert first_rows == second_rows
        assert [tuple(r) for r in first_rows] == [tuple(r) for r in second_rows]
        assert cache.execute(session, report()).mappings().first() == second_rows[0]._mapping
        assert cache.execute(session, report(since=1)).scalars().all() == ["bob"]
        assert counter.statements == sent + 1  # another parameter is another key


def test_write_helper_invalidates_the_tables_read(
    cache: QueryCache, sqlite_engine: sa.Engine
) -> None:
    counter = Counter(sqlite_engine)
    by_name = sa.select(customers.c.name).order_by(customers.c.id)
    with Session(sqlite_engine) as session:
        assert cache.execute(session, by_name).scalars().all() == ["ada", "bob"]
        with cache.invalidates("customers"):
            session.execute(customers.update().where(customers.c.id == 2).values(name="eve"))
            session.commit()
        before = counter.statements
        assert cache.execute(session, by_name).scalars().all() == ["ada", "eve"]
        assert counter.statements == before + 1


def test_key_and_tags_come_from_the_compiled_statement(sqlite_engine: sa.Engine) -> None:
    assert table_names(report()) == ["customers", "orders"]
    with sqlite_engine.connect() as connection:
        assert statement_key(connection, report(1)) == statement_key(connection, report(1))
        assert statement_key(connection, report(1)) != statement_key(connection, report(2))
    other = sa.create_engine("sqlite:///:memory:")
    try:
        with other.connect() as connection, sqlite_engine.connect() as mine:
            assert statement_key(connection, report(1)) != statement_key(mine, report(1))
    finally:
        other.dispose()


def test_orm_entities_are_refused(cache: QueryCache, sqlite_engine: sa.Engine) -> None:
    with Session(sqlite_engine) as session, pytest.raises(TypeError, match="not ORM entities"):
        cache.execute(session, sa.select(Customer))


async def test_async_select_on_aiosqlite(cache: QueryCache, tmp_path: Any) -> None:
    db = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    try:
        async with db.begin() as connection:
            await connection.run_sync(metadata.create_all)
            await connection.run_sync(_seed)
        counter = Counter(db.sync_engine)
        async with AsyncSession(db) as session:
            first = (await cache.aexecute(session, report())).all()
            sent = counter.statements
            second = (await cache.aexecute(session, report())).all()
            assert counter.statements == sent and first == second
            assert second[0].spent == Decimal("10.55")
    finally:
        await db.dispose()
        await cache.aclose()


# -- PostgreSQL -------------------------------------------------------------------------------


def _postgres_or_skip() -> str:
    try:
        db = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"))
        with db.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        db.dispose()
    except Exception as exc:
        message = f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)  # on CI a missing database is a broken setup
        pytest.skip(message)
    return POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://")


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """A schema of our own in the test database, dropped afterwards."""
    url = _postgres_or_skip()
    schema = f"rc_{unique('q').replace('-', '_')}"
    db = sa.create_engine(url)
    with db.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url, schema
    finally:
        with db.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        db.dispose()


def _on_schema(url: str, schema: str) -> dict[str, Any]:
    return {"connect_args": {"options": f"-csearch_path={schema}"}}


def test_postgres_sync(cache: QueryCache, pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    db = sa.create_engine(url, **_on_schema(url, schema))
    try:
        with db.begin() as connection:
            metadata.create_all(connection)
            _seed(connection)
        counter = Counter(db)
        with db.connect() as connection:
            first = cache.execute(connection, report())
            sent = counter.statements
            second = cache.execute(connection, report())
            assert counter.statements == sent
            rows = second.all()
            assert rows == first.all()
            _check_rows(cache.execute(connection, report()), timezone_kept=True)
            assert rows[0].last.utcoffset() == dt.timedelta(0)  # timestamptz comes back aware
    finally:
        db.dispose()


@pytest.fixture
async def pg_async(pg_schema: tuple[str, str]) -> AsyncIterator[AsyncEngine]:
    url, schema = pg_schema
    db = create_async_engine(url, **_on_schema(url, schema))
    async with db.begin() as connection:
        await connection.run_sync(metadata.create_all)
        await connection.run_sync(_seed)
    try:
        yield db
    finally:
        await db.dispose()


async def test_postgres_async(cache: QueryCache, pg_async: AsyncEngine) -> None:
    counter = Counter(pg_async.sync_engine)
    async with pg_async.connect() as connection:
        first = (await cache.aexecute(connection, report())).all()
        sent = counter.statements
        second = await cache.aexecute(connection, report())
        assert counter.statements == sent
        rows = second.all()
        assert rows == first
        assert rows[0].spent == Decimal("10.55") and rows[0].ref == uuid.UUID(int=1)
        async with cache.invalidates("orders"):
            await connection.execute(orders.delete().where(orders.c.id == 2))
            await connection.commit()
        after = (await cache.aexecute(connection, report())).all()
        assert after[0].spent == Decimal("10.50") and counter.statements == sent + 2
    await cache.aclose()


def test_without_sqlalchemy_execute_names_the_extra(
    cache: QueryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a machine without SQLAlchemy: the integration module cannot be imported.
    monkeypatch.delitem(sys.modules, "redis_checkpoint.cache.query.sqlalchemy", raising=False)
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(ModuleNotFoundError, match=r"redis-checkpoint\[sqlalchemy\]"):
        cache.execute(object(), report())
