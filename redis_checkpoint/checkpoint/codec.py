"""Byte formats of checkpoint records, channel blobs and writes (pure functions, no I/O).

Records are msgpack arrays in the old "raw" string format, because the Lua scripts read them with
Redis's built-in ``cmsgpack``, which does not understand msgpack's bin types:

    record = [2, parent_id, checkpoint_type, checkpoint_bytes, metadata_type, metadata_bytes,
              [channel, version, inline, ...], {metadata key: canonical JSON or "?"}]

The checkpoint itself is stored without ``id`` and ``channel_versions``: the member names the id
and the channel/version triples (which the scripts need to find the blobs) give the versions
back. Small values (None, numbers, short strings) and emptied channels are ``inline`` blobs in the
record, which costs less than a hash field of their own; others are b"" there and live in blobs.
A checkpoint's pending writes are one msgpack map ``{task S idx: [channel, type, bytes, path]}``.

A blob is one of

    b"V" <len(type)> <type> <serialized value>     a whole value
    b"Z" <len(type)> <type> <zlib(serialized)>     the same, compressed
    b"E"                                           the channel was emptied at this version
    b"L" <u16 len(base)> <base field> <u32 count of base items> <flag> msgpack([type, bytes, ...])

Payloads of 256 bytes or more are zlib-compressed (level 1) when that saves at least an eighth:
message text compresses about 2-3x, and every turn's messages are stored in a write and a blob.

``L`` blobs store a list channel (a message history) as the items appended since an earlier
version of the same list (its *base*): a conversation then costs what each turn adds, not the whole
history again at every step.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import msgpack

from redis_checkpoint.checkpoint.keys import SEP, escape, unescape
from redis_checkpoint.errors import CorruptEntryError

RECORD_FORMAT = 2
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
    # Fast paths for what metadata mostly holds (step numbers, sources, run ids).
    if value is None or value is True or value is False:
        return b"null" if value is None else (b"1" if value else b"0")
    if type(value) is int:
        return str(value).encode()
    if type(value) is str:
        return json.dumps(value, ensure_ascii=False).encode()
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
    versions: list[bytes],
) -> bytes:
    filters = {key.encode(): canonical(value) for key, value in metadata_value.items()}
    compressed, payload = squeeze(checkpoint[1])
    return pack(
        [
            RECORD_FORMAT,
            escape(parent_id) if parent_id is not None else None,
            # \x01 before the type marks a zlib-compressed checkpoint
            (b"\x01" if compressed else b"") + checkpoint[0].encode(),
            payload,
            metadata[0].encode(),
            metadata[1],
            versions,
            filters,
        ]
    )


class Record:
    """A decoded checkpoint record (values still serialized)."""

    __slots__ = ("checkpoint", "metadata", "parent_id", "versions")

    versions: list[tuple[bytes, bytes, bytes]]  # (escaped channel, version token, inline blob)

    def __init__(self, raw: bytes, where: str) -> None:
        try:
            fields = unpack(raw)
            if not isinstance(fields, list) or fields[0] != RECORD_FORMAT:
                raise ValueError("unknown record format")
            self.parent_id: str | None = unescape(fields[1]) if fields[1] is not None else None
            kind, payload = fields[2], fields[3]
            if kind[:1] == b"\x01":
                kind, payload = kind[1:], zlib.decompress(payload)
            self.checkpoint = (text(kind), payload)
            self.metadata = (text(fields[4]), fields[5])
            flat = fields[6]
            self.versions = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
        except Exception as exc:
            raise CorruptEntryError(where, f"checkpoint record is unreadable ({exc})") from exc

    def blob_fields(self, ns: bytes) -> list[tuple[bytes, bytes]]:
        """(escaped channel, blob field) of every channel version this checkpoint holds."""
        head = b"b" + SEP + ns + SEP
        return [
            (channel, head + channel + SEP + token)
            for channel, token, inline in self.versions
            if not inline
        ]


# -- blobs --------------------------------------------------------------------------------------


def is_small(value: Any) -> bool:
    """Values stored inline in the checkpoint record (decided by type, without serializing)."""
    if value is None or isinstance(value, (bool, float)):
        return True
    if isinstance(value, int):
        return -(2**53) < value < 2**53
    return isinstance(value, (str, bytes)) and len(value) <= 48


COMPRESS_FROM = 256


def squeeze(payload: bytes) -> tuple[bool, bytes]:
    """(compressed?, bytes): zlib only where it pays."""
    if len(payload) >= COMPRESS_FROM:
        packed = zlib.compress(payload, 1)
        if len(packed) <= len(payload) - len(payload) // 8:
            return True, packed
    return False, payload


def encode_value(typed: tuple[str, bytes]) -> bytes:
    kind = typed[0].encode()
    compressed, payload = squeeze(typed[1])
    return (b"Z" if compressed else b"V") + bytes([len(kind)]) + kind + payload


def encode_list(base: bytes | None, base_count: int, items: list[bytes]) -> bytes:
    """A list blob: the msgpack encodings of the items appended since ``base``."""
    base = base or b""
    compressed, payload = squeeze(pack(items))
    head = b"L" + _LIST_HEAD.pack(len(base)) + base + _LIST_COUNT.pack(base_count)
    return head + (b"z" if compressed else b"-") + payload


def list_base(blob: bytes) -> bytes | None:
    if blob[:1] != b"L":
        return None
    (size,) = _LIST_HEAD.unpack_from(blob, 1)
    return blob[3 : 3 + size] if size else None


def msgpack_list(items: list[bytes]) -> bytes:
    """The msgpack encoding of a list, from its items' encodings (a header, then the items)."""
    n = len(items)
    if n < 16:
        head = bytes([0x90 | n])
    elif n < 0x10000:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(items)


