"""Part 5 of ``checkpointer.py``: Redis bytes per turn of one long conversation on our saver,
against the bytes of the messages each turn added, with InMemorySaver's stored bytes as the
naive reference, and where the bytes are at the end (every key of the private server). The
same conversation is run again with the LangGraph Agent Server's channel versions (it replaces
the saver's ``get_next_version`` with 32-digit ones), on a server of its own.

Part 7: the same conversation on ours and on each peer on Redis, the key bytes after every turn
(``benchmarks/plots.py`` draws them per turn)."""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from langgraph.checkpoint.memory import InMemorySaver

from benchmarks.report import DASH, LE, TIMES, Report, progress, table
from benchmarks.workload import (
    OURS_KEY,
    Entry,
    build_graph,
    first_line,
    module_server_target,
    run_turns,
    sync_peers,
    thread_config,
    turn_input,
)
from redis_checkpoint import RedisSaver
from redis_checkpoint.testing import RedisServer

TARGET_BYTES_RATIO = 5.0  # printed next to the measured values; never asserted


def inmemory_bytes(saver: InMemorySaver, thread_id: str) -> int:
    total = 0
    for per_ns in saver.storage.get(thread_id, {}).values():
        for checkpoint, meta, _parent in per_ns.values():
            total += len(checkpoint[1]) + len(meta[1])
    for key, blob in saver.blobs.items():
        if key[0] == thread_id:
            total += len(blob[1])
    for key, writes in saver.writes.items():
        if key[0] == thread_id:
            total += sum(len(w[2][1]) for w in writes.values())
    return total


def key_bytes(client: redis.Redis) -> tuple[int, int]:
    """(number of keys, sum of MEMORY USAGE) over the whole private server."""
    keys = list(client.scan_iter(count=1000))
    if not keys:
        return 0, 0
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return len(keys), sum(int(v or 0) for v in pipe.execute())


def key_breakdown(client: redis.Redis) -> list[dict[str, Any]]:
    """Every key on the private server: type, MEMORY USAGE, and for hashes the fields grouped
    by their first NUL-separated part (field/value bytes), to show where the bytes go."""
    out: list[dict[str, Any]] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        info: dict[str, Any] = {
            "key": key.decode("utf-8", "backslashreplace"),
            "type": kind,
            "memory_usage": int(client.memory_usage(key, samples=0) or 0),
        }
        if kind == "hash":
            groups: dict[str, list[int]] = {}
            for name, value in client.hscan_iter(key, count=1000):
                prefix = name.split(b"\x00", 1)[0][:12].decode("utf-8", "backslashreplace")
                group = groups.setdefault(prefix, [0, 0, 0])
                group[0] += 1
                group[1] += len(name)
                group[2] += len(value)
            info["elements"] = sum(g[0] for g in groups.values())
            info["field_groups"] = {
                k: {"fields": g[0], "field_bytes": g[1], "value_bytes": g[2]}
                for k, g in sorted(groups.items())
            }
        elif kind == "zset":
            members = [m for m, _ in client.zscan_iter(key, count=1000)]
            info["elements"] = len(members)
            info["member_bytes"] = sum(len(m) for m in members)
        elif kind == "string":
            info["elements"] = 1
            info["value_bytes"] = int(client.strlen(key))
        elif kind == "list":
            info["elements"] = int(client.llen(key))
        elif kind == "set":
            info["elements"] = int(client.scard(key))
        out.append(info)
    out.sort(key=lambda item: -item["memory_usage"])
    return out


def breakdown_table(keys: list[dict[str, Any]], turns: int) -> str:
    rows = []
    for info in keys[:8]:
        detail = ""
        if "field_groups" in info:
            detail = "; ".join(
                f"`{name}`: {g['fields']:,} fields, {g['value_bytes']:,} B values "
                f"({(g['field_bytes'] + g['value_bytes']) / turns:,.0f} B/turn)"
                for name, g in info["field_groups"].items()
            )
        elif "member_bytes" in info:
            detail = f"{info['member_bytes']:,} B of members"
        elif "value_bytes" in info:
            detail = f"{info['value_bytes']:,} B value"
        key = info["key"].replace("|", "\\|")
        if len(key) > 60:
            key = key[:57] + "..."
        rows.append(
            [
                f"`{key}`",
                info["type"],
                f"{info['memory_usage']:,}",
                f"{info.get('elements', 0):,}",
                detail,
            ]
        )
    return table(["key", "type", "MEMORY USAGE B", "elements", "breakdown"], rows, [2, 3])


def agent_server_versions(current: str | int | None, channel: None) -> str:
    """The channel versions the Agent Server gives a custom checkpointer (those of
    InMemorySaver: a 32-digit counter and a random fraction)."""
    return InMemorySaver.get_next_version(None, current, channel)  # type: ignore[arg-type]


