"""Byte formats of checkpoint records, channel blobs and writes (pure functions, no I/O).

Records are msgpack arrays in the old "raw" string format, because the Lua scripts read them with
Redis's built-in ``cmsgpack``, which does not understand msgpack's bin types:

    record = [4, parent_id, encoding, squeeze(msgpack([checkpoint_type, checkpoint_bytes, hidden])),
              metadata_type, metadata_bytes, [channel, version, ...],
              {metadata key: canonical JSON or "?"}, depth (keyed records only)]

A keyed record (encoding ``KEYED``) is deflated with ``ZDICT`` plus the payload of its keyframe,
the record ``depth`` parents up its chain (a record stored alone): consecutive checkpoints repeat
most of each other's channel versions and names, so it costs about half. Readers get the keyframe
from the same script call; the collector keeps a pruned checkpoint's record while a kept one was
compressed against it (out of the index, so it is neither listed nor found by id).

The checkpoint itself is stored without ``id`` and ``channel_versions``: the member names the id
and the channels give the versions back. The scripts see only what they need: the (channel,
version) pairs of the channels whose value lives in a blob (field ``b`` S ns S channel S version).
Every other channel (a small inline value such as None, a number or a short string, or ``E``:
emptied at this version) is a (channel, version, inline) triple in ``hidden``, compressed together
with the checkpoint, whose ``versions_seen`` repeats the same names and tokens; ``hidden`` keeps
the channels' order, naming a blob channel by its index among the pairs. Records of earlier
versions still read: format 3 shows every channel as a triple with a marker (``E``, or ``I`` for an
inline value), format 2 shows all triples whole.
Metadata is stored once: when the filters' canonical JSON gives it back exactly (the usual
``{"source": ..., "step": ..., "parents": {}}``), its type is ``=`` and its bytes are empty.
A checkpoint's pending writes are the frames its ``put_writes`` calls appended, one per call:

    b"W" <u32 length> msgpack([task_id, task_path, idx, channel, type, bytes, ...])
    b"X" <u32 length> deflate(the same msgpack)

A batch is compressed as one piece, so its task id, channel names and framing cost little; the
scripts only append, and the client applies InMemorySaver's rule when it reads them: a write with
an index >= 0 keeps its first value, a special one (error, interrupt; index < 0) its last. Earlier
versions stored one msgpack map ``{task S idx: [channel, type, bytes, path, encoding]}``; the
first append to such a field keeps it as the frame b"M" <u32 length> <map>.

A blob is one of

    b"V" <len(type)> <type> <serialized value>     a whole value
    b"D" <len(type)> <type> <deflate(serialized)>  the same, compressed
    b"E"                                           the channel was emptied at this version
    b"L" <u16 len(base)> <base field> <u32 count of base items> <flag> msgpack([type, bytes, ...])
    b"R" <u16 len(base)> <base field> <u32 count of base items>
         <u16 len(writes field)> <writes field> <u8 n> n x (<SHA-1 of a frame: 16 hex> <u16 i>)

Payloads of 64 bytes or more are compressed when that saves at least an eighth: raw deflate at
level 1, primed with ``ZDICT``, the framing every serialized message and checkpoint repeats (class
paths, field names). Without it a short message gains little (its framing is new to zlib each
time); with it a record's checkpoint shrinks ~2.5x and a message ~20% more than plain zlib. Data
written by earlier versions (``Z`` blobs, plain zlib) still reads.

``L`` blobs store a list channel (a message history) as the items appended since an earlier
version of the same list (its *base*): a conversation then costs what each turn adds, not the whole
history again at every step. Those items are usually what the step's tasks wrote: the new
AIMessage is already stored once as a pending write of the parent checkpoint. An ``R`` blob then
stores no items but refers to those writes (the i-th write of the frame with that digest, in the
parent's writes field); the put script checks the frames are there, and the collector keeps a
writes field alive while a kept list refers to it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgpack

from redis_checkpoint.checkpoint.keys import SEP, escape_part, field_token, unescape_part
from redis_checkpoint.errors import CorruptEntryError

RECORD_FORMAT = 4
FILTERS_ARE_METADATA = b"="  # a record's metadata type when its filters spell the metadata
RECORD_FORMATS = (2, 3, 4)  # what the scripts and Record read
UNKNOWN = b"?"
EMPTY_BLOB = b"E"
_LIST_HEAD = struct.Struct(">H")
_LIST_COUNT = struct.Struct(">I")
_LIST_FLAGS = {0: b"-", 1: b"z", 2: b"d"}  # payload encoding of a list blob
_LIST_ENCODINGS = {flag: encoding for encoding, flag in _LIST_FLAGS.items()}


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


_json_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


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
    if type(value) is str:  # json.dumps(value, ensure_ascii=False) without building an encoder
        return _json_string(value).encode("utf-8", "surrogatepass")
    try:
        return json.dumps(
            _normal(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return UNKNOWN


def metadata_in_filters(metadata: Mapping[str, Any]) -> bool:
    """True when decoding the filters' canonical JSON gives ``metadata`` back exactly: strings,
    ints, None, lists and key-sorted dicts (no bools or floats, which canonical spelling folds)."""
    return all(type(key) is str and _json_exact(value) for key, value in metadata.items())


def _json_exact(value: Any) -> bool:
    if value is None or type(value) is int:
        return True
    if type(value) is str:
        return value.isascii() or _utf8(value)
    if type(value) is list:
        return all(_json_exact(item) for item in value)
    if type(value) is dict:
        keys = list(value)
        return (
            all(type(key) is str for key in keys)
            and keys == sorted(keys)
            and all(_json_exact(item) for item in value.values())
        )
    return False


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate: keep the serializer's own spelling
        return False
    return True


def filter_args(filter: Mapping[str, Any] | None) -> list[bytes]:
    out: list[bytes] = []
    for key, value in (filter or {}).items():
        out += [key.encode(), canonical(value)]
    return out


def metadata_matches(metadata: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    return all(value == metadata.get(key) for key, value in (filter or {}).items())


# -- records ------------------------------------------------------------------------------------


class Keyframe(NamedTuple):
    """The record a new record is compressed against: ``depth`` parents up its chain."""

    depth: int
    member: bytes
    payload: bytes  # its uncompressed payload


def encode_record(
    *,
    parent_id: str | None,
    checkpoint: tuple[str, bytes],
    metadata: tuple[str, bytes] | None,
    metadata_value: Mapping[str, Any],
    versions: list[bytes],
    keyframe: Keyframe | None = None,
) -> tuple[bytes, bytes]:
    """(record, its uncompressed payload). ``versions``: flat (escaped channel, version token,
    inline) triples, inline b"" for a channel whose value is in a blob. ``metadata`` None: the
    filters spell it exactly (see :func:`metadata_in_filters`), so it is not stored twice.
    With ``keyframe`` the payload is deflated against the keyframe's (see ``KEYED``)."""
    filters = {key.encode(): canonical(value) for key, value in metadata_value.items()}
    shown: list[bytes] = []
    hidden: list[bytes | int] = []
    for i in range(0, len(versions), 3):
        channel, token, inline = versions[i], versions[i + 1], versions[i + 2]
        if inline:
            hidden += [channel, token, inline]
        else:
            hidden.append(len(shown) // 2)
            shown += [channel, token]
    raw_payload = pack([checkpoint[0].encode(), checkpoint[1], hidden])
    if keyframe is not None:
        encoding, payload = KEYED, _deflate(raw_payload, ZDICT + keyframe.payload[-_KEYFRAME_TAIL:])
    else:
        encoding, payload = squeeze(raw_payload)
    if metadata is None:
        md_head, md_payload = FILTERS_ARE_METADATA, b""
    else:
        md_encoding, md_payload = squeeze(metadata[1])
        md_head = _typed_head(md_encoding, metadata[0])
    fields = [
        RECORD_FORMAT,
        escape_part(parent_id) if parent_id is not None else None,
        encoding,
        payload,
        md_head,
        md_payload,
        shown,
        filters,
    ]
    if keyframe is not None:
        fields.append(keyframe.depth)
    return pack(fields), raw_payload


def record_run_id(raw: bytes) -> str | None:
    """The ``run_id`` (a string) a record's metadata names, without decoding the rest; None
    when it names none or the record is unreadable (the scripts report that one)."""
    try:
        spelled = unpack(raw)[7].get(b"run_id")
        run_id = json.loads(spelled) if spelled else None
    except Exception:
        return None
    return run_id if type(run_id) is str else None


def with_metadata(
    raw: bytes,
    loads: Callable[[tuple[str, bytes]], Any],
    dumps: Callable[[Any], tuple[str, bytes]],
    change: Callable[[dict[str, Any]], dict[str, Any]],
) -> bytes:
    """A record with its metadata replaced by ``change(metadata)``; the checkpoint payload (and
    the keyframe it may be compressed against) untouched."""
    fields = unpack(raw)
    if fields[4] == FILTERS_ARE_METADATA:
        metadata = {text(k): json.loads(v) for k, v in fields[7].items()}
    else:
        metadata = dict(loads(_typed(fields[4], fields[5])))
    metadata = change(metadata)
    fields[7] = {key.encode(): canonical(value) for key, value in metadata.items()}
    if metadata_in_filters(metadata):
        fields[4], fields[5] = FILTERS_ARE_METADATA, b""
    else:
        kind, payload = dumps(metadata)
        encoding, fields[5] = squeeze(payload)
        fields[4] = _typed_head(encoding, kind)
    return pack(fields)


def _typed_head(encoding: int, kind: str) -> bytes:
    # A serializer's type names are printable: a leading \x01/\x02 byte marks compression.
    return (bytes([encoding]) if encoding else b"") + kind.encode()


def _typed(head: bytes, payload: bytes) -> tuple[str, bytes]:
    if head[:1] in (b"\x01", b"\x02"):
        return text(head[1:]), unsqueeze(head[0], payload)
    return text(head), payload


def record_depth(fields: list[Any]) -> int:
    """How many parents up a record's keyframe is (0: the record is stored alone)."""
    return int(fields[8]) if fields[0] >= 4 and len(fields) > 8 else 0


def record_payload(fields: list[Any], keyframe: bytes | None) -> bytes:
    """The uncompressed payload of a format-4 record (``fields`` unpacked); a keyed one needs
    its keyframe's raw record."""
    if fields[2] != KEYED:
        return unsqueeze(fields[2], fields[3])
    if keyframe is None:
        raise ValueError("the record's keyframe is missing")
    base = record_payload(unpack(keyframe), None)
    return _inflate(fields[3], ZDICT + base[-_KEYFRAME_TAIL:])


def shown_blobs(fields: list[Any]) -> list[tuple[bytes, bytes]]:
    """The (channel, version) pairs a record shows the scripts for its blob channels (the
    memory tier's twin of the scripts' ``blob_pairs``)."""
    flat = fields[6]
    if fields[0] >= 4:
        return [(flat[i], field_token(flat[i + 1])) for i in range(0, len(flat), 2)]
    return [(flat[i], field_token(flat[i + 1])) for i in range(0, len(flat), 3) if not flat[i + 2]]


class Record:
    """A decoded checkpoint record (values still serialized)."""

    __slots__ = (
        "checkpoint",
        "metadata",
        "metadata_value",
        "parent_id",
        "versions",
    )

    metadata: tuple[str, bytes] | None  # None: read ``metadata_value`` instead

    versions: list[tuple[bytes, bytes, bytes]]  # (escaped channel, version token, inline blob)

    def __init__(self, raw: bytes, where: str, keyframe: bytes | None = None) -> None:
        """``keyframe``: the raw record a keyed record was compressed against."""
        try:
            fields = unpack(raw)
            if not isinstance(fields, list) or fields[0] not in RECORD_FORMATS:
                raise ValueError("unknown record format")
            self.parent_id: str | None = unescape_part(fields[1]) if fields[1] is not None else None
            if fields[4] == FILTERS_ARE_METADATA:
                self.metadata = None
                self.metadata_value = {text(k): json.loads(v) for k, v in fields[7].items()}
            else:
                self.metadata = _typed(fields[4], fields[5])
            flat = fields[6]
            if fields[0] == 2:
                self.checkpoint = _typed(fields[2], fields[3])
                self.versions = [
                    (flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)
                ]
            elif fields[0] == 3:
                kind, payload, hidden = unpack(unsqueeze(fields[2], fields[3]))
                self.checkpoint = (text(kind), bytes(payload))
                pairs = iter(hidden)
                self.versions = [
                    (flat[i], flat[i + 1], b"")
                    if not flat[i + 2]
                    else (flat[i], next(pairs), next(pairs))
                    for i in range(0, len(flat), 3)
                ]
            else:
                kind, payload, hidden = unpack(record_payload(fields, keyframe))
                self.checkpoint = (text(kind), bytes(payload))
                self.versions = []
                items = iter(hidden)
                for item in items:
                    if type(item) is int:
                        self.versions.append((flat[2 * item], flat[2 * item + 1], b""))
                    else:
                        self.versions.append((item, next(items), next(items)))
        except Exception as exc:
            raise CorruptEntryError(where, f"checkpoint record is unreadable ({exc})") from exc

    def blob_fields(self, ns: bytes) -> list[tuple[bytes, bytes]]:
        """(escaped channel, blob field) of every channel version this checkpoint holds."""
        head = b"b" + SEP + ns + SEP
        return [
            (channel, head + channel + SEP + field_token(token))
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


COMPRESS_FROM = 64

# Payload encodings (a flag byte or value beside each payload says which).
RAW, ZLIB, DEFLATE = 0, 1, 2  # ZLIB: written by earlier versions, read only
# A record's payload deflated with ZDICT plus its keyframe's payload (the end of it that fits an
# 8 KB window): consecutive checkpoints repeat most of each other's channel versions and names.
KEYED = 3
KEYFRAME_EVERY = 4  # a keyed record's keyframe is at most 3 parents up
_KEYFRAME_TAIL = 6 * 1024

# Stored data depends on these exact bytes: never change them (a new dictionary needs a new flag).
ZDICT = (
    b" the and that with for you this are not have from your what can will they which would"
    b" there their about when use should more into also than then them been only some could"
    b" other \xc7\x88\x05\x94\xbelangchain_core.messages.system\xadSystemMessage\x86\xa7con"
    b"tent\xa0\xb1additional_kwargs\x80\xb1response_metadata\x80\xa4type\xa6system\xa4name"
    b"\xc0\xa2id\xa0\xb3model_validate_json\xc7\xa9\x05\x94\xbclangchain_core.messages.tool"
    b"\xabToolMessage\x89\xa7content\xa0\xb1additional_kwargs\x80\xb1response_metadata\x80"
    b"\xa4type\xa4tool\xa4name\xc0\xa2id\xa0\xactool_call_id\xa0\xa8artifact\xc0\xa6status"
    b"\xa7success\xb3model_validate_json\xc8\x01\x16\x05\x94\xbalangchain_core.messages.ai"
    b"\xa9AIMessage\x89\xa7content\xa0\xb1additional_kwargs\x80\xb1response_metadata\x82"
    b"\xaamodel_name\xa0\xadfinish_reason\xa4stop\xa4type\xa2ai\xa4name\xc0\xa2id\xa0\xaato"
    b"ol_calls\x91\x84\xa4name\xa0\xa4args\x80\xa2id\xa0\xa4type\xa9tool_call\xb2invalid_to"
    b"ol_calls\x90\xaeusage_metadata\x83\xacinput_tokens\x00\xadoutput_tokens\x00\xactotal_"
    b"tokens\x00\xb3model_validate_json\x84\xa6source\xa5input\xa4step\xff\xa7parents\x80"
    b"\xa6run_id\xa0\x84\xa1v\x04\xa2ts\xd9 2026-01-01T00:00:00.000000+00:00\xadversions_se"
    b"en\x83\xa9__input__\x80\xa9__start__\x81\xa9__start__\xa0\xa0\x81\xaabranch:to:\xa0"
    b"\xb0updated_channels\x93\xaabranch:to:\xa8messages\xa9__start__\x83\xa6source\xa4loop"
    b"\xa4step\x01\xa7parents\x80\xc7\x85\x05\x94\xbdlangchain_core.messages.human\xacHuman"
    b"Message\x86\xa7content\xa0\xb1additional_kwargs\x80\xb1response_metadata\x80\xa4type"
    b"\xa5human\xa4name\xc0\xa2id\xa0\xb3model_validate_json\xc7\xac\x05\x94\xbalangchain_c"
    b"ore.messages.ai\xa9AIMessage\x89\xa7content\xa0\xb1additional_kwargs\x80\xb1response_"
    b"metadata\x80\xa4type\xa2ai\xa4name\xc0\xa2id\xa0\xaatool_calls\x90\xb2invalid_tool_ca"
    b"lls\x90\xaeusage_metadata\xc0\xb3model_validate_json"
)


def squeeze(payload: bytes) -> tuple[int, bytes]:
    """(encoding, bytes): deflate with ``ZDICT`` only where it pays."""
    if len(payload) >= COMPRESS_FROM:
        packed = _deflate(payload, ZDICT)
        if len(packed) <= len(payload) - len(payload) // 8:
            return DEFLATE, packed
    return RAW, payload


def _deflate(payload: bytes, zdict: bytes) -> bytes:
    # Payloads are small: an 8 KB window holds the dictionary and the payload, and the smaller
    # state (memLevel 6) is cheaper to set up on every call.
    deflate = zlib.compressobj(1, zlib.DEFLATED, -13, 6, zlib.Z_DEFAULT_STRATEGY, zdict)
    return deflate.compress(payload) + deflate.flush()


def _inflate(payload: bytes, zdict: bytes) -> bytes:
    inflate = zlib.decompressobj(-15, zdict)
    out = inflate.decompress(payload)
    if not inflate.eof or inflate.unused_data:
        raise ValueError("truncated or padded compressed payload")
    return out


def unsqueeze(encoding: int, payload: bytes) -> bytes:
    if encoding == RAW:
        return payload
    if encoding == DEFLATE:
        return _inflate(payload, ZDICT)
    if encoding == ZLIB:
        return zlib.decompress(payload)
    raise ValueError(f"unknown payload encoding {encoding!r}")


def encode_value(typed: tuple[str, bytes]) -> bytes:
    kind = typed[0].encode()
    encoding, payload = squeeze(typed[1])
    return (b"D" if encoding else b"V") + bytes([len(kind)]) + kind + payload


def encode_list(
    base: bytes | None, base_count: int, items: list[bytes], *, compress: bool = True
) -> bytes:
    """A list blob: the msgpack encodings of the items appended since ``base``."""
    base = base or b""
    encoding, payload = squeeze(pack(items)) if compress else (RAW, pack(items))
    head = b"L" + _LIST_HEAD.pack(len(base)) + base + _LIST_COUNT.pack(base_count)
    return head + _LIST_FLAGS[encoding] + payload


def encode_list_ref(
    base: bytes | None, base_count: int, writes_field: bytes, refs: Sequence[tuple[bytes, int]]
) -> bytes:
    """A list blob whose new items are pending writes: ``refs`` are (frame digest, write index)."""
    base = base or b""
    head = b"R" + _LIST_HEAD.pack(len(base)) + base + _LIST_COUNT.pack(base_count)
    body = b"".join(digest + _LIST_HEAD.pack(i) for digest, i in refs)
    return head + _LIST_HEAD.pack(len(writes_field)) + writes_field + bytes([len(refs)]) + body


def list_ref(blob: bytes) -> tuple[bytes, list[tuple[bytes, int]]]:
    """(writes field, refs) of an ``R`` blob."""
    (size,) = _LIST_HEAD.unpack_from(blob, 1)
    at = 7 + size
    (wsize,) = _LIST_HEAD.unpack_from(blob, at)
    field = blob[at + 2 : at + 2 + wsize]
    at += 2 + wsize
    n, at = blob[at], at + 1
    refs = []
    for _ in range(n):
        (i,) = _LIST_HEAD.unpack_from(blob, at + 16)
        refs.append((blob[at : at + 16], i))
        at += 18
    if at != len(blob):
        raise ValueError("list reference has trailing bytes")
    return field, refs


def split_list(typed: tuple[str, bytes]) -> list[bytes] | None:
    """The msgpack encodings of a serialized list's items, cut from the list's own bytes.

    A msgpack array is its header followed by each item's encoding, so one serialization of the
    whole list (what any saver pays) yields every item without serializing items one by one.
    """
    if typed[0] != "msgpack":
        return None
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=len(typed[1]) + 1)
    unpacker.feed(typed[1])
    try:
        count = unpacker.read_array_header()
        start = unpacker.tell()
        items = []
        for _ in range(count):
            unpacker.skip()
            end = unpacker.tell()
            items.append(typed[1][start:end])
            start = end
    except Exception:
        return None
    return items if start == len(typed[1]) else None


MSGPACK = "msgpack"  # the serializer's type name of msgpack payloads


def is_array(payload: bytes) -> bool:
    """Whether a msgpack payload is an array."""
    return bool(payload) and (0x90 <= payload[0] <= 0x9F or payload[0] in (0xDC, 0xDD))


def write_items(typed: tuple[str, bytes]) -> list[bytes] | None:
    """What a write appends to a list channel, as item encodings: a list's items, or a lone
    value as one item. The put compares these bytes with the list's new items before referring."""
    if typed[0] != MSGPACK:
        return None
    items = split_list(typed)
    return items if items is not None else [typed[1]]


def list_base(blob: bytes) -> bytes | None:
    if blob[:1] not in (b"L", b"R"):
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


_VALUE_ENCODINGS = {b"V": RAW, b"Z": ZLIB, b"D": DEFLATE}


class _Absent:
    pass


#: What a blob field holds when it is absent or emptied (``None`` is a value).
ABSENT: Any = _Absent()


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
        """The value a blob field stands for; ``ABSENT`` when absent or emptied."""
        if field in self.lists:
            return loads(("msgpack", msgpack_list(self.list_of(field))))
        blob = self.fetched.get(field)
        if not blob:
            return ABSENT
        try:
            kind = blob[:1]
            if kind == b"E":
                return ABSENT
            if kind in _VALUE_ENCODINGS:
                size = blob[1]
                payload = unsqueeze(_VALUE_ENCODINGS[kind], blob[2 + size :])
                return loads((blob[2 : 2 + size].decode(), payload))
            if kind in (b"L", b"R"):
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
            if not blob or blob[:1] not in (b"L", b"R") or current in seen:
                raise CorruptEntryError(
                    f"{self.where} field {current!r}", "a list blob's base is missing"
                )
            seen.add(current)
            (size,) = _LIST_HEAD.unpack_from(blob, 1)
            (count,) = _LIST_COUNT.unpack_from(blob, 3 + size)
            if blob[:1] == b"R":
                segment = self._referred(current, blob)
            else:
                payload = unsqueeze(_LIST_ENCODINGS[blob[7 + size : 8 + size]], blob[8 + size :])
                segment = [bytes(item) for item in unpack(payload)]
            chain.append((current, count, segment))
            current = blob[3 : 3 + size] if size else None
        items = list(self.list_of(current)) if current is not None else []
        for name, count, segment in reversed(chain):
            if count != len(items):
                raise CorruptEntryError(f"{self.where} field {name!r}", "list lengths disagree")
            items.extend(segment)
            self.lists[name] = (items, len(items))
        return items

    def _referred(self, name: bytes, blob: bytes) -> list[bytes]:
        """The items an ``R`` blob refers to, read from the pending writes it names."""
        field, refs = list_ref(blob)
        raw = self.fetched.get(field)
        if not raw:
            raise CorruptEntryError(
                f"{self.where} field {name!r}", "the pending writes a list refers to are missing"
            )
        frames = {short_digest(frame): frame for frame in split_frames(raw)}
        items: list[bytes] = []
        for digest, i in refs:
            typed = frame_writes(frames[digest])[i][4]
            found = write_items(typed)
            if found is None:
                raise ValueError("a referred write is not a list")
            items += found
        return items


# -- writes -------------------------------------------------------------------------------------


_FRAME_HEAD = struct.Struct(">cI")
_WRITES_FRAMES = {b"W": RAW, b"X": DEFLATE}


def encode_writes(
    task_id: str, task_path: str, writes: Sequence[tuple[int, str, tuple[str, bytes]]]
) -> bytes:
    """One ``put_writes`` call as a frame: ``writes`` are (index, channel, typed value)."""
    flat: list[Any] = [task_id.encode("utf-8", "surrogatepass"), task_path.encode()]
    for idx, channel, typed in writes:
        flat += [idx, channel.encode("utf-8", "surrogatepass"), typed[0].encode(), typed[1]]
    encoding, payload = squeeze(pack(flat))
    return _FRAME_HEAD.pack(b"X" if encoding else b"W", len(payload)) + payload


def is_legacy_writes(raw: bytes) -> bool:
    """A writes field in the one-map format of earlier versions."""
    first = raw[0]
    return 0x80 <= first <= 0x8F or first in (0xDE, 0xDF)


def split_frames(raw: bytes) -> list[bytes]:
    """The frames of a writes field, each with its header (a one-map field has none)."""
    if is_legacy_writes(raw):
        return []
    frames, at = [], 0
    while at < len(raw):
        kind, size = _FRAME_HEAD.unpack_from(raw, at)
        if kind not in (b"W", b"X", b"M") or at + 5 + size > len(raw):
            raise ValueError("truncated or unknown frame")
        frames.append(raw[at : at + 5 + size])
        at += 5 + size
    return frames


def short_digest(data: bytes) -> bytes:
    """How an ``R`` blob names a frame, and a rewrite the blob it replaces: 16 hex digits of
    SHA-1 (the scripts compute the same with ``redis.sha1hex``)."""
    return hashlib.sha1(data).hexdigest()[:16].encode()


def frame_writes(frame: bytes) -> list[tuple[str, str, int, str, tuple[str, bytes]]]:
    """The writes of one ``W``/``X`` frame: (task id, task path, index, channel, typed value)."""
    flat = unpack(unsqueeze(_WRITES_FRAMES[frame[:1]], frame[5:]))
    task_id, task_path = text(flat[0]), text(flat[1])
    return [
        (
            task_id,
            task_path,
            int(flat[i]),
            text(flat[i + 1]),
            (text(flat[i + 2]), bytes(flat[i + 3])),
        )
        for i in range(2, len(flat), 4)
    ]


def decode_writes(
    raw: bytes | None, where: str
) -> list[tuple[tuple[str, str, int], str, tuple[str, bytes]]]:
    """A checkpoint's writes as (writes_sort_key, channel, typed value), in that order."""
    if not raw:
        return []
    # (task id, index) -> (task path, channel, typed value)
    found: dict[tuple[str, int], tuple[str, str, tuple[str, bytes]]] = {}
    try:
        if is_legacy_writes(raw):
            _read_legacy_writes(raw, found)
        else:
            for frame in split_frames(raw):
                if frame[:1] == b"M":
                    _read_legacy_writes(frame[5:], found)
                    continue
                for task_id, task_path, idx, channel, typed in frame_writes(frame):
                    if idx < 0 or (task_id, idx) not in found:
                        found[(task_id, idx)] = (task_path, channel, typed)
    except Exception as exc:
        raise CorruptEntryError(where, f"pending writes are unreadable ({exc})") from exc
    rows = [
        ((task_path, task_id, idx), channel, typed)
        for (task_id, idx), (task_path, channel, typed) in found.items()
    ]
    rows.sort(key=lambda row: row[0])
    return rows


def _read_legacy_writes(
    raw: bytes, found: dict[tuple[str, int], tuple[str, str, tuple[str, bytes]]]
) -> None:
    for key, value in unpack(raw).items():
        task_id, idx = key.rsplit(SEP, 1)
        channel, kind, payload, task_path, encoding = unpack(value)
        # Earlier versions wrote a bool: False = RAW, True = ZLIB.
        payload = unsqueeze(int(encoding), payload)
        found[(unescape_part(task_id), int(idx))] = (
            text(task_path),
            text(channel),
            (text(kind), bytes(payload)),
        )
