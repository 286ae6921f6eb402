"""The fallback journal: what the tier takes during an outage survives the process.

The file format and the segment ownership are tested on a temporary directory; the saver's use
of it on real redis-server processes, with the application itself killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from redis_checkpoint import (
    AsyncRedisSaver,
    FallbackJournalError,
    RedisSaver,
    RedisUnavailableError,
)
from redis_checkpoint.checkpoint import journal as journal_module
from redis_checkpoint.checkpoint.journal import Delta, Journal, read_segment
from redis_checkpoint.testing import RedisServer
from tests.test_fallback import Clock, breaker, build, cfg, reference_history, stored_history, turn

ROOT = Path(__file__).resolve().parent.parent


def delta(*fields: tuple[bytes, bytes], members: tuple[bytes, ...] = ()) -> Delta:
    out = Delta()
    for member in members:
        out.add_member(member)
    for name, value in fields:
        out.set(name, value)
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.journal"))


# -- the format ---------------------------------------------------------------------------------


def test_records_fold_into_what_each_thread_owes(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "rc")
    journal.append("a", delta((b"c1", b"\x00one"), members=(b"m1",)))
    journal.append("b", delta((b"c1", b"bee")))
    later = delta((b"c2", b"two"), members=(b"m2",))
    later.remove(b"c1")
    journal.append("a", later)
    journal.append("c", delta((b"x", b"y")))
    journal.written_back(["c"])
    assert journal.owed == {"a", "b"}
    segment = read_segment(journal.path)
    assert segment.key_prefix == "rc" and segment.bad_bytes == 0
    assert segment.owed.keys() == {"a", "b"}
    assert segment.owed["a"].members == {b"m1", b"m2"}
    assert segment.owed["a"].fields == {b"c2": b"two"}
    assert segment.owed["a"].removed == {b"c1"}
    assert segment.owed["b"].fields == {b"c1": b"bee"}


def test_a_cleared_thread_keeps_only_what_came_after(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "rc")
    journal.append("a", delta((b"old", b"1")))
    cleared = Delta()
    cleared.clear()
    journal.append("a", cleared)
    journal.append("a", delta((b"new", b"2")))
    owed = read_segment(journal.path).owed["a"]
    assert owed.cleared and owed.fields == {b"new": b"2"}


def test_every_torn_tail_reads_as_the_records_before_it(tmp_path: Path) -> None:
    """A process killed inside an append leaves a partial record: it was never acknowledged,
    and everything before it still reads."""
    journal = Journal(tmp_path, "rc")
    ends = []
    for i in range(4):
        journal.append(f"t{i}", delta((b"f", bytes([i]) * 50)))
        ends.append(os.path.getsize(journal.path))
    data = journal.path.read_bytes()
    torn = tmp_path / "torn"
    header = ends[0] - (ends[1] - ends[0])
    for cut in range(header, len(data) + 1):
        torn.write_bytes(data[:cut])
        segment = read_segment(torn)
        complete = sum(end <= cut for end in ends)
        assert sorted(segment.owed) == [f"t{i}" for i in range(complete)]
        assert segment.good_bytes + segment.bad_bytes == cut


def test_a_damaged_record_ends_the_readable_part(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "rc")
    journal.append("a", delta((b"f", b"first")))
    journal.append("b", delta((b"f", b"second")))
    data = bytearray(journal.path.read_bytes())
    data[-3] ^= 0xFF  # inside b's record: its crc no longer matches
    journal.path.write_bytes(bytes(data))
    segment = read_segment(journal.path)
    assert list(segment.owed) == ["a"] and segment.bad_bytes > 0


def test_a_file_that_is_no_journal_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_bytes(b"not a journal at all")
    with pytest.raises(ValueError, match="not a redis_checkpoint journal"):
        read_segment(other)


# -- ownership ----------------------------------------------------------------------------------


def test_a_live_segment_is_not_adopted_and_a_closed_one_is(tmp_path: Path) -> None:
    first = Journal(tmp_path, "rc")
    first.append("a", delta((b"f", b"v")))
    assert Journal(tmp_path, "rc").adopt() == {}  # its owner holds the lock
    first.close()
    assert segments(tmp_path) == [first.path]  # still owes "a": kept
    second = Journal(tmp_path, "rc")
    adopted = second.adopt()
    assert adopted.keys() == {"a"} and adopted["a"].fields == {b"f": b"v"}
    # Copied into the adopter's own segment before the old one went.
    assert segments(tmp_path) == [second.path]
    assert read_segment(second.path).owed.keys() == {"a"}
    assert second.owed == {"a"}


def test_another_key_prefix_or_a_foreign_file_is_left_alone(tmp_path: Path) -> None:
    other = Journal(tmp_path, "other-prefix")
    other.append("a", delta((b"f", b"v")))
    other.close()
    stray = tmp_path / "stray.journal"
    stray.write_bytes(b"garbage")
    assert Journal(tmp_path, "rc").adopt() == {}
    assert stray.exists() and other.path.exists()
    assert Journal(tmp_path, "other-prefix").adopt().keys() == {"a"}


def test_a_journal_that_owes_nothing_leaves_no_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "rc")
    journal.close()
    assert segments(tmp_path) == []  # never written: never created
    journal = Journal(tmp_path, "rc")
    journal.append("a", delta((b"f", b"v")))
    journal.written_back(["a"])
    journal.close()
    assert segments(tmp_path) == []
    with pytest.raises(ValueError, match="closed"):
        journal.append("b", delta((b"f", b"v")))


def test_reset_cuts_the_segment_back_to_its_header(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "rc")
    journal.append("a", delta((b"f", b"v" * 1000)))
    journal.reset()
    assert read_segment(journal.path).owed == {}
    assert os.path.getsize(journal.path) < 100 and journal.owed == set()


def test_a_long_outage_compacts_the_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 20_000)
    journal = Journal(tmp_path, "rc")
    journal.append("kept", delta((b"f", b"k")))
    for i in range(100):
        journal.append(f"t{i}", delta((b"f", b"x" * 1000)))
        journal.written_back([f"t{i}"])
    assert os.path.getsize(journal.path) < 25_000  # 100 kB written in all
    assert read_segment(journal.path).owed.keys() == {"kept"} and journal.owed == {"kept"}
    journal.close()
    assert Journal(tmp_path, "rc").adopt()["kept"].fields == {b"f": b"k"}


def test_one_fdatasync_serves_every_append_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = []
    real = os.fdatasync
    monkeypatch.setattr(journal_module.os, "fdatasync", lambda fd: syncs.append(real(fd)))
    journal = Journal(tmp_path, "rc")
    for name in ("a", "b", "c"):
        journal.append(name, delta((b"f", b"v")), sync=False)
    journal.sync()
    journal.sync()  # nothing new: no second fdatasync
    assert len(syncs) == 1
    journal.append("d", delta((b"f", b"v")))
    assert len(syncs) == 2 and read_segment(journal.path).owed.keys() == {"a", "b", "c", "d"}


def test_after_a_failed_fdatasync_every_append_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may have dropped the pages it could not write: nothing later is acknowledged
    as durable on that journal."""

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    journal = Journal(tmp_path, "rc")
    journal.append("a", delta((b"f", b"v")))
    monkeypatch.setattr(journal_module.os, "fdatasync", failing)
    with pytest.raises(FallbackJournalError, match=r"fdatasync failed: .*Input/output error"):
        journal.append("b", delta((b"f", b"v")))
    monkeypatch.undo()
    with pytest.raises(FallbackJournalError, match="an earlier fdatasync failed"):
        journal.append("c", delta((b"f", b"v")))


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_a_killed_owner_and_a_killed_adopter_lose_nothing(tmp_path: Path) -> None:
    owner = """
        import os, sys
        from redis_checkpoint.checkpoint.journal import Delta, Journal
        j = Journal(sys.argv[1], "rc")
        d = Delta(); d.set(b"f", b"from the dead")
        j.append("a", d)
        os.kill(os.getpid(), 9)
    """
    adopter = """
        import os, sys
        from redis_checkpoint.checkpoint.journal import Journal
        print(sorted(Journal(sys.argv[1], "rc").adopt()))
        os.kill(os.getpid(), 9)
    """
    assert _run(owner, str(tmp_path)).returncode == -signal.SIGKILL
    result = _run(adopter, str(tmp_path))
    assert result.returncode == -signal.SIGKILL and result.stdout.strip() == "['a']"
    assert len(segments(tmp_path)) == 1  # the adopter's copy; the owner's segment is gone
    assert Journal(tmp_path, "rc").adopt()["a"].fields == {b"f": b"from the dead"}


