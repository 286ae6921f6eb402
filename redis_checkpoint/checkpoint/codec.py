"""Byte formats of checkpoint records, channel blobs and writes (pure functions, no I/O).

Records are msgpack arrays in the old "raw" string format, because the Lua scripts read them with
Redis's built-in ``cmsgpack``, which does not understand msgpack's bin types:

    record = [1, parent_id, checkpoint_type, checkpoint_bytes, metadata_type, metadata_bytes,
              [blob field, ...], {metadata key: canonical JSON or "?"}]

A blob is one of

    b"V" <len(type)> <type> <serialized value>     a whole value
    b"E"                                           the channel was emptied at this version
    b"L" <u16 len(base)> <base field> <u32 count of base items> msgpack([type, bytes, ...])

``L`` blobs store a list channel (a message history) as the items appended since an earlier
version of the same list (its *base*): a conversation then costs what each turn adds, not the whole
history again at every step.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

from redis_checkpoint.checkpoint.keys import escape, unescape
from redis_checkpoint.errors import CorruptEntryError

RECORD_FORMAT = 1
UNKNOWN = b"?"
EMPTY_BLOB = b"E"
_LIST_HEAD = struct.Struct(">H")
_LIST_COUNT = struct.Struct(">I")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=False)  # type: ignore[no-any-return]


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=True, strict_map_key=False)


def text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogatepass") if isinstance(raw, bytes) else raw


# -- metadata filters -------------------------------------------------------------------------


def _normal(value: Any) -> Any:
    # Python equality: True == 1 == 1.0, so compare them in one spelling.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _normal(v) for k, v in value.items()}
    raise TypeError("not canonical")


def canonical(value: Any) -> bytes:
    """A spelling of a metadata value that two equal values share; ``UNKNOWN`` when none exists.

    Lua compares these to pre-filter ``list(filter=...)`` on the server; the client then checks the
    survivors with Python equality, so ``UNKNOWN`` only costs precision, never correctness.
    """
    try:
        return json.dumps(
            _normal(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (TypeError, ValueError):
        return UNKNOWN


def filter_args(filter: Mapping[str, Any] | None) -> list[bytes]:
    out: list[bytes] = []
    for key, value in (filter or {}).items():
        out += [key.encode(), canonical(value)]
    return out


def metadata_matches(metadata: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    return all(value == metadata.get(key) for key, value in (filter or {}).items())


# -- records ------------------------------------------------------------------------------------


def encode_record(
    *,
    parent_id: str | None,
    checkpoint: tuple[str, bytes],
    metadata: tuple[str, bytes],
    metadata_value: Mapping[str, Any],
    blob_fields: list[bytes],
) -> bytes:
    filters = {key.encode(): canonical(value) for key, value in metadata_value.items()}
    return pack(
        [
            RECORD_FORMAT,
            escape(parent_id) if parent_id is not None else None,
            checkpoint[0].encode(),
            checkpoint[1],
            metadata[0].encode(),
            metadata[1],
            blob_fields,
            filters,
        ]
    )


class Record:
    """A decoded checkpoint record (values still serialized)."""

    __slots__ = ("blob_fields", "checkpoint", "metadata", "parent_id")

    def __init__(self, raw: bytes, where: str) -> None:
        try:
            fields = unpack(raw)
            if not isinstance(fields, list) or fields[0] != RECORD_FORMAT:
                raise ValueError("unknown record format")
            self.parent_id: str | None = unescape(fields[1]) if fields[1] is not None else None
            self.checkpoint = (text(fields[2]), fields[3])
            self.metadata = (text(fields[4]), fields[5])
            self.blob_fields: list[bytes] = list(fields[6])
        except Exception as exc:
            raise CorruptEntryError(where, f"checkpoint record is unreadable ({exc})") from exc


# -- blobs --------------------------------------------------------------------------------------


def encode_value(typed: tuple[str, bytes]) -> bytes:
    kind = typed[0].encode()
    return b"V" + bytes([len(kind)]) + kind + typed[1]


def encode_list(base: bytes | None, base_count: int, items: Iterable[tuple[str, bytes]]) -> bytes:
    base = base or b""
    flat: list[Any] = []
    for kind, payload in items:
        flat += [kind, payload]
    return (
        b"L" + _LIST_HEAD.pack(len(base)) + base + _LIST_COUNT.pack(base_count) + pack(flat)
    )


def list_base(blob: bytes) -> bytes | None:
    if blob[:1] != b"L":
        return None
    (size,) = _LIST_HEAD.unpack_from(blob, 1)
    return blob[3 : 3 + size] if size else None


class _Missing:
    pass


MISSING: Any = _Missing()


def decode_blob(
    field: bytes, blobs: Mapping[bytes, bytes | None], loads: Any, where: str
) -> Any:
    """The value a blob field stands for, resolving list chains; ``MISSING`` when absent/empty."""
    blob = blobs.get(field)
    if not blob:
        return MISSING
    try:
        kind = blob[:1]
        if kind == b"E":
            return MISSING
        if kind == b"V":
            size = blob[1]
            return loads((blob[2 : 2 + size].decode(), blob[2 + size :]))
        if kind == b"L":
            return [loads(item) for item in list_items(field, blobs, where)]
        raise ValueError(f"unknown blob kind {kind!r}")
    except CorruptEntryError:
        raise
    except Exception as exc:
        raise CorruptEntryError(f"{where} field {field!r}", f"blob is unreadable ({exc})") from exc


def list_items_raw(field: bytes, blobs: Mapping[bytes, bytes | None], where: str) -> list[bytes]:
    return [payload for _, payload in list_items(field, blobs, where)]


def list_items(
    field: bytes, blobs: Mapping[bytes, bytes | None], where: str
) -> list[tuple[str, bytes]]:
    """The (type, bytes) items of a list blob, following its chain of bases."""
    segments: list[list[tuple[str, bytes]]] = []
    expected: list[int] = []
    current: bytes | None = field
    seen: set[bytes] = set()
    while current is not None:
        blob = blobs.get(current)
        if not blob or blob[:1] != b"L" or current in seen:
            raise CorruptEntryError(
                f"{where} field {current!r}", "a list blob's base is missing or not a list"
            )
        seen.add(current)
        (size,) = _LIST_HEAD.unpack_from(blob, 1)
        (count,) = _LIST_COUNT.unpack_from(blob, 3 + size)
        flat = unpack(blob[7 + size :])
        segments.append([(text(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)])
        expected.append(count)
        current = blob[3 : 3 + size] if size else None
    items: list[tuple[str, bytes]] = []
    for count, segment in zip(reversed(expected), reversed(segments)):
        if count != len(items):
            raise CorruptEntryError(f"{where} field {field!r}", "list chain lengths disagree")
        items += segment
    return items


# -- writes -------------------------------------------------------------------------------------


def encode_write(task_id: str, channel: str, typed: tuple[str, bytes], task_path: str) -> bytes:
    return pack([task_id.encode(), channel.encode(), typed[0].encode(), typed[1], task_path.encode()])


def decode_write(raw: bytes, where: str) -> tuple[str, str, tuple[str, bytes], str]:
    try:
        task_id, channel, kind, payload, task_path = unpack(raw)
        return text(task_id), text(channel), (text(kind), payload), text(task_path)
    except Exception as exc:
        raise CorruptEntryError(where, f"pending write is unreadable ({exc})") from exc
