"""The Agent Server factories (redis_checkpoint.agent_server): their settings, and the real
server (`langgraph dev`) running graphs on our checkpointer and store across a restart."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from redis_checkpoint import RedisSaver, RedisStore
from redis_checkpoint.agent_server import store_index_from_env, store_ttl_from_env
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.settings import Settings
from redis_checkpoint.testing import RedisServer, free_port

PROJECT = Path(__file__).parent / "agent_server_project"
START_TIMEOUT = 45.0

# --- settings ---------------------------------------------------------------------------


def test_no_store_variables_mean_no_index_and_no_ttl() -> None:
    assert store_index_from_env({}) is None
    assert store_ttl_from_env({}) is None
    assert store_ttl_from_env({"REDIS_STORE_TTL_MINUTES": "0"}) is None
    assert store_ttl_from_env({"REDIS_STORE_TTL_MINUTES": "None"}) is None


def test_index_from_a_file_of_embeddings() -> None:
    env = {
        "REDIS_STORE_EMBED": f"{PROJECT / 'embed.py'}:embed",
        "REDIS_STORE_DIMS": "16",
        "REDIS_STORE_FIELDS": " text, summary ,",
    }
    index = store_index_from_env(env)
    assert index is not None
    assert index["dims"] == 16
    assert index["fields"] == ["text", "summary"]
    vector = index["embed"].embed_query("favourite colour")  # type: ignore[union-attr]
    assert len(vector) == 16
    default = store_index_from_env({**env, "REDIS_STORE_FIELDS": ""})
    assert default is not None and default["fields"] == ["$"]


def test_ttl_in_minutes_refreshed_on_read() -> None:
    assert store_ttl_from_env({"REDIS_STORE_TTL_MINUTES": "1440"}) == {
        "default_ttl": 1440.0,
        "refresh_on_read": True,
    }


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"REDIS_STORE_DIMS": "16"}, "REDIS_STORE_DIMS"),
        ({"REDIS_STORE_FIELDS": "text"}, "REDIS_STORE_FIELDS"),
        ({"REDIS_STORE_EMBED": "openai:text-embedding-3-small"}, "REDIS_STORE_DIMS"),
        ({"REDIS_STORE_EMBED": "x.py:embed", "REDIS_STORE_DIMS": "0"}, "REDIS_STORE_DIMS"),
        ({"REDIS_STORE_EMBED": "x.py:embed", "REDIS_STORE_DIMS": "big"}, "REDIS_STORE_DIMS"),
        ({"REDIS_STORE_EMBED": "nocolon", "REDIS_STORE_DIMS": "8"}, "REDIS_STORE_EMBED"),
        ({"REDIS_STORE_EMBED": "/no/such/file.py:embed", "REDIS_STORE_DIMS": "8"}, "no file"),
        (
            {"REDIS_STORE_EMBED": f"{PROJECT / 'embed.py'}:missing", "REDIS_STORE_DIMS": "8"},
            "'missing'",
        ),
        (
            {"REDIS_STORE_EMBED": f"{PROJECT / 'embed.py'}:embed", "REDIS_STORE_FIELDS": ", ,"},
            "REDIS_STORE_DIMS",
        ),
        (
            {
                "REDIS_STORE_EMBED": f"{PROJECT / 'embed.py'}:embed",
                "REDIS_STORE_DIMS": "16",
                "REDIS_STORE_FIELDS": ", ,",
            },
            "REDIS_STORE_FIELDS",
        ),
    ],
)
def test_a_bad_index_setting_is_a_configuration_error(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        store_index_from_env(env)


@pytest.mark.parametrize("raw", ["-1", "soon", "inf", "nan"])
def test_a_bad_ttl_is_a_configuration_error(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_STORE_TTL_MINUTES"):
        store_ttl_from_env({"REDIS_STORE_TTL_MINUTES": raw})


# --- the real Agent Server ------------------------------------------------------------------


def _require_agent_server() -> None:
    """The Agent Server (langgraph-cli[inmem], Python >= 3.11) must be installed: its absence
    fails on CI and skips elsewhere. On Python 3.10 there is none to install."""
    if sys.version_info < (3, 11):
        pytest.skip("langgraph-api (the Agent Server) needs Python >= 3.11")
    if importlib.util.find_spec("langgraph_api") and importlib.util.find_spec("langgraph_cli"):
        return
    message = "the Agent Server is not installed: pip install 'langgraph-cli[inmem]'"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class AgentServer:
    """`langgraph dev` in ``project`` on a free port, its output in ``log``."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self.project = project
        self.env = env
        self.log = project / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "langgraph_cli", "dev", "--no-browser", "--no-reload"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=self.project,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the Agent Server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/ok", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"the Agent Server did not answer in {START_TIMEOUT} s:\n{self.tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGINT)  # a clean shutdown closes our factories
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def run(self, thread_id: str, graph: str, state: dict[str, Any]) -> dict[str, Any]:
        """Run ``graph`` on ``state`` in thread ``thread_id`` and return its final state."""
        response = httpx.post(
            f"{self.url}/threads/{thread_id}/runs/wait",
            json={"assistant_id": graph, "input": state},
            timeout=30.0,
        )
        assert response.status_code == 200, f"{response.text}\n{self.tail()}"
        values: dict[str, Any] = response.json()
        assert "__error__" not in values, f"{values}\n{self.tail()}"
        return values

    def new_thread(self) -> str:
        response = httpx.post(f"{self.url}/threads", json={}, timeout=10.0)
        assert response.status_code == 200, response.text
        thread_id: str = response.json()["thread_id"]
        return thread_id

    def thread_values(self, thread_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/threads/{thread_id}/state", timeout=10.0)
        assert response.status_code == 200, f"{response.text}\n{self.tail()}"
        values: dict[str, Any] = response.json()["values"]
        return values


@pytest.fixture
def agent_server(tmp_path: Path, redis_server: RedisServer) -> Iterator[AgentServer]:
    """A copy of tests/agent_server_project (the server writes its files there), with env for
    our factories: REDIS_URL, a key prefix of its own, the offline embeddings."""
    _require_agent_server()
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": f"as{uuid.uuid4().hex[:8]}",
        "REDIS_STORE_EMBED": "./embed.py:embed",
        "REDIS_STORE_DIMS": "16",
        "REDIS_STORE_FIELDS": "text",
        "REDIS_STORE_TTL_MINUTES": "60",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        # The repository root, for `redis_checkpoint` when it is not installed.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")) if p
        ),
    }
    server = AgentServer(project, env)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_the_agent_server_keeps_memories_and_threads_in_redis_across_a_restart(
    agent_server: AgentServer,
) -> None:
    agent_server.start()
    first = agent_server.new_thread()
    for text in ("Alice's favourite colour is teal", "Alice lives in Oslo near the fjord"):
        agent_server.run(first, "remember", {"user": "alice", "text": text})

    question = {"user": "alice", "query": "what is her favourite colour"}
    second = agent_server.new_thread()
    found = agent_server.run(second, "recall", question)
    assert found["found"] == ["Alice's favourite colour is teal"]

    agent_server.stop()
    agent_server.start()

    third = agent_server.new_thread()
    assert agent_server.run(third, "recall", question)["found"] == [
        "Alice's favourite colour is teal"
    ]
    assert agent_server.thread_values(first)["text"] == "Alice lives in Oslo near the fjord"

    # And it is all in Redis, where our saver and store (not the server's own) put it.
    settings = Settings(
        url=agent_server.env["REDIS_URL"], key_prefix=agent_server.env["REDIS_KEY_PREFIX"]
    )
    with RedisSaver.from_conn_string(settings=settings) as saver:
        saved = saver.get_tuple({"configurable": {"thread_id": first, "checkpoint_ns": ""}})
    assert saved is not None
    assert saved.checkpoint["channel_values"]["text"] == "Alice lives in Oslo near the fjord"
    with RedisStore.from_conn_string(settings=settings) as store:
        texts = sorted(item.value["text"] for item in store.search(("memories", "alice")))
    assert texts == ["Alice lives in Oslo near the fjord", "Alice's favourite colour is teal"]