def test_a_disk_that_refuses_the_append_fails_the_call_and_keeps_the_segment(
    tmp_path: Path,
) -> None:
    """A real write failure: the file size limit (RLIMIT_FSIZE) makes the append get EFBIG."""
    code = """
        import resource, signal, sys
        from redis_checkpoint import FallbackJournalError
        from redis_checkpoint.checkpoint.journal import Delta, Journal, read_segment
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        j = Journal(sys.argv[1], "rc")
        small = Delta(); small.set(b"f", b"fits")
        j.append("a", small)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        big = Delta(); big.set(b"f", b"x" * 10000)
        try:
            j.append("b", big)
        except FallbackJournalError as exc:
            print("refused:", exc)
        j.append("c", small)
        print(sorted(read_segment(j.path).owed), sorted(j.owed))
    """
    result = _run(code, str(tmp_path))
    assert result.returncode == 0, result.stderr
    refused, owed = result.stdout.strip().splitlines()
    assert refused.startswith("refused: the fallback journal ") and "File too large" in refused
    assert owed == "['a', 'c'] ['a', 'c']"


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FallbackJournalError, match="cannot create the fallback journal"):
        RedisSaver(redis.Redis(port=1), fallback_journal=blocker / "j")


# -- the saver ----------------------------------------------------------------------------------


