"""What a user's ``mypy --strict`` sees of the public API: precise types where they matter, and an
error for a misspelt option (no ``**kwargs: Any`` swallowing it)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from redis_checkpoint import RedisSaver

ROOT = Path(__file__).resolve().parent.parent

TYPED = """
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette

from redis_checkpoint import CacheMiddleware, CacheRule, QueryCache, TrustedForwarding
from redis_checkpoint import create_management_router


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


def read(cache: QueryCache, connection: sa.Connection) -> str:
    user_id, name = cache.execute(connection, sa.select(User.id, User.name)).one()
    reveal_type(user_id)
    return name


async def aread(cache: QueryCache, session: AsyncSession) -> int:
    user_id, _ = (await cache.aexecute(session, sa.select(User.id, User.name), ttl=5)).one()
    return user_id


app = Starlette()
app.add_middleware(
    CacheMiddleware,
    rules=[CacheRule("/items/*", ttl=60, max_entries=1000)],
    trusted_forwarding=TrustedForwarding(x_forwarded_for=1, client_address_headers=["x-real-ip"]),
)
"""

MISSPELT = {
    "rule": 'CacheRule("/x", max_entrys=1)',
    "middleware": "Starlette().add_middleware(CacheMiddleware, rulez=[])",
    "proxy": "TrustedForwarding(x_forwarded_fro=1)",
    "header": 'TrustedForwarding(client_address_headers=["x-real-ipp"])',
    "query": 'QueryCache().execute(None, sa.text("SELECT 1"), tll=5)',
    "management": 'create_management_app(tokn="read-secret")',
    "engine": 'CacheEngine(prefx="app")',
    "llm": "LLMCache(tll=5)",
    "embeddings": "CachedEmbeddings(DeterministicFakeEmbedding(size=4), metric=None)",
    "node": 'NodeCache(namspace="graph")',
    "query cache": "QueryCache(lock_timout=5)",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder, so the second mypy run reuses the first one's cache."""
    return tmp_path_factory.mktemp("typing")


def mypy(workdir: Path, name: str, code: str) -> list[str]:
    (workdir / f"{name}.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", ".cache", f"{name}.py"],
        cwd=workdir,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "checked 1 source file" in done.stdout, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith(f"{name}.py:")]


def test_typed_usage_checks_and_keeps_column_types(workdir: Path) -> None:
    found = mypy(workdir, "typed", TYPED)
    line = TYPED.splitlines().index("    reveal_type(user_id)") + 1
    assert found == [f'typed.py:{line}: note: Revealed type is "int"'], found


def test_a_misspelt_option_is_a_type_error(workdir: Path) -> None:
    header = (
        "import sqlalchemy as sa\nfrom starlette.applications import Starlette\n"
        "from redis_checkpoint import CacheMiddleware, CacheRule, QueryCache, TrustedForwarding\n"
        "from redis_checkpoint import create_management_app\n"
        "from redis_checkpoint import CacheEngine, CachedEmbeddings, LLMCache, NodeCache\n"
        "from redis_checkpoint import RedisSaver\n"
        "from langchain_core.embeddings import DeterministicFakeEmbedding\n"
    )
    lines = list(MISSPELT.values())
    found = mypy(workdir, "misspelt", header + "\n".join(lines) + "\n")
    errors = {int(line.split(":")[1]) for line in found if ": error:" in line}
    assert errors == set(range(8, 8 + len(lines))), found


def test_the_engine_options_are_the_cores() -> None:
    """CoreOptions types every engine's and face's keywords: it must list CacheCore's own."""
    from redis_checkpoint.cache.core import CacheCore, CoreOptions

    parameters = inspect.signature(CacheCore.__init__).parameters
    assert set(CoreOptions.__annotations__) == set(parameters) - {"self", "settings"}


def test_the_saver_options_are_the_savers() -> None:
    """SaverOptions types the savers' keywords: it must list RedisSaverBase's own."""
    from redis_checkpoint.checkpoint.base import RedisSaverBase, SaverOptions

    parameters = inspect.signature(RedisSaverBase.__init__).parameters
    assert set(SaverOptions.__annotations__) == set(parameters) - {"self", "url", "settings"}


@pytest.mark.parametrize("given", ["redis://localhost:6379/0", redis.asyncio.Redis])
def test_a_saver_given_no_sync_client_says_what_to_pass(given: Any) -> None:
    client = given() if callable(given) else given
    with pytest.raises(
        TypeError, match=r"RedisSaver takes a redis\.client\.Redis.*from_conn_string"
    ):
        RedisSaver(client)


def test_the_management_factories_take_the_api_options() -> None:
    """ManagementOptions types the factories' keywords: it must list ManagementAPI's own."""
    from redis_checkpoint.ops.management import ManagementAPI, ManagementOptions

    parameters = inspect.signature(ManagementAPI.__init__).parameters
    assert set(ManagementOptions.__annotations__) == set(parameters) - {"self"}