@pytest.mark.slow
def test_the_agent_server_copies_threads_and_rolls_back_runs_on_our_saver(
    agent_server: AgentServer,
) -> None:
    agent_server.start()
    url = agent_server.url
    settings = Settings(
        url=agent_server.env["REDIS_URL"], key_prefix=agent_server.env["REDIS_KEY_PREFIX"]
    )
    source = agent_server.new_thread()
    for text in ("Bob likes green", "Bob lives in Rome"):
        agent_server.run(source, "remember", {"user": "bob", "text": text})

    # The server's copy calls our acopy_thread: the copy's checkpoints name the copy.
    response = httpx.post(f"{url}/threads/{source}/copy", timeout=10.0)
    assert response.status_code == 200, f"{response.text}\n{agent_server.tail()}"
    copy = response.json()["thread_id"]

    def history(thread_id: str, **body: Any) -> list[dict[str, Any]]:
        reply = httpx.post(f"{url}/threads/{thread_id}/history", json=body, timeout=10.0)
        assert reply.status_code == 200, f"{reply.text}\n{agent_server.tail()}"
        states: list[dict[str, Any]] = reply.json()
        return states

    everything = history(source, limit=100)
    assert len(everything) >= 4
    assert len(history(copy, limit=100, metadata={"thread_id": copy})) == len(everything)
    assert history(copy, limit=100, metadata={"thread_id": source}) == []

    # A rollback cancels the running run and calls our adelete_for_runs with its id.
    thread = agent_server.new_thread()
    started = httpx.post(
        f"{url}/threads/{thread}/runs",
        json={"assistant_id": "slow", "input": {"text": "slow"}},
        timeout=10.0,
    )
    assert started.status_code == 200, started.text
    slow_run = started.json()["run_id"]
    with RedisSaver.from_conn_string(settings=settings) as saver:
        conf: Any = {"configurable": {"thread_id": thread}}

        def runs() -> list[str]:
            return [t.metadata.get("run_id") for t in saver.list(conf)]

        deadline = time.monotonic() + 15
        while slow_run not in runs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert slow_run in runs(), agent_server.tail()
        rolled = httpx.post(
            f"{url}/threads/{thread}/runs/wait",
            json={
                "assistant_id": "slow",
                "input": {"text": "fast"},
                "multitask_strategy": "rollback",
            },
            timeout=30.0,
        )
        assert rolled.status_code == 200, f"{rolled.text}\n{agent_server.tail()}"
        assert rolled.json()["found"] == ["fast"]
        left = runs()
        assert left and slow_run not in left, agent_server.tail()
