"""Where the store keeps a namespace: four keys under one hash tag, and a registry of namespaces.

A namespace such as ``("users", "alice")`` becomes the tag ``users:alice`` (each label
percent-encoded, so ``:``, ``{`` and ``}`` in a label cannot break out of it), and its keys are
``<prefix>:st:{users:alice}:i`` (a hash of item records), ``:v`` (a hash of packed vectors),
``:e`` (a sorted set of item expiries) and ``:n`` (the namespace's version, bumped by every
write). All four share the tag, so each operation on a namespace is one script on one node of a
cluster. The registry ``<prefix>:st:namespaces`` (a sorted set of tags, scored by the latest
expiry of the namespace's items, ``+inf`` for items that never expire) is what ``search`` and
``list_namespaces`` start from.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = ["NamespaceKeys", "StoreLayout"]


@dataclass(frozen=True)
class NamespaceKeys:
    """The four keys of one namespace, in the order the scripts take them."""

    items: str
    vectors: str
    expiries: str
    version: str

    def all(self) -> tuple[str, str, str, str]:
        return (self.items, self.vectors, self.expiries, self.version)


class StoreLayout:
    """The store's key names under one prefix."""

    def __init__(self, prefix: str = "rc") -> None:
        self.prefix = prefix
        self.registry = f"{prefix}:st:namespaces"

    @staticmethod
    def tag(namespace: tuple[str, ...]) -> str:
        return ":".join(quote(label, safe="") for label in namespace)

    @staticmethod
    def namespace(tag: str) -> tuple[str, ...]:
        return tuple(unquote(label) for label in tag.split(":"))

    def keys(self, namespace: tuple[str, ...]) -> NamespaceKeys:
        base = f"{self.prefix}:st:{{{self.tag(namespace)}}}"
        return NamespaceKeys(f"{base}:i", f"{base}:v", f"{base}:e", f"{base}:n")
