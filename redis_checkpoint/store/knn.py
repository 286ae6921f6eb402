"""The store's vector search on a server with a search module (RediSearch, valkey-search).

Each item vector is also a hash of its own (written by the store's scripts, see scripts.py)
under one key prefix per dimension count and distance; a FLAT vector index over them answers
KNN on the server, exactly (no approximation). The index is found by asking for it
(``FT.INFO``), never with ``MODULE LIST``, which managed services refuse. Everything here is
pure: the core sends the commands and reads the replies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from redis_checkpoint.client import reply_text
from redis_checkpoint.store.layout import StoreLayout
from redis_checkpoint.store.search import DistanceType, Namespace

__all__ = ["KnnIndex", "has_no_search_module"]

_METRICS: Final[dict[DistanceType, str]] = {
    "cosine": "COSINE",
    "l2": "L2",
    "inner_product": "IP",
}


def has_no_search_module(error: BaseException) -> bool:
    """Whether an ``FT.*`` command failed because the server has no such command."""
    text = str(error).lower()
    return "unknown command" in text or "unknown subcommand" in text


@dataclass(frozen=True)
class KnnIndex:
    """The module's index over the item vectors of one store prefix, dims and distance."""

    layout: StoreLayout
    dims: int
    distance: DistanceType

    @property
    def name(self) -> str:
        return f"{self.layout.prefix}:st:knn:{self.distance}:{self.dims}"

    @property
    def doc_prefix(self) -> str:
        return f"{self.name}:"

    @property
    def width(self) -> int:
        """Bytes of one packed float32 vector."""
        return 4 * self.dims

    def info_command(self) -> tuple[Any, ...]:
        return ("FT.INFO", self.name)

    def create_command(self) -> tuple[Any, ...]:
        return (
            "FT.CREATE", self.name, "ON", "HASH", "PREFIX", 1, self.doc_prefix,
            "SCHEMA", "p", "TAG", "SEPARATOR", ",",
            "v", "VECTOR", "FLAT", 6, "TYPE", "FLOAT32", "DIM", self.dims,
            "DISTANCE_METRIC", _METRICS[self.distance],
        )  # fmt: skip

    def docs_base(self, namespace: Namespace) -> str:
        """Where a namespace's vector hashes start: ``<base><n>:<item key>``."""
        return f"{self.doc_prefix}{{{self.layout.tag(namespace)}}}:"

    @staticmethod
    def digest(prefix: Namespace) -> str:
        """A namespace prefix as a tag value: hex, so a query needs no escaping."""
        text = "\x1f".join(prefix).encode()
        return hashlib.blake2b(text, digest_size=10).hexdigest()

    def digests(self, namespace: Namespace) -> str:
        """The digests of every prefix of ``namespace`` (itself included), for the ``p`` tag."""
        return ",".join(self.digest(namespace[:n]) for n in range(1, len(namespace) + 1))

    def search_command(self, prefix: Namespace, vector: bytes, k: int) -> tuple[Any, ...]:
        """The ``k`` item vectors nearest ``vector`` under the namespace ``prefix``."""
        scope = f"@p:{{{self.digest(prefix)}}}" if prefix else "*"
        return (
            "FT.SEARCH", self.name, f"({scope})=>[KNN {k} @v $q]",
            "PARAMS", 2, "q", vector, "RETURN", 3, "n", "k", "v",
            "LIMIT", 0, k, "DIALECT", 2,
        )  # fmt: skip

    def parse(self, reply: Any) -> tuple[list[tuple[Namespace, str, bytes]], int]:
        """(namespace, item key, vector) of each hash an ``FT.SEARCH`` reply (RESP2 or RESP3)
        names, and how many it named: hashes that lack a field (deleted meanwhile) are left
        out of the first."""
        if isinstance(reply, dict):
            results: list[dict[Any, Any]] = reply.get(b"results") or reply.get("results") or []
            docs = [
                _text_keys(doc.get(b"extra_attributes") or doc.get("extra_attributes") or {})
                for doc in results
            ]
        else:
            docs = [
                {reply_text(f[j]): f[j + 1] for j in range(0, len(f) - 1, 2)} for f in reply[2::2]
            ]
        found = []
        namespaces: dict[bytes, Namespace] = {}
        for values in docs:
            if {"n", "k", "v"} <= values.keys() and len(values["v"]) == self.width:
                tag = values["n"]
                namespace = namespaces.get(tag)
                if namespace is None:
                    namespace = namespaces[tag] = self.layout.namespace(reply_text(tag))
                found.append((namespace, reply_text(values["k"]), bytes(values["v"])))
        return found, len(docs)


def _text_keys(fields: dict[Any, Any]) -> dict[str, Any]:
    return {reply_text(name): value for name, value in fields.items()}
