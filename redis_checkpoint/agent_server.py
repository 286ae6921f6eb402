"""Factories for the LangGraph Agent Server (langgraph-api; ``langgraph dev``).

Name them in ``langgraph.json``; the server enters each once and closes it at shutdown::

    "checkpointer": {"path": "redis_checkpoint.agent_server.checkpointer"},
    "store": {"path": "redis_checkpoint.agent_server.store"}

The server splits a module path at its last '.', so write ``module.attribute`` (not
``module:attribute``), or name a file: ``"./redis_backends.py:checkpointer"``. Both read the
REDIS_* settings (:meth:`Settings.from_env <redis_checkpoint.settings.Settings.from_env>`); the
store's vector index and default TTL come from :data:`STORE_ENV_VARS`, since the server hands a
custom store nothing of langgraph.json's ``store.index`` or ``store.ttl``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langgraph.store.base import IndexConfig, TTLConfig
from langgraph.store.base.embed import ensure_embeddings

from redis_checkpoint.checkpoint import AsyncRedisSaver
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.settings import Settings
from redis_checkpoint.store import AsyncRedisStore

__all__ = [
    "STORE_ENV_VARS",
    "checkpointer",
    "store",
    "store_index_from_env",
    "store_ttl_from_env",
]

# The store's own variables (the connection comes from REDIS_URL and the other REDIS_* ones).
STORE_ENV_VARS: dict[str, str] = {
    "REDIS_STORE_EMBED": (
        "the embeddings: 'provider:model' (LangChain's init_embeddings, e.g. "
        "'openai:text-embedding-3-small') or 'path/to/file.py:name' (an Embeddings object or a "
        "function from texts to vectors; relative to the working directory); unset: no index"
    ),
    "REDIS_STORE_DIMS": "the vectors' dimensions (required with REDIS_STORE_EMBED)",
    "REDIS_STORE_FIELDS": "comma-separated JSON paths of the value to embed (default '$')",
    "REDIS_STORE_TTL_MINUTES": "default lifetime of an item in minutes, refreshed on read",
}


@asynccontextmanager
async def checkpointer() -> AsyncIterator[AsyncRedisSaver]:
    """An :class:`AsyncRedisSaver` on REDIS_URL for the server's lifetime."""
    async with AsyncRedisSaver.from_conn_string(settings=Settings.from_env()) as saver:
        yield saver


@asynccontextmanager
async def store() -> AsyncIterator[AsyncRedisStore]:
    """An :class:`AsyncRedisStore` on REDIS_URL, indexed and with a TTL as REDIS_STORE_* say."""
    settings = Settings.from_env()
    ttl = store_ttl_from_env()
    # Loading a file of embeddings reads the disk: not on the event loop (langgraph dev's
    # blockbuster would raise).
    index = await asyncio.to_thread(store_index_from_env)
    async with AsyncRedisStore.from_conn_string(settings=settings, index=index, ttl=ttl) as found:
        yield found


def store_index_from_env(environ: Mapping[str, str] | None = None) -> IndexConfig | None:
    """The store's ``IndexConfig`` from REDIS_STORE_EMBED, _DIMS and _FIELDS; None without
    REDIS_STORE_EMBED. The embeddings are resolved here, so a bad value fails at startup."""
    env = os.environ if environ is None else environ
    embed = _get(env, "REDIS_STORE_EMBED")
    dims = _get(env, "REDIS_STORE_DIMS")
    fields = _get(env, "REDIS_STORE_FIELDS")
    if embed is None:
        for name, value in (("REDIS_STORE_DIMS", dims), ("REDIS_STORE_FIELDS", fields)):
            if value is not None:
                raise ConfigurationError(
                    f"{name}={value!r} is set but REDIS_STORE_EMBED is not: set it to the "
                    "embeddings ('provider:model' or 'path/to/file.py:name'), or unset "
                    f"{name}"
                )
        return None
    if dims is None:
        raise ConfigurationError(
            "REDIS_STORE_DIMS is not set: REDIS_STORE_EMBED needs the vectors' dimensions, "
            "e.g. REDIS_STORE_DIMS=1536 for openai:text-embedding-3-small"
        )
    return IndexConfig(
        dims=_positive_int("REDIS_STORE_DIMS", dims),
        embed=_embeddings(embed),
        fields=_embedded_fields(fields),
    )


def store_ttl_from_env(environ: Mapping[str, str] | None = None) -> TTLConfig | None:
    """The store's ``TTLConfig`` from REDIS_STORE_TTL_MINUTES (refreshed on read); None when it
    is unset, 0 or 'none' (items never expire)."""
    env = os.environ if environ is None else environ
    raw = _get(env, "REDIS_STORE_TTL_MINUTES")
    if raw is None or raw.lower() == "none":
        return None
    try:
        minutes = float(raw)
    except ValueError:
        minutes = math.nan
    if not math.isfinite(minutes) or minutes < 0:
        raise ConfigurationError(
            f"REDIS_STORE_TTL_MINUTES={raw!r} is not a TTL: expected minutes >= 0 (e.g. 1440 "
            "for a day), or 0/none for no expiry"
        )
    if minutes == 0:
        return None
    return TTLConfig(default_ttl=minutes, refresh_on_read=True)


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The stripped value of ``name``; None when unset or blank."""
    value = env.get(name, "").strip()
    return value or None


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(f"{name}={raw!r} is not a positive whole number, e.g. 1536")
    return value


def _embedded_fields(raw: str | None) -> list[str]:
    if raw is None:
        return ["$"]
    fields = [field.strip() for field in raw.split(",") if field.strip()]
    if not fields:
        raise ConfigurationError(
            f"REDIS_STORE_FIELDS={raw!r} names no field: expected comma-separated paths such as "
            "'text,summary', or '$' for the whole value"
        )
    return fields


def _embeddings(spec: str) -> Embeddings:
    """Resolve REDIS_STORE_EMBED: a 'file.py:name' path (the same rule as langgraph.json's
    ``embed``), else a 'provider:model' string for LangChain's init_embeddings."""
    label = f"REDIS_STORE_EMBED={spec!r}"
    if ".py:" in spec:
        return ensure_embeddings(_load_from_file(spec, label))
    provider, _, model = spec.partition(":")
    if not provider.strip() or not model.strip():
        raise ConfigurationError(
            f"{label} is neither 'provider:model' (e.g. 'openai:text-embedding-3-small') nor "
            "'path/to/file.py:name'"
        )
    try:
        return ensure_embeddings(spec)
    except (ImportError, ValueError) as exc:
        raise ConfigurationError(
            f"{label} could not be loaded ({exc}); 'provider:model' needs the langchain package "
            "and the provider's (e.g. langchain-openai)"
        ) from exc


def _load_from_file(spec: str, label: str) -> Any:
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise ConfigurationError(f"{label}: no file {str(path)!r}")
    # One module per file, under a name no import statement uses.
    module_name = f"_redis_store_embed_{abs(hash(str(path)))}"
    module = sys.modules.get(module_name)
    if module is None:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigurationError(f"{label}: {str(path)!r} is not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    value = getattr(module, name, None)
    if not isinstance(value, Embeddings) and not callable(value):
        raise ConfigurationError(
            f"{label}: {str(path)!r} has no Embeddings object or function named {name!r}"
        )
    return value
