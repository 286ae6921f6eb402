"""Byte formats: compression with the preset dictionary, and data earlier versions wrote."""

from __future__ import annotations

import hashlib
import os
import re
import zlib

import msgpack
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from redis_checkpoint.checkpoint import codec
from redis_checkpoint.errors import CorruptEntryError

serde = JsonPlusSerializer()


def test_a_short_message_compresses_with_the_dictionary_and_round_trips() -> None:
    typed = serde.dumps_typed([HumanMessage(content="Why does my deploy fail?", id="h-1")])
    encoding, payload = codec.squeeze(typed[1])
    plain = zlib.compress(typed[1], 9)
    assert encoding == codec.DEFLATE
    # The class path and field names come from the dictionary: half of plain zlib or less.
    assert len(payload) * 2 <= len(plain)
    assert codec.unsqueeze(encoding, payload) == typed[1]


def test_incompressible_payloads_stay_raw() -> None:
    payload = os.urandom(512)
    assert codec.squeeze(payload) == (codec.RAW, payload)
    assert codec.squeeze(b"short") == (codec.RAW, b"short")


def test_blobs_and_writes_written_by_earlier_versions_still_read() -> None:
    typed = serde.dumps_typed([AIMessage(content="x " * 300, id="a-1")])
    legacy = zlib.compress(typed[1], 1)
    blob = b"Z" + bytes([len(typed[0])]) + typed[0].encode() + legacy
    value = codec.Blobs({b"f": blob}, "k").value(b"f", serde.loads_typed)
    assert value == serde.loads_typed(typed)

    items = codec.pack([typed[1]])
    list_blob = b"L" + b"\x00\x00" + b"\x00\x00\x00\x00" + b"z" + zlib.compress(items, 1)
    assert codec.Blobs({b"l": list_blob}, "k").items(b"l") == [typed[1]]

    row = codec.pack([b"messages", typed[0].encode(), legacy, b"", True])
    [(_, channel, back)] = codec.decode_writes(codec.pack({b"t\x000": row}), "k")
    assert channel == "messages" and back == typed


def test_a_truncated_compressed_blob_is_a_corrupt_entry_naming_the_key() -> None:
    blob = codec.encode_value(serde.dumps_typed("hello " * 100))
    assert blob[:1] == b"D"
    with pytest.raises(CorruptEntryError, match=re.escape("rc:cp:{t}:data")):
        codec.Blobs({b"f": blob[:-5]}, "rc:cp:{t}:data").value(b"f", serde.loads_typed)


def test_the_preset_dictionary_never_changes() -> None:
    # Stored payloads can only be read with these exact bytes.
    digest = hashlib.sha256(codec.ZDICT).hexdigest()
    assert digest == "cbafb82ee6ffc8b6f080d398d94367811ac86eb6f62bb45f5576c09c877ad728"


def test_a_record_shows_only_blob_channels_and_reads_every_version_back_in_order() -> None:
    checkpoint = serde.dumps_typed({"v": 4, "versions_seen": {"node": {"messages": "c1.ab"}}})
    metadata = {"source": "loop", "step": 1}
    versions = [b"turn", b"sc2.cd", b"V\x07msgpack\x01", b"messages", b"sc1.ab", b""]
    versions += [b"branch:to:node", b"sc3.ef", codec.EMPTY_BLOB, b"docs", b"sc4.aa", b""]
    raw, _ = codec.encode_record(
        parent_id="p-1",
        checkpoint=checkpoint,
        metadata=serde.dumps_typed(metadata),
        metadata_value=metadata,
        versions=versions,
    )
    fields = codec.unpack(raw)
    # What the scripts see: (channel, version) of the channels whose values are blobs, only.
    assert fields[0] == 4 and fields[6] == [b"messages", b"sc1.ab", b"docs", b"sc4.aa"]
    assert codec.shown_blobs(fields) == [(b"messages", b"sc1.ab"), (b"docs", b"sc4.aa")]
    record = codec.Record(raw, "k")
    assert record.versions == [tuple(versions[i : i + 3]) for i in range(0, 12, 3)]
    assert record.checkpoint == checkpoint and record.parent_id == "p-1"
    assert serde.loads_typed(record.metadata) == metadata


