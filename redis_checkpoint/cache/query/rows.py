"""What the query cache keeps of a result: plain data the codec gives back exactly (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["is_empty", "plain_rows"]


def plain_rows(value: Any) -> Any:
    """Mappings as dicts and sequences of rows as lists of tuples: what the cache keeps exactly."""
    if isinstance(value, str):
        return str(value)  # a subclass (e.g. SQLAlchemy's quoted_name) becomes plain text
    if isinstance(value, (bytes, bytearray, int, float, bool)) or value is None:
        return bytes(value) if isinstance(value, bytearray) else value
    if isinstance(value, Mapping):
        return {key: plain_rows(item) for key, item in value.items()}
    if isinstance(value, tuple):
        # A SQLAlchemy Row is a tuple subclass: keep its values, lose the class.
        return tuple(plain_rows(item) for item in value)
    if isinstance(value, list):
        return [plain_rows(item) for item in value]
    mapping = getattr(value, "_mapping", None)  # SQLAlchemy Row
    if isinstance(mapping, Mapping):
        return tuple(plain_rows(item) for item in mapping.values())
    return value


def is_empty(value: Any) -> bool:
    """An empty result: ``None`` or an empty list, tuple or dict (negative caching's business)."""
    return value is None or (isinstance(value, (list, tuple, dict)) and not value)