def conversation_bytes(turns: int, thread: str, versions: bool) -> tuple[int, int]:
    """(used_memory, sum of MEMORY USAGE over the keys) a ``turns``-turn conversation adds on
    a fresh private server, with the Agent Server's channel versions when ``versions``."""
    with RedisServer() as srv, RedisSaver.from_conn_string(srv.url) as saver:
        if versions:
            saver.get_next_version = agent_server_versions  # type: ignore[method-assign]
        graph = build_graph(saver)
        run_turns(graph, f"{thread}-warmup", 998, range(2))
        client = srv.client()
        used, keys = int(client.info("memory")["used_memory"]), key_bytes(client)[1]
        run_turns(graph, thread, 0, range(1, turns + 1))
        used = int(client.info("memory")["used_memory"]) - used
        keys = key_bytes(client)[1] - keys
        client.close()
    return used, keys


def phase_growth(turns: int, run_id: str, report: Report) -> None:
    marks = sorted({m for m in (10, 50, 100) if m < turns} | {turns})
    thread = f"bench-{run_id}-growth"
    msg_content: list[int] = []
    msg_json: list[int] = []
    redis_used: dict[int, int] = {}
    client_buffers: dict[int, int] = {}  # mem_clients_normal: part of used_memory, not data
    redis_keys: dict[int, tuple[int, int]] = {}
    mem_bytes: dict[int, int] = {}
    total_used: tuple[int, int] = (0, 0)

    with RedisServer() as srv:
        client = srv.client()
        with RedisSaver.from_conn_string(srv.url) as saver:
            graph = build_graph(saver)
            # Warm-up on another thread (loads scripts, opens connections) before the baseline.
            run_turns(graph, f"{thread}-warmup", 998, range(2))
            memory0 = client.info("memory")
            used0 = int(memory0["used_memory"])
            redis_used[0] = used0
            client_buffers[0] = int(memory0["mem_clients_normal"])
            redis_keys[0] = key_bytes(client)
            config = thread_config(thread)
            for turn in range(1, turns + 1):
                state = graph.invoke(turn_input(0, turn), config)
                human, ai = state["messages"][-2:]
                msg_content.append(len(str(human.content).encode()) + len(str(ai.content).encode()))
                msg_json.append(len(human.model_dump_json()) + len(ai.model_dump_json()))
                if turn in marks:
                    memory = client.info("memory")
                    redis_used[turn] = int(memory["used_memory"])
                    client_buffers[turn] = int(memory["mem_clients_normal"])
                    redis_keys[turn] = key_bytes(client)
                    progress(
                        f"bytes RedisSaver: turn {turn}/{turns}, used_memory "
                        f"{redis_used[turn] - used0:+,} B since start"
                    )
            total_used = (used0, redis_used[turns])
            keys = key_breakdown(client)
        client.close()

    reference = InMemorySaver()
    ref_graph = build_graph(reference)
    mem_bytes[0] = 0
    for turn in range(1, turns + 1):
        ref_graph.invoke(turn_input(0, turn), thread_config(thread))
        if turn in marks:
            mem_bytes[turn] = inmemory_bytes(reference, thread)
    progress(f"bytes InMemorySaver reference: {turns} turns done")

    rows = []
    windows = []
    prev = 0
    for mark in marks:
        n = mark - prev
        content = sum(msg_content[prev:mark]) / n
        as_json = sum(msg_json[prev:mark]) / n
        used = (redis_used[mark] - redis_used[prev]) / n
        keyb = (redis_keys[mark][1] - redis_keys[prev][1]) / n
        mem = (mem_bytes[mark] - mem_bytes[prev]) / n
        windows.append(
            {
                "turns": [prev + 1, mark],
                "message_content_bytes_per_turn": content,
                "message_json_bytes_per_turn": as_json,
                "redis_used_memory_per_turn": used,
                "redis_key_bytes_per_turn": keyb,
                "redis_keys_at_end": redis_keys[mark][0],
                "inmemory_bytes_per_turn": mem,
                "redis_ratio_to_content": used / content,
                "redis_ratio_to_json": used / as_json,
                "inmemory_ratio_to_content": mem / content,
            }
        )
        rows.append(
            [
                f"{prev + 1}{DASH}{mark}",
                f"{content:,.0f}",
                f"{as_json:,.0f}",
                f"{used:,.0f}",
                f"{used / content:.2f}{TIMES}",
                f"{used / as_json:.2f}{TIMES}",
                f"{keyb:,.0f}",
                f"{redis_keys[mark][0]:,}",
                f"{mem:,.0f}",
                f"{mem / content:.1f}{TIMES}",
            ]
        )
        prev = mark
    content_total = sum(msg_content)
    progress(f"bytes RedisSaver with the Agent Server's versions: {turns} turns")
    server_added, server_keys = conversation_bytes(turns, thread, versions=True)
    ours_added = total_used[1] - total_used[0]
    ours_keys = redis_keys[turns][1] - redis_keys[0][1]
    server_ratio, ours_ratio = server_added / content_total, ours_added / content_total
    first, last = windows[0], windows[-1]
    flat = last["redis_used_memory_per_turn"] / max(first["redis_used_memory_per_turn"], 1)
    mem_flat = last["inmemory_bytes_per_turn"] / max(first["inmemory_bytes_per_turn"], 1)
    key_flat = last["redis_key_bytes_per_turn"] / max(first["redis_key_bytes_per_turn"], 1)
    headers = [
        "turns",
        "msg content B/turn",
        "msg JSON B/turn",
        "Redis used_memory B/turn",
        f"{TIMES} content",
        f"{TIMES} JSON",
        "Redis key bytes B/turn",
        "keys",
        "InMemorySaver B/turn",
        f"{TIMES} content",
    ]
    label = "RedisSaver"
    body = (
        f"One {turns}-turn conversation of {label} on a fresh private redis-server "
        f"(`INFO memory` used_memory sampled after turns {', '.join(map(str, marks))}; "
        "baseline taken after 2 warm-up turns on another thread). Messages = the turn's new "
        "HumanMessage + AIMessage: UTF-8 content bytes and `model_dump_json()` bytes. "
        "Redis key bytes = sum of `MEMORY USAGE` over all keys. InMemorySaver = bytes of its "
        "stored serialized checkpoints, metadata, blobs and writes for the same conversation.\n\n"
        + table(headers, rows, right=list(range(1, 10)))
        + f"\n\nRedis used_memory: {total_used[0]:,} B before, {total_used[1]:,} B after "
        f"({total_used[1] - total_used[0]:+,} B for {turns} turns). "
        f"Target: Redis used_memory per turn {LE} {TARGET_BYTES_RATIO:.0f}{TIMES} the content "
        f"bytes, and flat. Measured: {last['redis_ratio_to_content']:.2f}{TIMES} in the last "
        f"window (highest window {max(w['redis_ratio_to_content'] for w in windows):.2f}"
        f"{TIMES}); last/first window bytes per turn: Redis used_memory {flat:.2f}{TIMES}, "
        f"Redis key bytes {key_flat:.2f}{TIMES} (used_memory moves with allocator and encoding "
        f"changes; key bytes are the steadier measure), InMemorySaver {mem_flat:.2f}{TIMES}. "
        f"Client connection buffers (`mem_clients_normal`, counted in used_memory but not data) "
        f"changed by {client_buffers[marks[0]] - client_buffers[0]:+,} B over turns 1{DASH}"
        f"{marks[0]} and {client_buffers[turns] - client_buffers[0]:+,} B over all {turns}.\n\n"
        f"Under the LangGraph Agent Server's channel versions (32 digits and a random fraction, "
        f"as it gives a custom checkpointer), the same {turns} turns on a server of their own "
        f"added {server_added:,} B of used_memory: {server_ratio:.2f}{TIMES} the content bytes, "
        f"against {ours_ratio:.2f}{TIMES} with the saver's own versions (target {LE} "
        f"{TARGET_BYTES_RATIO:.0f}{TIMES}); in key bytes, {server_keys / content_total:.2f}"
        f"{TIMES} against {ours_keys / content_total:.2f}{TIMES}.\n\n"
        f"Where the bytes are after turn {turns} (all keys of the server, largest first; the "
        "2-turn warm-up thread is included; hash fields grouped by their first NUL-separated "
        "part, B/turn = field + value bytes / turns):\n\n" + breakdown_table(keys, turns)
    )
    report.add(f"5. Redis bytes per turn ({label}, {turns} turns)", body)
    report.data["growth"] = {
        "turns": turns,
        "marks": marks,
        "windows": windows,
        "used_memory_before": total_used[0],
        "used_memory_after": total_used[1],
        "client_buffers_bytes": {str(k): v for k, v in sorted(client_buffers.items())},
        "last_over_first_window": {
            "redis_used_memory": flat,
            "redis_key_bytes": key_flat,
            "inmemory": mem_flat,
        },
        "keys_at_end": keys,
        "target_ratio_to_content": TARGET_BYTES_RATIO,
        "agent_server_versions": {
            "used_memory_added": server_added,
            "ratio_to_content": server_ratio,
            "ours_used_memory_added": ours_added,
            "ours_ratio_to_content": ours_ratio,
            "key_bytes_added": server_keys,
            "ours_key_bytes_added": ours_keys,
        },
    }