def test_outage_writes_are_journaled_and_closing_removes_the_journal(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="jr", breaker=breaker(Clock()), fallback_journal=tmp_path
    ) as saver:
        graph = build().compile(checkpointer=saver)
        turn(graph, "a", "before")
        assert segments(tmp_path) == []  # nothing journaled while Redis answers
        fresh_redis.kill()
        turn(graph, "a", "during")
        turn(graph, "b", "new during")
        assert saver.journal is not None
        assert read_segment(saver.journal.path).owed.keys() == {"a", "b"}
        fresh_redis.restart()
    assert segments(tmp_path) == []
    expected = reference_history({"a": ["before", "during"], "b": ["new during"]})
    assert stored_history(fresh_redis.url, "jr", ["a", "b"]) == expected


APP = """
    import sys
    from redis_checkpoint import RedisSaver
    from tests.test_fallback import build, turn
    url, journal = sys.argv[1], sys.argv[2]
    with RedisSaver.from_conn_string(url, key_prefix="jk", fallback_journal=journal) as saver:
        graph = build().compile(checkpointer=saver)
        for line in sys.stdin:
            thread_id, text = line.split(maxsplit=1)
            turn(graph, thread_id, text.strip())
            print("ok", flush=True)
"""


def test_the_app_killed_during_an_outage_loses_no_acknowledged_turn(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    """kill -9 of the application while it serves from memory; Redis and then the application
    come back, and the new saver writes back every turn the dead one acknowledged."""
    app = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(APP), fresh_redis.url, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert app.stdin is not None and app.stdout is not None
    turns = {"a": ["before", "during 1", "during 2"], "b": ["during 1"], "c": ["before"]}

    def say(thread_id: str, text: str) -> None:
        assert app.stdin is not None and app.stdout is not None
        app.stdin.write(f"{thread_id} {text}\n")
        app.stdin.flush()
        assert app.stdout.readline() == "ok\n"

    try:
        say("a", "before")
        say("c", "before")
        fresh_redis.kill()
        say("a", "during 1")
        say("b", "during 1")
        say("a", "during 2")
    finally:
        app.kill()
        app.wait()
    assert len(segments(tmp_path)) == 1
    fresh_redis.restart()
    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="jk", fallback_journal=tmp_path
    ) as saver:
        assert saver.write_backs == 2  # at setup: a and b
        assert saver.memory is not None and saver.memory.pending == 0
    assert segments(tmp_path) == []
    assert stored_history(fresh_redis.url, "jk", list(turns)) == reference_history(turns)