def test_format_3_records_still_read() -> None:
    checkpoint = serde.dumps_typed({"v": 4})
    hidden = [b"sc2.cd", b"V\x07msgpack\x01", b"sc3.ef", codec.EMPTY_BLOB]
    payload = codec.pack([checkpoint[0].encode(), checkpoint[1], hidden])
    shown = [b"messages", b"sc1.ab", b"", b"turn", b"", b"I", b"branch:to:node", b"", b"E"]
    raw = codec.pack([3, None, codec.RAW, payload, b"msgpack", codec.pack({}), shown, {}])
    record = codec.Record(raw, "k")
    assert record.checkpoint == checkpoint and record.parent_id is None
    assert record.versions == [
        (b"messages", b"sc1.ab", b""),
        (b"turn", b"sc2.cd", b"V\x07msgpack\x01"),
        (b"branch:to:node", b"sc3.ef", codec.EMPTY_BLOB),
    ]
    assert codec.shown_blobs(codec.unpack(raw)) == [(b"messages", b"sc1.ab")]


def test_format_2_records_still_read() -> None:
    checkpoint = serde.dumps_typed({"v": 4, "ts": "2026-01-01T00:00:00+00:00"})
    triples = [b"messages", b"sc1.ab", b"", b"turn", b"sc2.cd", b"V\x07msgpack\x01"]
    raw = codec.pack(
        [2, b"p-1", checkpoint[0].encode(), checkpoint[1], b"msgpack", codec.pack({}), triples, {}]
    )
    record = codec.Record(raw, "k")
    assert record.checkpoint == checkpoint
    assert record.versions == [tuple(triples[:3]), tuple(triples[3:])]


@pytest.mark.parametrize(
    ("metadata", "in_filters"),
    [
        ({"source": "loop", "step": 3, "parents": {}, "run_id": None}, True),
        ({"tags": ["a", "b"], "nested": {"a": 1, "b": [None]}}, True),
        ({"flag": True}, False),  # canonical spelling folds True into 1
        ({"score": 1.0}, False),  # and 1.0 into 1
        ({"nested": {"b": 1, "a": 2}}, False),  # canonical JSON sorts keys
        ({"when": b"bytes"}, False),
    ],
)
def test_metadata_is_stored_once_only_when_the_filters_spell_it_exactly(
    metadata: dict[str, object], in_filters: bool
) -> None:
    assert codec.metadata_in_filters(metadata) is in_filters
    raw, _ = codec.encode_record(
        parent_id=None,
        checkpoint=serde.dumps_typed({"v": 4}),
        metadata=None if in_filters else serde.dumps_typed(metadata),
        metadata_value=metadata,
        versions=[],
    )
    record = codec.Record(raw, "k")
    back = record.metadata_value if record.metadata is None else serde.loads_typed(record.metadata)
    assert back == metadata and list(back) == list(metadata)
    assert [type(v) for v in back.values()] == [type(v) for v in metadata.values()]


def test_metadata_with_a_lone_surrogate_is_stored_as_the_serializer_spells_it() -> None:
    metadata = {"note": "half a pair: \ud800", "step": 1}
    assert not codec.metadata_in_filters(metadata)
    assert codec.canonical(metadata["note"]) == codec.canonical("half a pair: \ud800")
    raw, _ = codec.encode_record(
        parent_id=None,
        checkpoint=serde.dumps_typed({"v": 4}),
        metadata=serde.dumps_typed(metadata),
        metadata_value=metadata,
        versions=[],
    )
    record = codec.Record(raw, "k")
    # No crash, and what InMemorySaver would keep: the serializer's own round trip.
    expected = serde.loads_typed(serde.dumps_typed(metadata))
    assert record.metadata is not None and serde.loads_typed(record.metadata) == expected


# A format-4 record as it is stored today (uncompressed: too small to deflate). Data already in
# Redis is read back through exactly these bytes, so writer and reader may not drift together.
FORMAT_4_RECORD = bytes.fromhex(
    "9804a5700101010200da002293a76d73677061636ba481a176049400a47475726ea132aa56076d73677061636b"
    "01a46a736f6ea77b2278223a317d92a86d65737361676573da00233030303030303030303030303030303030"
    "3030303030303030303030303030312e303182a6736f75726365a6226c6f6f7022a473746570a131"
)