# --------------------------------------------------------------------------------------------
# 7. the same conversation on ours and the peers on Redis
# --------------------------------------------------------------------------------------------


def bytes_after_each_turn(
    saver: Any, client: redis.Redis, thread: str, turns: int
) -> dict[str, list[int]]:
    """Key bytes (sum of MEMORY USAGE) and used_memory the conversation added, before turn 1
    (0) and after each turn, and the UTF-8 bytes of the messages each turn added. The savers
    run one after another, so what the server gains during a run is that saver's alone."""
    graph = build_graph(saver)
    run_turns(graph, f"{thread}-warmup", 998, range(2))  # scripts, indexes, connections
    keys0, used0 = key_bytes(client)[1], int(client.info("memory")["used_memory"])
    added: dict[str, list[int]] = {"key_bytes": [0], "used_memory": [0], "content_bytes": []}
    config = thread_config(thread)
    for turn in range(1, turns + 1):
        state = graph.invoke(turn_input(0, turn), config)
        human, ai = state["messages"][-2:]
        added["content_bytes"].append(
            len(str(human.content).encode()) + len(str(ai.content).encode())
        )
        added["key_bytes"].append(key_bytes(client)[1] - keys0)
        added["used_memory"].append(int(client.info("memory")["used_memory"]) - used0)
    return added