async def test_async_saver_adopts_and_writes_back_on_setup(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    crashed = Journal(tmp_path, "ja")
    threads = ["x", "y"]
    async with AsyncRedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="ja", breaker=breaker(Clock())
    ) as saver:
        graph = build().compile(checkpointer=saver)
        await graph.ainvoke({"messages": [("user", "x 0")]}, cfg("x"))
        await asyncio.to_thread(fresh_redis.kill)
        for t in threads:
            await graph.ainvoke({"messages": [("user", f"{t} 1")]}, cfg(t))
        assert saver.memory is not None
        # What this saver owes, journaled as a crashed process with a journal would have.
        for t in threads:
            taken = saver.memory.take(t)
            assert isinstance(taken, Delta)
            crashed.append(t, taken)
            saver.memory.written_back(t, ok=True)
        await asyncio.to_thread(fresh_redis.restart)
    crashed.close()
    async with AsyncRedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="ja", fallback_journal=tmp_path
    ) as saver:
        assert saver.write_backs == 2
    expected = reference_history({"x": ["x 0", "x 1"], "y": ["y 1"]})
    assert stored_history(fresh_redis.url, "ja", threads) == expected


def test_a_journal_that_cannot_be_written_fails_the_outage_call(
    fresh_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call is not acknowledged, the error names the journal; the turn is still owed and
    written back by this process."""

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="jf", breaker=breaker(Clock()), fallback_journal=tmp_path
    ) as saver:
        graph = build().compile(checkpointer=saver)
        turn(graph, "a", "before")
        fresh_redis.kill()
        monkeypatch.setattr(journal_module.os, "fdatasync", full_disk)
        with pytest.raises(FallbackJournalError, match="No space left on device"):
            turn(graph, "a", "during")
        monkeypatch.undo()
        assert saver.memory is not None and saver.memory.owed_threads() == ["a"]
        fresh_redis.restart()
    history = stored_history(fresh_redis.url, "jf", ["a"])["a"]
    before = reference_history({"a": ["before"]})["a"]
    # The failed turn's first checkpoint (its input) was owed all along: it is there too.
    assert history == [before[0], *before]


def test_an_adopted_thread_waits_for_redis_instead_of_forking(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    """A new process, Redis still away: a thread it adopted holds only the dead process's
    outage changes, so a turn on it is a clear error; other threads go on from memory."""
    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="jw", breaker=breaker(Clock()), close_timeout=0
    ) as dead:
        graph = build().compile(checkpointer=dead)
        turn(graph, "x", "x 0")
        fresh_redis.kill()
        turn(graph, "x", "x 1")
        crashed = Journal(tmp_path, "jw")
        assert dead.memory is not None
        taken = dead.memory.take("x")
        assert isinstance(taken, Delta)
        crashed.append("x", taken)
        dead.memory.written_back("x", ok=True)
        crashed.close()  # as if killed: the segment stays, unlocked
    clock = Clock()
    saver = RedisSaver(
        redis.Redis.from_url(fresh_redis.url),
        breaker=breaker(clock),
        fallback_journal=tmp_path,
        key_prefix="jw",
    )
    saver.setup()
    graph = build().compile(checkpointer=saver)
    with pytest.raises(RedisUnavailableError, match="adopted from the fallback journal"):
        turn(graph, "x", "x 2")
    turn(graph, "y", "y 0")
    fresh_redis.restart()
    clock.now += 5  # past the breaker's recovery timeout
    turn(graph, "x", "x 2")
    saver.close()
    expected = reference_history({"x": ["x 0", "x 1", "x 2"], "y": ["y 0"]})
    assert stored_history(fresh_redis.url, "jw", ["x", "y"]) == expected