def test_the_format_4_record_is_pinned_byte_for_byte() -> None:
    versions = [b"messages", b"00000000000000000000000000000001.01", b""]
    versions += [b"turn", b"2", b"V\x07msgpack\x01"]
    raw, _ = codec.encode_record(
        parent_id="p\x00\x01",  # NUL and 0x01 escaped in the stored parent id
        checkpoint=("msgpack", b"\x81\xa1v\x04"),
        metadata=("json", b'{"x":1}'),
        metadata_value={"source": "loop", "step": 1},
        versions=versions,
    )
    assert raw == FORMAT_4_RECORD
    record = codec.Record(FORMAT_4_RECORD, "k")
    assert record.parent_id == "p\x00\x01"
    assert record.checkpoint == ("msgpack", b"\x81\xa1v\x04")
    assert record.metadata == ("json", b'{"x":1}')
    assert record.versions == [tuple(versions[:3]), tuple(versions[3:])]


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 65535, 65536])
def test_a_list_rebuilt_from_its_items_is_the_serializers_own_bytes(count: int) -> None:
    """Array headers change at 16 and at 65,536 items: both sides of each boundary."""
    items = [msgpack.packb(i) for i in range(count)]
    whole = msgpack.packb(list(range(count)))
    assert codec.msgpack_list(items) == whole
    assert codec.is_array(whole)
    assert codec.split_list(("msgpack", whole)) == items


def test_a_list_chain_that_loops_is_a_corrupt_entry_not_a_hang() -> None:
    one = codec.encode_list(b"b\x00two", 1, [msgpack.packb("x")])
    two = codec.encode_list(b"b\x00one", 1, [msgpack.packb("y")])
    blobs = codec.Blobs({b"b\x00one": one, b"b\x00two": two}, "k")
    with pytest.raises(CorruptEntryError, match="base is missing"):
        blobs.items(b"b\x00one")


def test_list_lengths_that_disagree_are_a_corrupt_entry() -> None:
    base = codec.encode_list(None, 0, [msgpack.packb("a")])
    claims_two = codec.encode_list(b"b\x00base", 2, [msgpack.packb("b")])
    blobs = codec.Blobs({b"b\x00base": base, b"b\x00next": claims_two}, "k")
    with pytest.raises(CorruptEntryError, match="lengths disagree"):
        blobs.items(b"b\x00next")


# -- pending writes as frames -----------------------------------------------------------------


def test_writes_frames_round_trip_and_keep_the_first_of_a_repeat() -> None:
    small = codec.encode_writes("task\udc80", "~1", [(0, "chan\x00", ("msgpack", b"\x01"))])
    assert small[:1] == b"W" and int.from_bytes(small[1:5], "big") == len(small) - 5
    big_value = ("json", b'"' + b"abc" * 200 + b'"')  # compresses: an X frame
    big = codec.encode_writes(
        "other", "~0", [(1, "docs", big_value), (-1, "__error__", ("e", b""))]
    )
    assert big[:1] == b"X"
    again = codec.encode_writes("task\udc80", "~1", [(0, "chan\x00", ("msgpack", b"\x02"))])
    raw = small + big + again
    assert codec.split_frames(raw) == [small, big, again]
    assert codec.frame_writes(small) == [("task\udc80", "~1", 0, "chan\x00", ("msgpack", b"\x01"))]
    rows = codec.decode_writes(raw, "k")
    # Sorted by (task path, task id, index); a normal write repeated keeps its first value.
    assert rows == [
        (("~0", "other", -1), "__error__", ("e", b"")),
        (("~0", "other", 1), "docs", big_value),
        (("~1", "task\udc80", 0), "chan\x00", ("msgpack", b"\x01")),
    ]
    assert codec.decode_writes(None, "k") == [] and codec.decode_writes(b"", "k") == []


def test_special_writes_overwrite() -> None:
    first = codec.encode_writes("t", "~", [(-1, "__interrupt__", ("msgpack", b"\x01"))])
    second = codec.encode_writes("t", "~", [(-1, "__interrupt__", ("msgpack", b"\x02"))])
    assert codec.decode_writes(first + second, "k") == [
        (("~", "t", -1), "__interrupt__", ("msgpack", b"\x02"))
    ]