def phase_growth_by_saver(turns: int, run_id: str, report: Report) -> None:
    """One ``turns``-turn conversation on ours and on each peer on Redis (ValkeySaver and
    plainredis on a private redis-server, langgraph-checkpoint-redis on a private Valkey with
    the search modules), the bytes measured after every turn."""
    thread = f"bench-{run_id}-by-saver"
    window = min(10, turns)
    savers: dict[str, Any] = {}
    content: list[int] = []
    rows = []
    with (
        RedisServer() as srv,
        module_server_target() as modules,
        contextlib.ExitStack() as stack,
    ):
        ours = Entry(OURS_KEY, "RedisSaver (ours)")
        ours.saver = stack.enter_context(RedisSaver.from_conn_string(srv.url))
        for entry in [ours, *sync_peers(stack, srv.url, modules)]:
            if entry.skip:
                savers[entry.label] = {"skipped": entry.skip}
                rows.append([entry.label, entry.skip, "", "", "", "", ""])
                continue
            url = modules.url if entry.key == "lcr" else srv.url
            try:
                with redis.Redis.from_url(url) as client:
                    added = bytes_after_each_turn(entry.saver, client, thread, turns)
            except Exception as exc:
                if not entry.peer:
                    raise
                skip = f"failed: {type(exc).__name__}: {first_line(exc)}"
                savers[entry.label] = {"skipped": skip}
                rows.append([entry.label, skip, "", "", "", "", ""])
                continue
            turn_content = added.pop("content_bytes")
            content = content or turn_content  # the same conversation on every saver
            keys = added["key_bytes"]
            first, last = keys[window] / window, (keys[-1] - keys[-1 - window]) / window
            savers[entry.label] = {"peer": entry.peer, **added}
            progress(
                f"bytes by saver {entry.label}: {keys[-1]:,} key bytes after {turns} turns, "
                f"last {window} turns {last:,.0f} B each"
            )
            rows.append(
                [
                    entry.label,
                    f"{first:,.0f}",
                    f"{last:,.0f}",
                    f"{last / max(first, 1):.1f}{TIMES}",
                    f"{keys[-1]:,}",
                    f"{added['used_memory'][-1]:,}",
                    f"{keys[-1] / sum(content):.1f}{TIMES}",
                ]
            )
    headers = [
        "saver",
        f"key B/turn, turns 1{DASH}{window}",
        f"key B/turn, last {window}",
        "last / first",
        f"key bytes after {turns} turns",
        "used_memory added",
        f"{TIMES} content",
    ]
    body = (
        f"The same {turns}-turn conversation on each saver, one after another (ours, ValkeySaver "
        "and plainredis on one private redis-server, langgraph-checkpoint-redis on the private "
        "Valkey with the search modules; 2 warm-up turns on another thread before the baseline). "
        "After every turn: the sum of `MEMORY USAGE` over the server's keys (key bytes; the "
        "search modules' index memory is not in it, used_memory is) and used_memory. A saver "
        "that stores the whole history with every checkpoint adds more bytes each turn, so its "
        "total grows with the square of the conversation; `last / first` shows it. "
        f"{TIMES} content: key bytes over the UTF-8 bytes of the messages "
        f"({sum(content):,} B in all). `python -m benchmarks.plots` draws the bytes per turn "
        "(`checkpointer_bytes.png`).\n\n" + table(headers, rows, right=[1, 2, 3, 4, 5, 6])
    )
    report.add(f"7. Redis bytes per turn, ours and the peers ({turns} turns)", body)
    report.data["growth_by_saver"] = {
        "turns": turns,
        "content_bytes": content,
        "savers": savers,
    }
