"""The saver's one core: every operation as a plan of round trips, with no I/O of its own.

An operation is a generator. It yields a :class:`Call` - the commands of one round trip - and
receives the list of their replies; its return value is the operation's result. The router
(``routing.py``) sends each Call to Redis, or to the in-memory tier while its shard is away; the
sync and async drivers (``saver.py``, ``aio.py``) only carry out the router's steps, so both faces
share every line of logic here. What this process knows Redis already holds (so that a write
sends less and a read fetches less) is :class:`~redis_checkpoint.checkpoint.known.KnownState`'s.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from redis_checkpoint.checkpoint import codec
from redis_checkpoint.checkpoint.keys import (
    SEP,
    ThreadKeyLayout,
    ThreadKeys,
    blob_field,
    checkpoint_member,
    escape_part,
    record_token,
    unescape_part,
    version_from_token,
    writes_field,
)
from redis_checkpoint.checkpoint.known import KnownState, StoredList
from redis_checkpoint.errors import CorruptEntryError, MissingThreadIdError
from redis_checkpoint.steps import Call, Command, Emit, Kind

# Stored in the member and in the record's channel/version pairs, not in the serialized checkpoint.
_KEPT_ELSEWHERE = ("channel_values", "channel_versions", "id")

T = TypeVar("T")

Op = Generator[Call, list[Any], T]
IterOp = Generator["Call | Emit", Any, None]


def thread_id_of(config: RunnableConfig) -> str:
    try:
        thread_id = config["configurable"]["thread_id"]
    except (KeyError, TypeError):
        raise MissingThreadIdError() from None
    if thread_id is None:
        raise MissingThreadIdError()
    return str(thread_id)


@dataclass
class SaverCore:
    """Key layout, encodings and the plan of each operation."""

    serde: SerializerProtocol
    layout: ThreadKeyLayout = field(default_factory=ThreadKeyLayout)
    ttl_ms: int = 0
    refresh_on_read: bool = False
    list_cache_size: int = 4096
    #: Checkpoints a thread keeps per namespace (0: all), unless it has a limit of its own.
    max_history: int = 0
    #: What this process knows Redis holds (``known.py``): lets writes send less, reads fetch less.
    known: KnownState = field(init=False)

    def __post_init__(self) -> None:
        self.known = KnownState(self.ttl_ms, self.list_cache_size)

    # -- helpers -------------------------------------------------------------------------------

    def keys(self, thread_id: str) -> ThreadKeys:
        return self.layout.thread(thread_id)

    def _script(self, name: str, keys: ThreadKeys, *args: Any) -> Command:
        return Command(name, (keys.idx, keys.data), args)

    def _register(self, thread_id: str, force: bool = False) -> list[Command]:
        """A registry update for list(None), when this process has not made one lately.

        The registry scores each thread by when its keys expire (see
        :meth:`KnownState.registration`). A write that finds its thread gone registers it
        again: see ``_reregister``.
        """
        score = self.known.registration(thread_id, force)
        if score is None:
            return []
        return [Command("ZADD", (self.layout.registry,), ("GT", _score(score), thread_id), False)]

    def _index_runs(self, thread_id: str, run_id: Any, force: bool = False) -> list[Command]:
        """Run index updates for a write of ``run_id`` (see :meth:`KnownState.runs_due`):
        ``delete_for_runs`` then visits only the threads a run wrote to."""
        if type(run_id) is not str:
            return []
        commands = []
        for run, score in self.known.runs_due(thread_id, run_id, force):
            key = self.layout.run_index(run)
            commands.append(Command("ZADD", (key,), ("GT", _score(score), thread_id), False))
            if self.ttl_ms > 0:
                # The key outlives its newest entry: the entries' expiry, not Redis's, counts.
                commands.append(Command("PEXPIRE", (key,), (int(self.ttl_ms * 1.25),), False))
        return commands

    def _reregister(
        self, thread_id: str, created: int, sent: list[Command], run_id: Any = None
    ) -> Op[None]:
        """The thread was (re)created by this write but its registry or run index update was
        skipped (this process had made one before the thread went)."""
        if not created:
            return
        sent_keys = {command.keys[0] for command in sent[1:]}
        again = []
        if self.layout.registry not in sent_keys:
            again += self._register(thread_id, force=True)
        if type(run_id) is str and self.layout.run_index(run_id) not in sent_keys:
            again += self._index_runs(thread_id, run_id, force=True)
        if again:
            yield Call(again, "write", thread_id)

    def _where(self, keys: ThreadKeys, member: bytes) -> str:
        return f"{keys.data} field {member!r}"

    # -- decoding ------------------------------------------------------------------------------

    def _pending_writes(
        self, keys: ThreadKeys, member: bytes, raw: bytes | None
    ) -> list[PendingWrite]:
        where = self._where(keys, b"w" + member[1:])
        return [
            (sort_key[1], channel, self.serde.loads_typed(typed))
            for sort_key, channel, typed in codec.decode_writes(raw, where)
        ]

    def _values(
        self, record: codec.Record, ns: bytes, blobs: codec.Blobs, only: set[str] | None = None
    ) -> dict[str, Any]:
        """Channel values of a checkpoint: inline ones, then those in blobs."""
        loads = self.serde.loads_typed
        values: dict[str, Any] = {}
        for channel_e, _, inline in record.versions:
            channel = unescape_part(channel_e)
            if inline and inline != codec.EMPTY_BLOB and (only is None or channel in only):
                values[channel] = codec.Blobs({b"": inline}, blobs.where).value(b"", loads)
        for channel_e, blob in record.blob_fields(ns):
            channel = unescape_part(channel_e)
            if only is None or channel in only:
                value = blobs.value(blob, loads)
                if value is not codec.ABSENT:
                    values[channel] = value
        return values

    def _tuple(
        self,
        keys: ThreadKeys,
        member: bytes,
        raw: bytes,
        blobs: codec.Blobs,
        writes: bytes | None,
        keyframe: bytes | None,
        remember: bool = False,
    ) -> CheckpointTuple:
        where = self._where(keys, member)
        record = codec.Record(raw, where, keyframe)
        _, ns_e, cid_e = member.split(SEP)
        ns, checkpoint_id = unescape_part(ns_e), unescape_part(cid_e)
        loads = self.serde.loads_typed
        try:
            stored = loads(record.checkpoint)
            metadata = cast(
                CheckpointMetadata,
                record.metadata_value if record.metadata is None else loads(record.metadata),
            )
            versions = {
                unescape_part(ch): version_from_token(tok) for ch, tok, _ in record.versions
            }
        except Exception as exc:
            raise CorruptEntryError(where, f"cannot deserialize ({exc})") from exc
        values = self._values(record, ns_e, blobs)
        if remember:
            lists = {
                unescape_part(channel): StoredList(blob, blobs.list_of(blob))
                for channel, blob in record.blob_fields(ns_e)
                if blob in blobs.lists
            }
            self.known.remember_lists(keys.thread_id, ns_e, lists)
        checkpoint = cast(
            Checkpoint,
            {**stored, "id": checkpoint_id, "channel_versions": versions, "channel_values": values},
        )
        config: RunnableConfig = {
            "configurable": {
                "thread_id": keys.thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint_id,
            }
        }
        parent: RunnableConfig | None = None
        if record.parent_id is not None:
            parent = {
                "configurable": {
                    "thread_id": keys.thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": record.parent_id,
                }
            }
        return CheckpointTuple(
            config=config,
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=parent,
            pending_writes=self._pending_writes(keys, member, writes),
        )

    # -- operations ----------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> Op[CheckpointTuple | None]:
        thread_id = thread_id_of(config)
        keys = self.keys(thread_id)
        ns = config["configurable"].get("checkpoint_ns", "") or ""
        checkpoint_id = get_checkpoint_id(config)
        refresh = self.refresh_on_read and self.ttl_ms > 0
        ns_e = escape_part(ns)
        known = self.known.known_lists(thread_id, ns_e)
        commands = [
            self._script(
                "get",
                keys,
                ns_e,
                escape_part(checkpoint_id) if checkpoint_id else b"",
                b"1" if refresh else b"0",
                self.ttl_ms,
                *known,
            )
        ]
        if refresh:
            commands += self._register(thread_id)
        reply = (yield Call(commands, "read", thread_id))[0]
        if not reply:
            return None
        member, raw, flat, writes, keyframes = reply
        blobs = codec.Blobs(_field_map(flat), keys.data, known)
        keyframe = keyframes[1] if keyframes else None
        return self._tuple(keys, member, raw, blobs, writes, keyframe, remember=True)

    def list_page(
        self,
        thread_id: str,
        ns: str | None,
        *,
        checkpoint_id: str | None,
        filter: Mapping[str, Any] | None,
        before: str | None,
        limit: int | None,
        cursor: bytes | None,
    ) -> Op[tuple[list[CheckpointTuple], bytes | None]]:
        """Up to ``limit`` matching checkpoints of one thread, newest first, and a cursor."""
        keys = self.keys(thread_id)
        refresh = self.refresh_on_read and self.ttl_ms > 0
        known = self.known.known_lists(thread_id, escape_part(ns)) if ns is not None else {}
        command = self._script(
            "list",
            keys,
            b"1" if ns is not None else b"0",
            escape_part(ns or ""),
            escape_part(before) if before else b"",
            escape_part(checkpoint_id) if checkpoint_id else b"",
            limit or 0,
            cursor or b"",
            b"1" if refresh else b"0",
            self.ttl_ms,
            len(known),
            *known,
            *codec.filter_args(filter),
        )
        found, flat, more, keyframes = (yield Call([command], "read", thread_id))[0]
        blobs = codec.Blobs(_field_map(flat), keys.data, known)
        frames = _field_map(keyframes)
        out = []
        for member, raw, writes, keyframe in found:
            tup = self._tuple(keys, member, raw, blobs, writes, frames.get(keyframe or b""))
            if codec.metadata_matches(tup.metadata, filter):
                out.append(tup)
        return out, more or None

    def list_checkpoints(
        self,
        config: RunnableConfig | None,
        *,
        filter: Mapping[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> IterOp:
        """list(): one thread's checkpoints (all namespaces unless one is named), or every
        thread's when ``config`` is None; newest first, in pages of at most 100."""
        if config is None:
            threads = yield from self.list_threads()
            ns: str | None = None
            checkpoint_id = None
        else:
            threads = [thread_id_of(config)]
            ns = config["configurable"].get("checkpoint_ns")
            checkpoint_id = get_checkpoint_id(config)
        before_id = get_checkpoint_id(before) if before else None
        remaining = limit
        for thread_id in threads:
            cursor: bytes | None = None
            while remaining is None or remaining > 0:
                page, cursor = yield from self.list_page(
                    thread_id,
                    ns,
                    checkpoint_id=checkpoint_id,
                    filter=filter,
                    before=before_id,
                    limit=min(remaining, 100) if remaining is not None else 100,
                    cursor=cursor,
                )
                if page:
                    yield Emit(page)
                if remaining is not None:
                    remaining -= len(page)
                if cursor is None:
                    break

    def list_threads(self) -> Op[list[str]]:
        now = _score(time.time() * 1000)
        registry = self.layout.registry
        reply = yield Call(
            [
                Command("ZREMRANGEBYSCORE", (registry,), ("-inf", f"({now}"), False),
                Command("ZRANGE", (registry,), (0, -1), False),
            ],
            "admin",
        )
        return sorted(codec.text(member) for member in reply[1])

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op[RunnableConfig]:
        thread_id = thread_id_of(config)
        keys = self.keys(thread_id)
        ns = config["configurable"].get("checkpoint_ns", "") or ""
        ns_e = escape_part(ns)
        checkpoint_id = checkpoint["id"]
        parent_id = config["configurable"].get("checkpoint_id")
        member = checkpoint_member(ns_e, escape_part(checkpoint_id))
        full_metadata = get_checkpoint_metadata(config, metadata)
        parent_record = self._parent_record(thread_id, ns_e, parent_id)
        record_against = functools.partial(
            self._record,
            thread_id,
            ns_e,
            parent_id,
            parent_record is not None,
            checkpoint,
            full_metadata,
            new_versions,
        )
        keyframe = _child_keyframe(parent_record)
        record, payload, inline_now = record_against(keyframe)
        # Blobs last: a list refers to the parent's writes if they are known by now.
        parent = (thread_id, ns_e, escape_part(parent_id)) if parent_id else None
        blob_args, lists = self._blobs(
            thread_id, parent, ns_e, checkpoint["channel_values"], new_versions
        )
        head = (
            member,
            record,
            self.ttl_ms,
            thread_id,
            keyframe.member if keyframe else b"",
            self.max_history,
        )
        run_id = full_metadata.get("run_id")
        commands = [
            self._script("put", keys, *head, *blob_args),
            *self._register(thread_id),
            *self._index_runs(thread_id, run_id),
        ]
        reply = (yield Call(commands, "write", thread_id))[0]
        if reply[0] == 1:
            yield from self._reregister(thread_id, reply[2], commands, run_id)
        if reply[0] == 0:
            if reply[2]:
                # The keyframe is gone (pruned or deleted elsewhere): store the record whole.
                keyframe = None
                record, payload, inline_now = record_against(None)
                head = (member, record, self.ttl_ms, thread_id, b"", self.max_history)
            # A base this process remembered is gone (deleted or pruned elsewhere): store those
            # lists whole.
            missing = set(reply[1])
            whole = {stored.field: stored.items for stored in lists.values()}
            for i in range(0, len(blob_args), 4):
                if blob_args[i] in missing:
                    full = codec.encode_list(None, 0, whole[blob_args[i]])
                    blob_args[i + 1 : i + 4] = [full, b"", b""]
            reply = (
                yield Call([self._script("put", keys, *head, *blob_args)], "write", thread_id)
            )[0]
            if reply[0] == 0:
                raise CorruptEntryError(keys.data, "list base vanished while writing")
            yield from self._reregister(thread_id, reply[2], commands, run_id)
        self.known.remember_lists(thread_id, ns_e, lists)
        last = keyframe or codec.Keyframe(0, member, payload)
        self.known.stored(thread_id, ns_e, inline_now, member, last)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint_id,
            }
        }

    def _record(
        self,
        thread_id: str,
        ns_e: bytes,
        parent_id: str | None,
        parent_known: bool,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        keyframe: codec.Keyframe | None,
    ) -> tuple[bytes, bytes, dict[bytes, tuple[bytes, bytes]]]:
        """A checkpoint's record, its uncompressed payload, and its channels' (version token,
        inline bytes). ``parent_known``: this process wrote the parent, so the channels unchanged
        since were serialized then."""
        values = checkpoint["channel_values"]
        versions: list[bytes] = []
        earlier = self.known.inline(thread_id, ns_e)
        for channel, version in checkpoint["channel_versions"].items():
            channel_e, token = escape_part(channel), record_token(version)
            seen = earlier.get(channel_e)
            if (
                parent_known
                and seen is not None
                and seen[0] == token
                and channel not in new_versions
            ):
                # Same version as in the parent, so the same value: reuse its inline bytes
                # (or its "in a blob").
                inline = seen[1]
            elif channel in values:
                small = codec.is_small(values[channel])
                inline = (
                    codec.encode_value(self.serde.dumps_typed(values[channel])) if small else b""
                )
            elif channel in new_versions:
                inline = codec.EMPTY_BLOB  # emptied (or a DeltaChannel between snapshots)
            else:
                # Whatever an earlier checkpoint stored for this version: when this process
                # stored it inline (a consumed trigger's E, mostly), copy it rather than make
                # readers look for a blob.
                inline = seen[1] if seen is not None and seen[0] == token else b""
            versions += [channel_e, token, inline]
        stored = {k: v for k, v in checkpoint.items() if k not in _KEPT_ELSEWHERE}
        record, payload = codec.encode_record(
            parent_id=parent_id,
            checkpoint=self.serde.dumps_typed(stored),
            metadata=None
            if codec.metadata_in_filters(metadata)
            else self.serde.dumps_typed(metadata),
            metadata_value=metadata,
            versions=versions,
            keyframe=keyframe,
        )
        tokens = {
            versions[i]: (versions[i + 1], versions[i + 2]) for i in range(0, len(versions), 3)
        }
        return record, payload, tokens

    def _parent_record(
        self, thread_id: str, ns_e: bytes, parent_id: str | None
    ) -> codec.Keyframe | None:
        """This process's last record on the thread (its keyframe depth, keyframe member and
        payload), when it is the parent of the one being written."""
        if parent_id is None:
            return None
        last = self.known.last_record(thread_id, ns_e)
        if last is None or last[0] != checkpoint_member(ns_e, escape_part(parent_id)):
            return None
        return last[1]

    def _blobs(
        self,
        thread_id: str,
        parent: tuple[str, bytes, bytes] | None,
        ns_e: bytes,
        values: Mapping[str, Any],
        new_versions: ChannelVersions,
    ) -> tuple[list[bytes], dict[str, StoredList]]:
        """The put script's (field, blob, base, alternative) quads for the changed channels that
        are not inline, and the lists among them by channel."""
        args: list[bytes] = []
        lists: dict[str, StoredList] = {}
        remembered = self.known.lists(thread_id, ns_e)
        for channel, version in new_versions.items():
            if channel not in values or codec.is_small(values[channel]):
                continue  # inline in the record
            name = blob_field(ns_e, channel, version)
            typed = self.serde.dumps_typed(values[channel])
            items = codec.split_list(typed) if type(values[channel]) is list else None
            if items is None:
                args += [name, codec.encode_value(typed), b"", b""]
                continue
            # A list that starts with the last version this process saw stores only its new items,
            # or only refers to them when they are what the parent's tasks wrote.
            known = remembered.get(channel)
            start, base = 0, b""
            if known and known.items == items[: len(known.items)]:
                start, base = len(known.items), known.field
            blob, alternative = self.known.list_blob(
                parent, channel, name, base, start, items[start:]
            )
            args += [name, blob, base, alternative]
            lists[channel] = StoredList(name, items)
        return args, lists

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> Op[None]:
        thread_id = thread_id_of(config)
        keys = self.keys(thread_id)
        ns = config["configurable"].get("checkpoint_ns", "") or ""
        checkpoint_id = config["configurable"]["checkpoint_id"]
        typed_writes = [
            (WRITES_IDX_MAP.get(channel, i), channel, self.serde.dumps_typed(value))
            for i, (channel, value) in enumerate(writes)
        ]
        frame = codec.encode_writes(task_id, task_path, typed_writes)
        ns_e, cid_e = escape_part(ns), escape_part(checkpoint_id)
        field_name = writes_field(ns_e, cid_e)
        key = (thread_id, ns_e, cid_e)
        rewrites = self.known.note_writes(key, task_id, task_path, frame, typed_writes)
        args = [field_name, self.ttl_ms, thread_id, frame if writes else b"", *rewrites]
        commands = [self._script("put_writes", keys, *args), *self._register(thread_id)]
        reply = (yield Call(commands, "write", thread_id))[0]
        yield from self._reregister(thread_id, reply[1], commands)

    def delete_thread(self, thread_id: str) -> Op[None]:
        thread_id = str(thread_id)
        keys = self.keys(thread_id)
        self.known.forget_thread(thread_id)
        yield Call(
            [
                Command("DEL", (keys.idx, keys.data), (), False),
                Command("ZREM", (self.layout.registry,), (thread_id,), False),
            ],
            "write",
            thread_id,
        )

    def delete_for_runs(self, run_ids: Sequence[str]) -> Op[None]:
        """Delete the runs' checkpoints: the run index names the threads they wrote to, so the
        cost follows the runs, not the number of threads."""
        if not run_ids:
            return
        runs = [str(run) for run in run_ids]
        index = [self.layout.run_index(run) for run in runs]
        replies = yield Call([Command("ZRANGE", (key,), (0, -1), False) for key in index], "admin")
        threads = sorted({codec.text(thread) for reply in replies for thread in reply})
        spelled = [codec.canonical(run) for run in runs]
        for batch in _batches(threads, 64):
            commands = [self._script("delete_runs", self.keys(t), *spelled) for t in batch]
            replies = yield Call(commands, "admin")
            yield from self._unregister_emptied(batch, [r[1] for r in replies])
        self.known.forget_runs(runs)
        yield Call([Command("DEL", (key,), (), False) for key in index], "admin")

    def prune(self, thread_ids: Sequence[str], strategy: str) -> Op[None]:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        threads = [str(t) for t in thread_ids]
        for batch in _batches(threads, 64):
            if strategy == "delete":
                for thread_id in batch:
                    yield from self.delete_thread(thread_id)
                continue
            self.known.forget_threads(set(batch))
            replies = yield Call(
                [self._script("prune", self.keys(t), "keep_latest") for t in batch], "admin"
            )
            yield from self._unregister_emptied(batch, [r[1] for r in replies])

    def _unregister_emptied(self, threads: Sequence[str], left: Sequence[int]) -> Op[None]:
        gone = [t for t, n in zip(threads, left, strict=True) if n == 0]
        if gone:
            self.known.forget_threads(set(gone))
            yield Call([Command("ZREM", (self.layout.registry,), tuple(gone), False)], "admin")

    def copy_thread(self, source: str, target: str) -> Op[None]:
        source, target = str(source), str(target)
        members, fields, values = (yield Call([self._script("dump", self.keys(source))], "admin"))[
            0
        ]
        if not members:
            return
        pairs: list[bytes] = []
        for name, value in zip(fields, values, strict=True):
            if value is not None:
                if name[:2] == b"c" + SEP:
                    value = self._retarget(value, source, target)
                pairs += [name, value]
        self.known.forget_thread(target)
        yield from self.restore(target, members, pairs, replace=False, kind="admin")

    def _retarget(self, raw: bytes, source: str, target: str) -> bytes:
        """A copied record whose metadata names the copy where it named the source (as the
        Agent Server's own copy does), so that filtering the copy by thread_id finds it."""
        try:
            spelled = codec.unpack(raw)[7].get(b"thread_id")
        except Exception:
            return raw  # unreadable: copied as it is, and reported as corrupt when read
        if spelled != codec.canonical(source):
            return raw

        def rename(metadata: dict[str, Any]) -> dict[str, Any]:
            return {**metadata, "thread_id": target}

        return codec.with_metadata(raw, self.serde.loads_typed, self.serde.dumps_typed, rename)

    def restore(
        self,
        thread_id: str,
        members: Sequence[bytes],
        pairs: Sequence[bytes],
        *,
        replace: bool,
        kind: Kind = "write",
        register: bool = False,
        removed: Sequence[bytes] = (),
    ) -> Op[None]:
        """Write a thread's members and fields as they are (copy_thread, the fallback tier's
        write-back); ``removed`` fields are deleted first."""
        keys = self.keys(thread_id)
        if not members:
            # Nothing left of the thread: make Redis agree.
            yield Call(
                [
                    Command("DEL", (keys.idx, keys.data), (), False),
                    Command("ZREM", (self.layout.registry,), (thread_id,), False),
                ],
                kind,
                thread_id,
            )
            return
        args = [
            self.ttl_ms,
            thread_id,
            b"1" if replace else b"0",
            len(members),
            *members,
            len(removed),
            *removed,
            *pairs,
        ]
        # The runs of what is written (a write-back, a copy) go into the run index as well.
        runs = {
            codec.record_run_id(pairs[i + 1])
            for i in range(0, len(pairs), 2)
            if pairs[i][:2] == b"c" + SEP
        }
        indexed = [
            command
            for run_id in sorted(r for r in runs if r is not None)
            for command in self._index_runs(thread_id, run_id, force=True)
        ]
        commands = [
            self._script("restore", keys, *args),
            *self._register(thread_id, register),
            *indexed,
        ]
        yield Call(commands, kind, thread_id)

    def set_ttl(self, thread_id: str, mode: str, ttl_ms: int = 0) -> Op[float | None]:
        """Pin, unpin, set or read a thread's TTL; returns seconds left (None: no expiry)."""
        thread_id = str(thread_id)
        keys = self.keys(thread_id)
        reply = (
            yield Call([self._script("ttl", keys, mode, ttl_ms, self.ttl_ms)], "write", thread_id)
        )[0]
        if reply == -2:
            raise KeyError(f"thread {thread_id!r} has no checkpoints")
        left = None if reply < 0 else reply / 1000
        if mode != "get":
            score = float("inf") if left is None else time.time() * 1000 + reply
            self.known.registered(thread_id, score)
            yield Call(
                [Command("ZADD", (self.layout.registry,), (_score(score), thread_id), False)],
                "write",
                thread_id,
            )
        return left

    def limit_history(self, thread_id: str, max_history: int | None) -> Op[int]:
        """Set a thread's own history limit (None: the saver's; 0: keep all) and trim it to
        that now; returns how many checkpoints went."""
        thread_id = str(thread_id)
        if max_history is not None and (type(max_history) is not int or max_history < 0):
            raise ValueError(f"max_history must be an int >= 0 or None, not {max_history!r}")
        own = b"" if max_history is None else str(max_history).encode()
        keys = self.keys(thread_id)
        command = self._script("limit_history", keys, own, self.max_history)
        gone = (yield Call([command], "write", thread_id))[0]
        if gone == -2:
            raise KeyError(f"thread {thread_id!r} has no checkpoints")
        if gone:
            # Pruned records may be the ones later writes would build on.
            self.known.forget_thread(thread_id)
        return int(gone)

    def delta_history(
        self, config: RunnableConfig, channels: Sequence[str]
    ) -> Op[dict[str, DeltaChannelHistory]]:
        if not channels:
            return {}
        thread_id = thread_id_of(config)
        keys = self.keys(thread_id)
        ns = config["configurable"].get("checkpoint_ns", "") or ""
        checkpoint_id = get_checkpoint_id(config)
        command = self._script(
            "history",
            keys,
            escape_part(ns),
            escape_part(checkpoint_id) if checkpoint_id else b"",
            *[escape_part(ch) for ch in channels],
        )
        steps, flat, keyframes = (yield Call([command], "read", thread_id))[0]
        blobs = codec.Blobs(_field_map(flat), keys.data)
        frames = _field_map(keyframes)
        collected: dict[str, list[PendingWrite]] = {ch: [] for ch in channels}
        seeds: dict[str, Any] = {}
        remaining = set(channels)
        ns_e = escape_part(ns)
        for member, raw, writes_raw, keyframe in steps:
            record = codec.Record(raw, self._where(keys, member), frames.get(keyframe or b""))
            here = self._values(record, ns_e, blobs, remaining)
            for write in reversed(self._pending_writes(keys, member, writes_raw)):
                if write[1] in remaining:
                    collected[write[1]].append(write)
            for channel, value in here.items():
                seeds[channel] = value
                remaining.discard(channel)
            if not remaining:
                break
        result: dict[str, DeltaChannelHistory] = {}
        for channel in channels:
            entry: DeltaChannelHistory = {"writes": list(reversed(collected[channel]))}
            if channel in seeds:
                entry["seed"] = seeds[channel]
            result[channel] = entry
        return result


def _child_keyframe(parent: codec.Keyframe | None) -> codec.Keyframe | None:
    """What the child of a record this process wrote is compressed against: that record's
    keyframe (or the record itself), while it is at most KEYFRAME_EVERY - 1 parents up."""
    if parent is None or parent.depth + 1 >= codec.KEYFRAME_EVERY:
        return None
    return codec.Keyframe(parent.depth + 1, parent.member, parent.payload)


def _field_map(flat: Sequence[bytes]) -> dict[bytes, bytes | None]:
    return {flat[i]: (flat[i + 1] or None) for i in range(0, len(flat), 2)}


def _score(score: float) -> str:
    return "+inf" if score == float("inf") else f"{score:.0f}"


def _batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