@pytest.mark.parametrize(
    "raw", [b"Q\x00\x00\x00\x01x", b"W\x00\x00\x00\x09abc", b"W\x00\x00\x00\x00" + b"\xc1"]
)
def test_damaged_writes_are_a_corrupt_entry(raw: bytes) -> None:
    with pytest.raises(CorruptEntryError, match="pending writes are unreadable"):
        codec.decode_writes(raw, "rc:cp:{t}:data")


def test_legacy_writes_are_still_read() -> None:
    one_map = codec.pack({b"t\x00" + b"0": codec.pack([b"ch", b"msgpack", b"\x01", b"~", False])})
    assert codec.is_legacy_writes(one_map) and codec.split_frames(one_map) == []
    assert codec.decode_writes(one_map, "k") == [(("~", "t", 0), "ch", ("msgpack", b"\x01"))]
    framed = b"M" + len(one_map).to_bytes(4, "big") + one_map
    assert codec.decode_writes(framed, "k") == [(("~", "t", 0), "ch", ("msgpack", b"\x01"))]


# -- list blobs that refer to pending writes --------------------------------------------------


def test_a_list_blob_refers_to_the_writes_it_appends() -> None:
    items = [msgpack.packb("b"), msgpack.packb("c")]
    frame = codec.encode_writes("t", "~", [(0, "messages", ("msgpack", codec.msgpack_list(items)))])
    writes_field = b"w\x00\x00cp1"
    ref = codec.encode_list_ref(b"b\x00base", 1, writes_field, [(codec.short_digest(frame), 0)])
    assert codec.list_ref(ref) == (writes_field, [(codec.short_digest(frame), 0)])
    assert codec.list_base(ref) == b"b\x00base"
    base = codec.encode_list(None, 0, [msgpack.packb("a")])
    assert codec.list_base(base) is None and codec.list_base(b"V\x00") is None
    blobs = codec.Blobs({b"b\x00base": base, b"b\x00new": ref, writes_field: frame}, "k")
    assert blobs.items(b"b\x00new") == [msgpack.packb("a"), *items]
    assert b"b\x00new" in blobs and b"b\x00nothing" not in blobs
    assert blobs.value(b"b\x00new", serde.loads_typed) == ["a", "b", "c"]
    assert blobs.list_of(b"b\x00base") == [msgpack.packb("a")]
    missing = codec.Blobs({b"b\x00base": base, b"b\x00new": ref}, "k")
    with pytest.raises(CorruptEntryError, match="pending writes a list refers to are missing"):
        missing.items(b"b\x00new")
    with pytest.raises(ValueError, match="trailing bytes"):
        codec.list_ref(ref + b"!")


def test_values_and_empties_from_blobs() -> None:
    value = codec.encode_value(serde.dumps_typed({"k": "v"}))
    blobs = codec.Blobs({b"v": value, b"e": codec.EMPTY_BLOB, b"odd": b"?x"}, "rc:cp:{t}:data")
    assert blobs.value(b"v", serde.loads_typed) == {"k": "v"}
    assert blobs.value(b"e", serde.loads_typed) is codec.ABSENT
    assert blobs.value(b"absent", serde.loads_typed) is codec.ABSENT
    with pytest.raises(CorruptEntryError, match="unknown blob kind"):
        blobs.value(b"odd", serde.loads_typed)


# -- metadata spelled for the server-side filter ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "spelled"),
    [
        (None, b"null"),
        (True, b"1"),
        (False, b"0"),
        (7, b"7"),
        (1.0, b"1"),
        (1.5, b"1.5"),
        ("é", '"é"'.encode()),
        ([True, 2.0, None], b"[1,2,null]"),
        ({"b": 1, "a": [1.0]}, b'{"a":[1],"b":1}'),
        ({1: "not a str key"}, codec.UNKNOWN),
        (b"bytes", codec.UNKNOWN),
        (float("nan"), b"NaN"),
    ],
)
def test_canonical_spelling(value: object, spelled: bytes) -> None:
    assert codec.canonical(value) == spelled


