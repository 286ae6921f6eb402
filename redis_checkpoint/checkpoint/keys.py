"""Key layout of the checkpoint saver on plain Redis.

Every thread lives in exactly two keys that share one hash slot (the ``{...}`` hash tag), so each
operation on a thread is one script call on a single node, standalone or cluster:

* ``<prefix>:cp:{<thread>}:idx`` - a sorted set of the thread's checkpoints (all scores 0, so
  ordered by member bytes: namespace, then checkpoint id);
* ``<prefix>:cp:{<thread>}:data`` - a hash holding checkpoint records (``c``), channel blobs
  (``b``), each checkpoint's pending writes (``w``) and the thread's own settings.

Field and member names join escaped parts with NUL bytes. Escaping keeps NUL and 0x01 out of every
part, so a lexicographic range ``[c\\0<ns>\\0`` .. ``(c\\0<ns>\\1`` selects exactly one namespace.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import quote

SEP = b"\x00"


@functools.lru_cache(maxsize=4096)
def escape_part(part: str) -> bytes:
    """Encode a user string so that it contains no NUL and no bare 0x01 byte."""
    raw = part.encode("utf-8", "surrogatepass")
    if b"\x00" in raw or b"\x01" in raw:
        raw = raw.replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01")
    return raw


def unescape_part(raw: bytes) -> str:
    if b"\x01" in raw:
        raw = raw.replace(b"\x01\x01", b"\x00").replace(b"\x01\x02", b"\x01")
    return raw.decode("utf-8", "surrogatepass")


@functools.lru_cache(maxsize=4096)
def version_token(version: str | int | float) -> bytes:
    """A channel version as bytes; the type is kept so that 1 and "1" never share a blob."""
    if isinstance(version, bool):
        return b"i%d" % int(version)
    if isinstance(version, int) or (isinstance(version, float) and version.is_integer()):
        return b"i%d" % int(version)
    if isinstance(version, float):
        return b"f" + repr(version).encode()
    return b"s" + escape_part(str(version))


def record_token(version: str | int | float) -> bytes:
    """How a checkpoint record names a channel's version: :func:`version_token`, but a
    32-digit counter and a fraction (the LangGraph Agent Server's versions) without the
    counter's leading zeros, as ``z``; :func:`field_token` spells it out again, so blob fields
    keep one name whichever record refers to them."""
    token = version_token(version)
    if token[33:34] == b"." and token[:1] == b"s" and token[1:33].isdigit():
        return b"z" + (token[1:33].lstrip(b"0") or b"0") + token[33:]
    return token


def field_token(token: bytes) -> bytes:
    """The :func:`version_token` of a record's token: how its blob field names the version
    (the scripts' ``field_token`` does the same)."""
    if token[:1] != b"z":
        return token
    digits, _, rest = token[1:].partition(b".")
    return b"s" + digits.rjust(32, b"0") + b"." + rest


def version_from_token(token: bytes) -> str | int | float:
    token = field_token(token)
    kind, rest = token[:1], token[1:]
    if kind == b"i":
        return int(rest)
    if kind == b"f":
        return float(rest)
    if kind == b"s":
        return unescape_part(rest)
    raise ValueError(f"unknown channel version {token!r}")


def checkpoint_member(ns: bytes, checkpoint_id: bytes) -> bytes:
    return b"c" + SEP + ns + SEP + checkpoint_id


def blob_field(ns: bytes, channel: str, version: str | int | float) -> bytes:
    return b"b" + SEP + ns + SEP + escape_part(channel) + SEP + version_token(version)


def writes_field(ns: bytes, checkpoint_id: bytes) -> bytes:
    """The field holding a checkpoint's pending writes (put_writes frames, see codec.py)."""
    return b"w" + SEP + ns + SEP + checkpoint_id


def thread_tag(thread_id: str) -> str:
    """The hash-tag text for a thread: percent-encoded so `{`, `}`, `:` and unicode are safe."""
    return quote(thread_id, safe="") or "%"


@dataclass(frozen=True)
class ThreadKeys:
    thread_id: str
    idx: str
    data: str


@dataclass(frozen=True)
class ThreadKeyLayout:
    """Names of every key the saver uses under one prefix."""

    prefix: str = "rc"

    @property
    def registry(self) -> str:
        """Sorted set of thread ids scored by the time (ms) their keys expire (+inf: never)."""
        return f"{self.prefix}:cp:threads"

    def run_index(self, run_id: str) -> str:
        """Sorted set of the threads holding a run's checkpoints, scored like the registry:
        ``delete_for_runs`` reads it instead of visiting every thread."""
        return f"{self.prefix}:cp:run:{{{thread_tag(run_id)}}}"

    def thread(self, thread_id: str) -> ThreadKeys:
        return _thread_keys(self.prefix, thread_id)


@functools.lru_cache(maxsize=4096)
def _thread_keys(prefix: str, thread_id: str) -> ThreadKeys:
    base = f"{prefix}:cp:{{{thread_tag(thread_id)}}}"
    return ThreadKeys(thread_id, f"{base}:idx", f"{base}:data")
