"""A tour of redis_checkpoint: a LangGraph chat whose every step is checkpointed in Redis.

    python3 run.py demo            (or: python examples/demo.py)

1. a three-turn conversation checkpointed in Redis at $REDIS_URL, and its checkpoint history;
2. a second process continuing the same thread: the state outlives the process;
3. a private redis-server killed mid-conversation: the saver serves from memory and writes the
   outage's turns back once Redis returns.

Without a reachable Redis the conversation runs on the saver's in-memory tier instead.
Only keys under the "demo" prefix are touched; nothing is flushed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

import redis
from demo_keys import remove_demo_keys
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from redis_checkpoint import RedisSaver, RedisUnavailableError, Settings
from redis_checkpoint.client import check_connection, create_client
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.settings import redact_url
from redis_checkpoint.testing import RedisServer, find_redis_server

DEFAULT_URL = "redis://127.0.0.1:6379/0"
PREFIX = "rc-demo"
THREAD = "demo-chat"
OUTAGE_THREAD = "demo-outage"

QUESTIONS = [
    "Hi! I am planning a weekend in Lisbon.",
    "What should I pack for three days?",
    "Which city did I mention at the start?",
]
CHILD_QUESTION = "I am a new process: do you still remember me?"
OUTAGE_QUESTIONS = [
    "First question, Redis is up.",
    "Second question, Redis was just killed.",
    "Third question, Redis is still down.",
    "Fourth question, Redis is back.",
]


# -- the graph -------------------------------------------------------------------------------


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def assistant(state: ChatState) -> dict[str, list[AnyMessage]]:
    """A deterministic stand-in for an LLM: it answers from the whole stored conversation."""
    said = [str(m.content) for m in state["messages"] if isinstance(m, HumanMessage)]
    words = len(said[-1].split())
    total = sum(len(text.split()) for text in said)
    first = textwrap.shorten(said[0], 24, placeholder="…")
    reply = f'Turn {len(said)}: {words} words, {total} in this thread. You began "{first}"'
    return {"messages": [AIMessage(reply)]}


def build_graph(saver: RedisSaver) -> Any:
    builder = StateGraph(ChatState)
    builder.add_node("assistant", assistant)
    builder.add_edge(START, "assistant")
    builder.add_edge("assistant", END)
    return builder.compile(checkpointer=saver)


def config_for(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def ask(graph: Any, thread_id: str, text: str) -> None:
    graph.invoke({"messages": [HumanMessage(text)]}, config_for(thread_id))


def messages_of(graph: Any, thread_id: str) -> list[AnyMessage]:
    values = graph.get_state(config_for(thread_id)).values
    return list(values.get("messages", []))


# -- output ----------------------------------------------------------------------------------


def heading(text: str) -> None:
    print(f"\n{text}\n{'=' * len(text)}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    # Numbers read best right-aligned; everything else left-aligned.
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    print(line(headers))
    print(indent + "  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def print_conversation(messages: Sequence[AnyMessage], indent: str = "  ") -> None:
    rows = [
        (i, "you" if isinstance(m, HumanMessage) else "assistant", m.content)
        for i, m in enumerate(messages, 1)
    ]
    table(["#", "who", "message"], rows, indent)


def print_history(graph: Any, thread_id: str) -> None:
    rows = []
    for snap in graph.get_state_history(config_for(thread_id)):
        checkpoint_id = snap.config["configurable"]["checkpoint_id"]
        rows.append(
            (
                snap.metadata.get("step", "?") if snap.metadata else "?",
                snap.metadata.get("source", "?") if snap.metadata else "?",
                len(snap.values.get("messages", [])),
                ", ".join(snap.next) or "-",
                # The leading digits are a timestamp shared by neighbours; the tail tells apart.
                "…" + checkpoint_id[-12:],
            )
        )
    table(["step", "source", "messages", "next", "checkpoint"], rows)


class LogNotes(logging.Handler):
    """Collects the library's warnings so they print after a table, not through it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.notes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(record.getMessage())

    def flush_notes(self) -> None:
        for note in self.notes:
            print(f"  saver log: {note}")
        self.notes.clear()


NOTES = LogNotes()


# -- the sections ----------------------------------------------------------------------------


def redis_reachable(url: str) -> bool:
    client = create_client(Settings.from_env(url=url))
    try:
        check_connection(client, url)
        return True
    except RedisUnavailableError:
        return False
    finally:
        client.close()


def conversation(saver: RedisSaver) -> Any:
    # Reruns start from an empty thread; only this demo's own keys are deleted.
    saver.delete_thread(THREAD)
    graph = build_graph(saver)
    trips_before = saver.round_trips
    for question in QUESTIONS:
        ask(graph, THREAD, question)
    turn_trips = saver.round_trips - trips_before
    print(f'\n  thread "{THREAD}" after {len(QUESTIONS)} turns:\n')
    print_conversation(messages_of(graph, THREAD))
    print("\n  checkpoint history (newest first), from graph.get_state_history():\n")
    print_history(graph, THREAD)
    trips, turns = saver.round_trips, len(QUESTIONS)
    if saver.serving_from_memory:
        print(f"\n  saver.round_trips: {trips} (tries to reach Redis; memory served the rest)")
    else:
        print(f"\n  saver.round_trips: {turn_trips} for the {turns} turns, one per saver call")
        print(f"  ({trips} in total, counting the cleanup and the reads for these tables)")
    return graph