def test_a_keyed_record_reads_only_with_its_keyframe() -> None:
    versions = [b"messages", b"sc1.ab", b"", b"turn", b"sc2.cd", b"V\x07msgpack\x01"]
    checkpoint = serde.dumps_typed({"v": 4, "channel_versions": {"messages": "sc1.ab"}})
    metadata = {"source": "loop", "step": 1}
    first, first_payload = codec.encode_record(
        parent_id=None,
        checkpoint=checkpoint,
        metadata=None,
        metadata_value=metadata,
        versions=versions,
    )
    assert codec.record_depth(codec.unpack(first)) == 0
    keyframe = codec.Keyframe(depth=2, member=b"c\x00\x00first", payload=first_payload)
    keyed, _ = codec.encode_record(
        parent_id="first",
        checkpoint=checkpoint,
        metadata=None,
        metadata_value=metadata,
        versions=versions,
        keyframe=keyframe,
    )
    fields = codec.unpack(keyed)
    assert fields[2] == codec.KEYED and codec.record_depth(fields) == 2
    record = codec.Record(keyed, "k", keyframe=first)
    assert record.checkpoint == checkpoint and record.metadata is None
    assert record.metadata_value == metadata and record.parent_id == "first"
    assert record.versions == [tuple(versions[:3]), tuple(versions[3:])]
    assert record.blob_fields(b"") == [(b"messages", b"b\x00\x00messages\x00sc1.ab")]
    with pytest.raises(CorruptEntryError, match="keyframe is missing"):
        codec.Record(keyed, "k")


@pytest.mark.parametrize(
    ("value", "small"),
    [
        (None, True),
        (True, True),
        (1.5, True),
        (2**53 - 1, True),
        (-(2**53) + 1, True),
        (2**53, False),
        (-(2**53), False),
        ("x" * 48, True),
        ("x" * 49, False),
        (b"x" * 48, True),
        ([1], False),
    ],
)
def test_what_is_stored_inline(value: object, small: bool) -> None:
    assert codec.is_small(value) is small


def test_canonical_spelling_keeps_unicode_and_lone_surrogates() -> None:
    assert codec.canonical("é\ud800") == '"é'.encode() + b'\xed\xa0\x80"'
    assert codec.canonical(["é\ud800"]) == '["é'.encode() + b'\xed\xa0\x80"]'
    assert codec.canonical({"k": "é"}) == '{"k":"é"}'.encode()


def test_compressed_metadata_reads_back() -> None:
    metadata = {"source": "loop", "step": 3, "note": "the and that with for you " * 20}
    raw, _ = codec.encode_record(
        parent_id=None,
        checkpoint=serde.dumps_typed({"v": 4}),
        metadata=serde.dumps_typed(metadata),
        metadata_value=metadata,
        versions=[],
    )
    head = codec.unpack(raw)[4]
    assert head[:1] in (b"\x01", b"\x02")  # compressed: the flag byte before the type name
    record = codec.Record(raw, "k")
    assert record.metadata is not None and serde.loads_typed(record.metadata) == metadata


def test_a_list_blob_is_read_as_a_value_before_its_items_are_known() -> None:
    base = codec.encode_list(None, 0, [msgpack.packb("a")])
    top = codec.encode_list(b"b\x00base", 1, [msgpack.packb("b")])
    blobs = codec.Blobs({b"b\x00base": base, b"b\x00top": top}, "k")
    assert blobs.value(b"b\x00top", serde.loads_typed) == ["a", "b"]


def test_a_list_whose_base_is_not_a_list_is_a_corrupt_entry() -> None:
    top = codec.encode_list(b"b\x00base", 1, [msgpack.packb("b")])
    value = codec.encode_value(serde.dumps_typed("not a list"))
    blobs = codec.Blobs({b"b\x00base": value, b"b\x00top": top}, "rc:cp:{t}:data")
    with pytest.raises(CorruptEntryError, match="base is missing") as caught:
        blobs.items(b"b\x00top")
    assert caught.value.key == "rc:cp:{t}:data field b'b\\x00base'"  # names the damaged one


# -- the remaining edges the mutation run pointed at --------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "exact"),
    [
        ({"k": "é"}, True),
        ({"k": "\ud800"}, False),
        ({"tags": ["a", 1.5]}, False),
        ({"d": {"x": 1.5}}, False),
        ({"d": {"x": [None, 2]}}, True),
    ],
)
def test_which_metadata_the_filters_spell_exactly(metadata: dict[str, object], exact: bool) -> None:
    assert codec.metadata_in_filters(metadata) is exact


