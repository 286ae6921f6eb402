"""The journal's fdatasync and the event loop: an async outage write is acknowledged only once
its record is on disk, but the fdatasync runs in a worker thread, so other coroutines go on
meanwhile and the writes that queue behind it share the next one.

fdatasync is replaced by a gate the test opens: while it is closed, a write waits for its
acknowledgement, and the event loop must still run the test's own coroutines.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from redis_checkpoint import AsyncRedisSaver, FallbackJournalError, RedisSaver
from redis_checkpoint.checkpoint import journal as journal_module
from redis_checkpoint.checkpoint.journal import Delta, Journal, read_segment
from redis_checkpoint.steps import SyncJournal

#: Long enough never to be reached when the code is right; a bound when it is not.
GATE_TIMEOUT = 30.0


@dataclass
class Gate:
    """Stands in for os.fdatasync: notes the calling thread, waits to be opened, then syncs."""

    opened: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    threads: list[int] = field(default_factory=list)
    error: OSError | None = None

    def __call__(self, fd: int) -> None:
        self.threads.append(threading.get_ident())
        self.entered.set()
        if not self.opened.wait(GATE_TIMEOUT):
            raise AssertionError("the fdatasync gate was never opened")
        if self.error is not None:
            raise self.error
        REAL_FDATASYNC(fd)


REAL_FDATASYNC = os.fdatasync


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate()
    monkeypatch.setattr(journal_module.os, "fdatasync", gate)
    try:
        yield gate
    finally:
        gate.opened.set()  # never leave a worker thread waiting


def put_args(thread_id: str) -> tuple[Any, ...]:
    cp = generate_checkpoint(channel_values={"v": thread_id}, channel_versions={"v": 1})
    return ({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}, cp, {}, {"v": 1})


async def until(condition: Any) -> None:
    """Let the event loop run until ``condition()`` holds (bounded by GATE_TIMEOUT)."""
    for _ in range(int(GATE_TIMEOUT / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held: the event loop was blocked?")


def journaled(directory: Path, key_prefix: str) -> dict[str, Any]:
    """Options of a saver started on a dead server, journaling to ``directory``."""
    return {
        "require_redis": False,
        "fallback_journal": directory,
        "key_prefix": key_prefix,
        "close_timeout": 0,
    }


async def three_writes_at_the_gate(saver: AsyncRedisSaver, gate: Gate) -> list[asyncio.Task[Any]]:
    """Three outage writes, journaled, all waiting for the fdatasync the gate holds."""
    tasks = [asyncio.create_task(saver.aput(*put_args(f"t{i}"))) for i in range(3)]
    await until(gate.entered.is_set)
    await until(lambda: saver.journal is not None and len(saver.journal.owed) == 3)
    return tasks


async def test_async_outage_writes_wait_for_an_fdatasync_off_the_loop(
    dead_url: str, tmp_path: Path, gate: Gate
) -> None:
    async with AsyncRedisSaver.from_conn_string(
        dead_url, **journaled(tmp_path, "offloop")
    ) as saver:
        journal = saver.journal
        assert journal is not None
        loop_thread = threading.get_ident()
        first = asyncio.create_task(saver.aput(*put_args("t0")))
        # The loop runs this coroutine while the fdatasync is held: it is not on the loop.
        await until(gate.entered.is_set)
        assert len(gate.threads) == 1 and gate.threads[0] != loop_thread
        # Reads are answered meanwhile; the write is not acknowledged before its fdatasync.
        assert await saver.aget_tuple({"configurable": {"thread_id": "elsewhere"}}) is None
        assert not first.done()
        # Writes made meanwhile are journaled and wait for the next fdatasync.
        later = [asyncio.create_task(saver.aput(*put_args(f"t{i}"))) for i in range(1, 6)]
        await until(lambda: len(journal.owed) == 6)
        await asyncio.sleep(0)
        assert not any(task.done() for task in [first, *later])
        gate.opened.set()
        configs = await asyncio.gather(first, *later)
        assert [c["configurable"]["thread_id"] for c in configs] == [f"t{i}" for i in range(6)]
        # One fdatasync for the first write, one shared by the five queued behind it.
        assert len(gate.threads) == 2 and loop_thread not in gate.threads
        assert not journal.unsynced(journal.appended)
        assert set(read_segment(journal.path).owed) == {f"t{i}" for i in range(6)}


async def test_a_cancelled_write_leaves_the_others_waiting_for_the_fdatasync(
    dead_url: str, tmp_path: Path, gate: Gate
) -> None:
    async with AsyncRedisSaver.from_conn_string(
        dead_url, **journaled(tmp_path, "offcancel")
    ) as saver:
        tasks = await three_writes_at_the_gate(saver, gate)
        tasks[1].cancel()
        gate.opened.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        assert [d["configurable"]["thread_id"] for d in (done[0], done[2])] == ["t0", "t2"]


async def test_a_failed_fdatasync_fails_every_write_waiting_for_it(
    dead_url: str, tmp_path: Path, gate: Gate
) -> None:
    gate.error = OSError(5, "Input/output error")
    async with AsyncRedisSaver.from_conn_string(
        dead_url, **journaled(tmp_path, "offfail")
    ) as saver:
        tasks = await three_writes_at_the_gate(saver, gate)
        gate.opened.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, FallbackJournalError) for o in outcomes), outcomes
        assert "Input/output error" in str(outcomes[0])
        # Not acknowledged, but still owed: this process writes it back if it lives.
        assert saver.memory is not None and saver.memory.owed_threads() == ["t0", "t1", "t2"]
        with pytest.raises(FallbackJournalError, match="an earlier fdatasync failed"):
            await saver.aput(*put_args("t3"))


def test_the_sync_saver_syncs_in_the_calling_thread_before_it_returns(
    dead_url: str, tmp_path: Path, gate: Gate
) -> None:
    with RedisSaver.from_conn_string(dead_url, **journaled(tmp_path, "offsync")) as saver:
        returned = threading.Event()
        caller: list[int] = []

        def put() -> None:
            caller.append(threading.get_ident())
            saver.put(*put_args("t0"))
            returned.set()

        worker = threading.Thread(target=put)
        worker.start()
        assert gate.entered.wait(GATE_TIMEOUT)
        assert not returned.is_set()  # not acknowledged before the fdatasync
        gate.opened.set()
        worker.join(GATE_TIMEOUT)
        assert returned.is_set() and gate.threads == caller
        assert saver.journal is not None and not saver.journal.unsynced(saver.journal.appended)


def test_sync_journal_syncs_up_to_a_position_once(tmp_path: Path, gate: Gate) -> None:
    gate.opened.set()
    journal = Journal(tmp_path, "rc")
    first = Delta()
    first.set(b"f", b"one")
    journal.append("a", first, sync=False)
    upto = journal.appended
    assert journal.unsynced(upto)
    SyncJournal(journal, upto).run()
    assert not journal.unsynced(upto) and len(gate.threads) == 1
    SyncJournal(journal, upto).run()  # already on disk: no second fdatasync
    assert len(gate.threads) == 1
    journal.append("b", first, sync=False)
    assert journal.unsynced(journal.appended) and not journal.unsynced(upto)
    journal.close()