def across_processes(url: str) -> bool:
    heading("2. The state outlives the process")
    print(f"  parent pid {os.getpid()} starts a second Python process on the same thread...\n")
    env = {**os.environ, "REDIS_URL": url}
    result = subprocess.run([sys.executable, __file__, "--continue", THREAD], env=env)
    if result.returncode != 0:
        print(f"\n  the second process failed (exit code {result.returncode})")
        return False
    return True


def continue_thread(thread_id: str) -> int:
    """The child of section 2: a new process, a new saver, the same thread."""
    url = os.environ.get("REDIS_URL", DEFAULT_URL)
    with RedisSaver.from_conn_string(url, key_prefix=PREFIX) as saver:
        graph = build_graph(saver)
        loaded = len(messages_of(graph, thread_id))
        print(f"  child pid {os.getpid()}: new saver loaded {loaded} messages from Redis")
        ask(graph, thread_id, CHILD_QUESTION)
        print("  child added one turn; the full conversation now:\n")
        print_conversation(messages_of(graph, thread_id), indent="    ")
    return 0


def outage() -> None:
    heading("3. Redis goes away mid-conversation")
    if find_redis_server() is None:
        print(
            "  skipped: redis-server is not installed (it would run a private, throw-away one)."
            "\n  Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis"
        )
        return
    # A private server on a free port: killing it bothers no one else's Redis.
    with RedisServer(appendonly=True) as server:
        print(f"  private redis-server at {server.url} (appendonly, pid {server.pid})\n")
        rows: list[tuple[object, ...]] = []
        with RedisSaver.from_conn_string(server.url, key_prefix=PREFIX) as saver:
            graph = build_graph(saver)
            made_while: list[str] = []

            def turn(question: str, server_state: str) -> None:
                start = time.perf_counter()
                ask(graph, OUTAGE_THREAD, question)
                elapsed_ms = (time.perf_counter() - start) * 1000
                made_while.append(server_state)
                pending = saver.memory.pending if saver.memory is not None else 0
                rows.append(
                    (
                        len(made_while),
                        server_state,
                        str(saver.serving_from_memory),
                        pending,
                        round(elapsed_ms, 1),
                    )
                )

            turn(OUTAGE_QUESTIONS[0], "up")
            server.kill()
            turn(OUTAGE_QUESTIONS[1], "killed")
            turn(OUTAGE_QUESTIONS[2], "killed")
            server.restart()
            # The breaker probes Redis again only after its recovery timeout (1 s).
            time.sleep(1.5)
            turn(OUTAGE_QUESTIONS[3], "restarted")

        table(["turn", "redis-server", "serving_from_memory", "pending", "turn ms"], rows)
        print("\n  (pending: threads held in memory, waiting to be written back to Redis)")
        NOTES.flush_notes()

        # A brand-new saver knows nothing of the old one's memory: it can only read Redis.
        with RedisSaver.from_conn_string(server.url, key_prefix=PREFIX) as fresh:
            stored = messages_of(build_graph(fresh), OUTAGE_THREAD)
            checkpoints = len(list(fresh.list(config_for(OUTAGE_THREAD))))
        asked = [str(m.content) for m in stored if isinstance(m, HumanMessage)]
        print(f"\n  a NEW saver reads the thread back from Redis ({checkpoints} checkpoints):\n")
        check_rows = [
            (i, state, "yes" if question in asked else "NO", question)
            for i, (state, question) in enumerate(zip(made_while, OUTAGE_QUESTIONS, strict=True), 1)
        ]
        table(["turn", "made while", "in Redis", "question"], check_rows)


def without_redis(url: str) -> None:
    heading("1. A conversation on the in-memory tier")
    with RedisSaver.from_conn_string(url, require_redis=False, key_prefix=PREFIX) as saver:
        conversation(saver)
        print(f"  saver.serving_from_memory: {saver.serving_from_memory}")
    NOTES.flush_notes()
    heading("2. The state outlives the process")
    print("  skipped: without Redis the state lives only in this process's memory")


def main() -> int:
    started = time.perf_counter()
    logger = logging.getLogger("redis_checkpoint")
    logger.addHandler(NOTES)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    url = os.environ.get("REDIS_URL", DEFAULT_URL)
    shown = redact_url(url)
    print("redis_checkpoint demo: a LangGraph chat checkpointed in Redis")
    try:
        reachable = redis_reachable(url)
    except (ConfigurationError, redis.RedisError) as exc:
        # Reachable but refusing us (bad URL, password, ...): falling back would hide that.
        print(f"cannot use Redis at {shown}: {exc}")
        return 2

    ok = True
    if reachable:
        print(f"using Redis at {shown} (keys under the prefix {PREFIX!r})")
        heading("1. A conversation checkpointed in Redis")
        with RedisSaver.from_conn_string(url, key_prefix=PREFIX) as saver:
            conversation(saver)
        NOTES.flush_notes()
        ok = across_processes(url)
        with create_client(url) as client:
            remove_demo_keys(client, f"{PREFIX}:cp")
    else:
        print(f"Redis not reachable at {shown}: using the in-memory default")
        without_redis(url)
    outage()
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--continue":
        sys.exit(continue_thread(sys.argv[2]))
    sys.exit(main())