def test_compression_starts_at_its_threshold_and_rejects_padding() -> None:
    assert codec.squeeze(b"a" * (codec.COMPRESS_FROM - 1))[0] == codec.RAW
    encoding, packed = codec.squeeze(b"a" * codec.COMPRESS_FROM)
    assert encoding == codec.DEFLATE and codec.unsqueeze(encoding, packed) == b"a" * 64
    with pytest.raises(ValueError, match="truncated or padded"):
        codec.unsqueeze(codec.DEFLATE, packed + b"pad")
    long_list = codec.encode_list(None, 0, [msgpack.packb("the same item")] * 40)
    assert long_list[7:8] != codec.encode_list(None, 0, [b"\xc0"], compress=False)[7:8]


@pytest.mark.parametrize(
    ("first", "array"),
    [
        (b"", False),
        (b"\x90", True),
        (b"\x9f", True),
        (b"\xa0", False),
        (b"\xdc", True),
        (b"\xdd", True),
        (b"\xde", False),
    ],
)
def test_which_payloads_are_arrays(first: bytes, array: bool) -> None:
    assert codec.is_array(first) is array


@pytest.mark.parametrize(
    ("first", "legacy"),
    [
        (b"\x80", True),
        (b"\x8f", True),
        (b"\x90", False),
        (b"\xde", True),
        (b"\xdf", True),
        (b"\xe0", False),
        (b"W", False),
    ],
)
def test_which_writes_fields_are_the_one_map_format(first: bytes, legacy: bool) -> None:
    assert codec.is_legacy_writes(first + b"\x00") is legacy


def test_list_items_are_cut_from_raw_bytes_and_trailing_bytes_refused() -> None:
    odd = b"\x92\xa1\xff\x01"  # a str that is not UTF-8, then an int: cut as they are
    assert codec.split_list(("msgpack", odd)) == [b"\xa1\xff", b"\x01"]
    assert codec.split_list(("msgpack", odd + b"\x01")) is None
    assert codec.split_list(("json", b"[1]")) is None
    assert codec.write_items(("msgpack", b"\x05")) == [b"\x05"]  # a lone value: one item
    assert codec.write_items(("json", b"5")) is None


def test_blobs_reach_lists_known_already_and_refs_to_several_writes() -> None:
    top = codec.encode_list(b"b\x00base", 1, [msgpack.packb("b")])
    assert codec.list_base(top) == b"b\x00base"
    blobs = codec.Blobs({b"b\x00top": top}, "k", known={b"b\x00base": [msgpack.packb("a")]})
    assert b"b\x00base" in blobs and b"b\x00top" in blobs
    assert blobs.items(b"b\x00top") == [msgpack.packb("a"), msgpack.packb("b")]
    assert b"b\x00gone" not in codec.Blobs({b"b\x00gone": b""}, "k")

    frame = codec.encode_writes(
        "t", "~", [(0, "m", ("msgpack", b"\x91\xa1x")), (1, "m", ("msgpack", b"\xa1y"))]
    )
    digest = codec.short_digest(frame)
    ref = codec.encode_list_ref(None, 0, b"w\x00\x00c", [(digest, 0), (digest, 1)])
    both = codec.Blobs({b"b\x00r": ref, b"w\x00\x00c": frame}, "k")
    assert both.items(b"b\x00r") == [b"\xa1x", b"\xa1y"]


def test_frames_are_split_exactly_and_all_read() -> None:
    with pytest.raises(ValueError, match="truncated"):
        codec.split_frames(b"W\x00\x00\x00\x09abc")
    with pytest.raises(ValueError, match="unknown frame"):
        codec.split_frames(b"Q\x00\x00\x00\x00")
    one_map = codec.pack({b"t\x000": codec.pack([b"a", b"msgpack", b"\x01", b"~", False])})
    legacy = b"M" + len(one_map).to_bytes(4, "big") + one_map
    newer = codec.encode_writes("u\udc80", "~", [(0, "b\udc80", ("msgpack", b"\x02"))])
    rows = codec.decode_writes(legacy + newer, "k")
    assert [row[0] for row in rows] == [("~", "t", 0), ("~", "u\udc80", 0)]
    assert rows[1][1] == "b\udc80"
