"""The keys every face derives from data, pinned byte for byte: entries already in Redis must
still hit after any change to how the keys are built. The expected strings were computed by the
code that wrote those entries; a change here is a cache flush for every user."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from redis_checkpoint.cache.keys import Digest, derive_key, digest
from redis_checkpoint.cache.llm import LLMCache, call_key
from redis_checkpoint.cache.query import QueryCache
from redis_checkpoint.cache.query.keys import CallKey

UNKEYABLE = (
    "cannot cache a value of type builtins.object: the cache stores str, bytes, int, float, "
    "bool, None, list, tuple, dict, datetime, date, Decimal and UUID (convert it, or pass "
    "encode=/decode= hooks)"
)


def ask(prompt: str, *, model: str, temperature: float = 0.0, api_key: str = "") -> str:
    return prompt


ask.__module__ = "app.llm"
ask.__qualname__ = "Client.ask"


def report(
    connection: Any,
    customer_id: int,
    since: dt.date = dt.date(2026, 1, 1),
    *rest: Any,
    **extra: Any,
) -> list[Any]:
    return []


report.__module__ = "app.reports"
report.__qualname__ = "report"


@pytest.fixture
def connection() -> Iterator[sqlite3.Connection]:
    handle = sqlite3.connect(":memory:")
    try:
        yield handle
    finally:
        handle.close()


def test_derive_key_is_the_digest_of_scope_and_encoded_material() -> None:
    key = derive_key("a", "b", material=[1, "x"], what="for f")
    assert isinstance(key, Digest)  # kept as it is by the key layout, never hashed again
    assert key == digest("a", "b", b"\x92\x01\xa1x")
    with pytest.raises(TypeError) as raised:
        derive_key("a", material=object(), what="for f", hint="pass key=...")
    assert str(raised.value) == f"cannot build a cache key for f: {UNKEYABLE}; pass key=..."
    with pytest.raises(TypeError) as raised:
        derive_key("a", material=object(), what="from x")
    assert str(raised.value) == f"cannot build a cache key from x: {UNKEYABLE}"


def test_llm_keys_are_pinned() -> None:
    kwargs = {"model": "m-1", "temperature": 0, "api_key": "sk-x", "Token": "t"}
    assert call_key(ask, ("Hi", 2), kwargs) == "#7e28591f8f9086e421451e16e744823a"
    assert call_key(ask, (), {}) == "#83c0ebcec2a256bbebe7882c4f266614"
    assert LLMCache.key("Hi", "model=m-1") == "#6f04e12fade80837dd2a8e6304947a8d"
    with pytest.raises(TypeError) as raised:
        call_key(ask, (object(),), {})
    assert (
        str(raised.value) == f"cannot build a cache key for Client.ask: {UNKEYABLE}; pass key=..."
    )


def test_query_keys_are_pinned() -> None:
    key = QueryCache.query_key
    assert key("SELECT * FROM t WHERE a = ? AND b = ?", [1, "x"]) == (
        "#015237c5c1c302a8ec72de69339065da"
    )
    params = {"b": uuid.UUID(int=7), "a": Decimal("1.50")}
    assert key("SELECT :a, :b", params) == "#1316e0668cfca11185d0706aba50097e"
    assert key("SELECT 1") == "#c3ae20ccc568aac604bcbe8cb5208545"
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert key("SELECT ?", (when, b"\x00")) == "#d5fc9452793c72f245ab2f991a9520b3"
    with pytest.raises(TypeError) as raised:
        key("SELECT 1", [object()])
    assert str(raised.value) == f"cannot build a cache key from the query parameters: {UNKEYABLE}"


def test_decorated_function_keys_are_pinned(connection: sqlite3.Connection) -> None:
    keys = CallKey(report, None, ["c:{customer_id}"], ())
    assert keys.key(keys.bind((connection, 42), {})) == "#b9524432a47828ef436931f12239d8a0"
    bound = keys.bind(
        (connection, 42, dt.date(2026, 2, 1), "a"), {"z": 1, "db": "main", "cx": connection}
    )
    assert keys.key(bound) == "#607752596bfcd2539b5cb0bfec8deadb"
    ignoring = CallKey(report, None, (), ("customer_id",))
    assert ignoring.key(ignoring.bind((connection, 42), {})) == "#8b2aa3a29e150ca04da898fccc13dbf8"
    custom = CallKey(report, lambda connection, customer_id, *a, **k: f"c{customer_id}", (), ())
    assert custom.key(custom.bind((connection, 42), {})) == "#3ed25e52f377a1b751876fcf818a81c6"
    with pytest.raises(TypeError) as raised:
        keys.key(keys.bind((connection, object()), {}))
    assert str(raised.value) == (
        f"cannot build a cache key for report: {UNKEYABLE}; pass key=... or ignore=[...]"
    )


def test_sqlalchemy_statement_keys_are_pinned() -> None:
    sa = pytest.importorskip("sqlalchemy")
    from redis_checkpoint.cache.query.sqlalchemy import statement_key

    orders = sa.Table(
        "orders", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("total", sa.Numeric)
    )
    engine = sa.create_engine("sqlite://")
    statement = sa.select(orders.c.id).where(orders.c.total > Decimal("5"), orders.c.id.in_([1, 2]))
    # The key holds the dialect's SQL text: pinned for this spelling of it.
    assert str(statement.compile(dialect=engine.dialect)) == (
        "SELECT orders.id \nFROM orders \n"
        "WHERE orders.total > ? AND orders.id IN (__[POSTCOMPILE_id_1])"
    )
    with engine.connect() as bind:
        assert statement_key(bind, statement) == "#304567ad945e143aac43d0fe694f2ee8"
    assert statement_key(engine, sa.select(orders.c.id)) == "#4ba32e9ef68d505286bfe14d957b0714"
    unkeyable = sa.select(orders.c.id).where(
        orders.c.id == sa.bindparam("x", value=object(), type_=sa.Integer)
    )
    with pytest.raises(TypeError) as raised:
        statement_key(engine, unkeyable)
    assert str(raised.value) == (
        f"cannot build a cache key from the statement parameters: {UNKEYABLE}"
    )
    engine.dispose()
