"""The saver's key and field names (checkpoint/keys.py), byte for byte: data already in Redis is
found by these exact names, so none of them may drift."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from redis_checkpoint.checkpoint.keys import (
    ThreadKeyLayout,
    blob_field,
    checkpoint_member,
    escape_part,
    thread_tag,
    unescape_part,
    version_from_token,
    version_token,
    writes_field,
)


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("plain", b"plain"),
        ("a\x00b", b"a\x01\x01b"),
        ("a\x01b", b"a\x01\x02b"),
        ("\x01\x00\x01", b"\x01\x02\x01\x01\x01\x02"),
        ("é\ud800", "é".encode() + b"\xed\xa0\x80"),  # a lone surrogate passes through
        ("", b""),
    ],
)
def test_escaping_keeps_nul_out_and_round_trips(text: str, stored: bytes) -> None:
    assert escape_part(text) == stored
    assert b"\x00" not in stored
    assert unescape_part(stored) == text


@pytest.mark.parametrize(
    ("version", "token", "back"),
    [
        (1, b"i1", 1),
        (True, b"i1", 1),
        (False, b"i0", 0),
        (-7, b"i-7", -7),
        (2.0, b"i2", 2),  # a whole float is the integer: one blob for 2 and 2.0
        (2.5, b"f2.5", 2.5),
        ("1", b"s1", "1"),  # but never the string: "1" and 1 are two versions
        ("00000000000000000000000000000001.0", b"s00000000000000000000000000000001.0", None),
        ("v\x00", b"sv\x01\x01", "v\x00"),
    ],
)
def test_version_tokens_keep_the_type(
    version: str | int | float, token: bytes, back: str | int | float | None
) -> None:
    assert version_token(version) == token
    expected = version if back is None else back
    read = version_from_token(token)
    assert read == expected and type(read) is type(expected)


def test_an_unknown_version_token_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown channel version"):
        version_from_token(b"x1")


def test_field_and_member_names() -> None:
    assert checkpoint_member(b"ns", b"id") == b"c\x00ns\x00id"
    assert blob_field(b"", "messages", 3) == b"b\x00\x00messages\x00i3"
    assert blob_field(b"n", "a\x00b", "v") == b"b\x00n\x00a\x01\x01b\x00sv"
    assert writes_field(b"", b"id") == b"w\x00\x00id"


@pytest.mark.parametrize(
    ("thread_id", "tag"),
    [("t-1", "t-1"), ("", "%"), ("{a}:b c", "%7Ba%7D%3Ab%20c"), ("é", "%C3%A9")],
)
def test_a_thread_tag_is_percent_encoded(thread_id: str, tag: str) -> None:
    assert thread_tag(thread_id) == tag


def test_a_threads_keys_share_one_slot() -> None:
    layout = ThreadKeyLayout("app")
    assert layout.registry == "app:cp:threads"
    keys = layout.thread("{x}")
    assert (keys.thread_id, keys.idx, keys.data) == (
        "{x}",
        "app:cp:{%7Bx%7D}:idx",
        "app:cp:{%7Bx%7D}:data",
    )
    assert key_slot(keys.idx.encode()) == key_slot(keys.data.encode())
    assert ThreadKeyLayout().thread("t").idx == "rc:cp:{t}:idx"