class _Missing:
    pass


MISSING: Any = _Missing()


class Blobs:
    """The blobs one reply brought, plus lists this process already knows by field.

    Blob fields never change once written, so a list chain resolved once (here, or from
    ``known``) is reused: a reply only carries what is newer than what the client knows.
    """

    def __init__(
        self,
        fetched: Mapping[bytes, bytes | None],
        where: str,
        known: Mapping[bytes, list[bytes]] | None = None,
    ) -> None:
        self.fetched = fetched
        self.where = where
        # field -> (items, n): the list is the first n items. A chain's fields share one list,
        # so resolving a long history costs its length, not its length squared.
        self.lists: dict[bytes, tuple[list[bytes], int]] = {
            name: (items, len(items)) for name, items in (known or {}).items()
        }

    def __contains__(self, field: bytes) -> bool:
        return field in self.lists or bool(self.fetched.get(field))

    def list_of(self, field: bytes) -> list[bytes]:
        items, n = self.lists[field]
        return items if n == len(items) else items[:n]

    def value(self, field: bytes, loads: Any) -> Any:
        """The value a blob field stands for; ``MISSING`` when absent or emptied."""
        if field in self.lists:
            return loads(("msgpack", msgpack_list(self.list_of(field))))
        blob = self.fetched.get(field)
        if not blob:
            return MISSING
        try:
            kind = blob[:1]
            if kind == b"E":
                return MISSING
            if kind in (b"V", b"Z"):
                size = blob[1]
                payload = blob[2 + size :]
                if kind == b"Z":
                    payload = zlib.decompress(payload)
                return loads((blob[2 : 2 + size].decode(), payload))
            if kind == b"L":
                return loads(("msgpack", msgpack_list(self.items(field))))
            raise ValueError(f"unknown blob kind {kind!r}")
        except CorruptEntryError:
            raise
        except Exception as exc:
            raise CorruptEntryError(
                f"{self.where} field {field!r}", f"blob is unreadable ({exc})"
            ) from exc

    def items(self, field: bytes) -> list[bytes]:
        """The items of a list blob, following its chain of bases back to a known list."""
        chain: list[tuple[bytes, int, list[bytes]]] = []
        seen: set[bytes] = set()
        current: bytes | None = field
        while current is not None and current not in self.lists:
            blob = self.fetched.get(current)
            if not blob or blob[:1] != b"L" or current in seen:
                raise CorruptEntryError(
                    f"{self.where} field {current!r}", "a list blob's base is missing"
                )
            seen.add(current)
            (size,) = _LIST_HEAD.unpack_from(blob, 1)
            (count,) = _LIST_COUNT.unpack_from(blob, 3 + size)
            payload = blob[8 + size :]
            if blob[7 + size : 8 + size] == b"z":
                payload = zlib.decompress(payload)
            chain.append((current, count, [bytes(item) for item in unpack(payload)]))
            current = blob[3 : 3 + size] if size else None
        items = list(self.list_of(current)) if current is not None else []
        for name, count, segment in reversed(chain):
            if count != len(items):
                raise CorruptEntryError(f"{self.where} field {name!r}", "list lengths disagree")
            items.extend(segment)
            self.lists[name] = (items, len(items))
        return items


# -- writes -------------------------------------------------------------------------------------


def encode_write(channel: str, typed: tuple[str, bytes], task_path: str) -> bytes:
    compressed, payload = squeeze(typed[1])
    return pack([channel.encode(), typed[0].encode(), payload, task_path.encode(), compressed])


def decode_writes(
    raw: bytes | None, where: str
) -> list[tuple[tuple[str, str, int], str, tuple[str, bytes]]]:
    """A checkpoint's writes as (writes_sort_key, channel, typed value), in that order."""
    if not raw:
        return []
    try:
        rows = []
        for key, value in unpack(raw).items():
            task_id, idx = key.rsplit(SEP, 1)
            channel, kind, payload, task_path, compressed = unpack(value)
            if compressed:
                payload = zlib.decompress(payload)
            rows.append(
                (
                    (text(task_path), unescape(task_id), int(idx)),
                    text(channel),
                    (text(kind), bytes(payload)),
                )
            )
    except Exception as exc:
        raise CorruptEntryError(where, f"pending writes are unreadable ({exc})") from exc
    rows.sort(key=lambda row: row[0])
    return rows
