"""The step vocabulary and the plan loop (redis_checkpoint/steps.py), without a server."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Generator
from typing import Any

import pytest
from redis.exceptions import NoScriptError, ResponseError

from redis_checkpoint.steps import (
    Compute,
    Emit,
    Invoke,
    LoadScripts,
    Script,
    Send,
    Sleep,
    adrive,
    aiterate,
    asend,
    drive,
    iterate,
    resume,
    send,
    send_with_scripts,
)


def test_a_script_is_named_by_the_sha1_of_its_source() -> None:
    script = Script("get", "return 1")
    assert script.sha == hashlib.sha1(b"return 1").hexdigest()
    assert (script.name, script.source) == ("get", "return 1")
    with pytest.raises(TypeError):
        Script("get", "return 1", "0" * 40)  # type: ignore[call-arg]  # sha is computed


def _plan(log: list[Any]) -> Generator[Any, Any, str]:
    first = yield Send((("GET", "a"),))
    log.append(first)
    try:
        yield Sleep(0.5)
    except ValueError as exc:
        log.append(f"caught {exc}")
    second = yield Compute()
    log.append(second)
    return "done"


def test_resume_sends_a_reply_throws_an_error_and_reports_the_end() -> None:
    log: list[Any] = []
    plan = _plan(log)
    assert resume(plan, None, None) == (False, Send((("GET", "a"),)))
    assert resume(plan, b"1", None) == (False, Sleep(0.5))
    assert resume(plan, None, ValueError("late")) == (False, Compute())
    assert resume(plan, 7, None) == (True, "done")
    assert log == [b"1", "caught late", 7]


def test_drive_carries_out_each_step_and_throws_a_step_error_into_the_plan() -> None:
    log: list[Any] = []
    seen: list[Any] = []

    def handle(step: Any) -> Any:
        seen.append(step)
        if isinstance(step, Sleep):
            raise ValueError("no sleeping")
        return "reply" if isinstance(step, Send) else 42

    assert drive(_plan(log), handle) == "done"
    assert seen == [Send((("GET", "a"),)), Sleep(0.5), Compute()]
    assert log == ["reply", "caught no sleeping", 42]


def test_adrive_is_drive_with_an_async_handler() -> None:
    log: list[Any] = []

    async def handle(step: Any) -> Any:
        await asyncio.sleep(0)
        if isinstance(step, Sleep):
            raise ValueError("no sleeping")
        return "reply" if isinstance(step, Send) else 42

    assert asyncio.run(adrive(_plan(log), handle)) == "done"
    assert log == ["reply", "caught no sleeping", 42]


def test_an_error_the_plan_does_not_catch_leaves_drive() -> None:
    def plan() -> Generator[Any, Any, None]:
        yield Send((("GET", "a"),))

    def handle(step: Any) -> Any:
        raise ResponseError("WRONGTYPE")

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        drive(plan(), handle)

    async def ahandle(step: Any) -> Any:
        raise ResponseError("WRONGTYPE")

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        asyncio.run(adrive(plan(), ahandle))


def test_a_plan_with_no_steps_returns_at_once() -> None:
    def plan() -> Generator[Any, Any, int]:
        return 3
        yield  # a generator all the same

    assert drive(plan(), lambda step: pytest.fail("no step expected")) == 3


SCRIPTS = (Script("a", "return 'a'"), Script("b", "return 'b'"))
COMMANDS = (("EVALSHA", SCRIPTS[0].sha, 0),)


def test_send_with_scripts_loads_them_after_noscript_and_sends_once_more() -> None:
    steps: list[Any] = []
    answers = iter([NoScriptError("NOSCRIPT"), None, ["ok"]])

    def handle(step: Any) -> Any:
        steps.append(step)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert drive(send_with_scripts(COMMANDS, SCRIPTS), handle) == ["ok"]
    assert steps == [Send(COMMANDS), LoadScripts(SCRIPTS), Send(COMMANDS)]


def test_send_with_scripts_sends_once_when_the_server_has_them() -> None:
    steps: list[Any] = []

    def handle(step: Any) -> Any:
        steps.append(step)
        return ["ok"]

    assert drive(send_with_scripts(COMMANDS, list(SCRIPTS)), handle) == ["ok"]
    assert steps == [Send(COMMANDS)]


def test_send_with_scripts_loads_only_once_and_lets_other_errors_through() -> None:
    def always(error: Exception) -> Any:
        def handle(step: Any) -> Any:
            if isinstance(step, LoadScripts):
                return None
            raise error

        return handle

    with pytest.raises(NoScriptError):  # still missing after the load: not a loop
        drive(send_with_scripts(COMMANDS, SCRIPTS), always(NoScriptError("NOSCRIPT")))
    steps: list[Any] = []

    def wrongtype(step: Any) -> Any:
        steps.append(step)
        raise ResponseError("WRONGTYPE")

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        drive(send_with_scripts(COMMANDS, SCRIPTS), wrongtype)
    assert steps == [Send(COMMANDS)]


class _Connection:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def send_command(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append(("send_command", args, kwargs))
        return "sent"


class _AsyncConnection:
    async def send_command(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return ("async", *args, *sorted(kwargs.items()))


def test_invoke_calls_the_named_method_of_a_sync_or_an_asyncio_object() -> None:
    step = Invoke("send_command", ("CONFIG", "GET"), {"timeout": 1})
    connection = _Connection()
    assert step.on(connection) == "sent"
    assert connection.calls == [("send_command", ("CONFIG", "GET"), {"timeout": 1})]
    assert asyncio.run(step.on(_AsyncConnection())) == ("async", "CONFIG", "GET", ("timeout", 1))
    bare = Invoke("send_command")
    assert (bare.args, dict(bare.kwargs)) == ((), {})


class _Pipeline:
    def __init__(self, owner: _Client) -> None:
        self.owner = owner
        self.queued: list[tuple[Any, ...]] = []

    def execute_command(self, *command: Any) -> None:
        self.queued.append(command)

    def execute(self) -> list[Any]:
        self.owner.pipelines.append(self.queued)
        return [f"r{i}" for i in range(len(self.queued))]


class _Client:
    def __init__(self) -> None:
        self.direct: list[tuple[Any, ...]] = []
        self.pipelines: list[list[tuple[Any, ...]]] = []
        self.transactions: list[bool] = []

    def execute_command(self, *command: Any) -> str:
        self.direct.append(command)
        return "direct"

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        self.transactions.append(transaction)
        return _Pipeline(self)


def test_send_sends_a_lone_command_directly_and_several_in_one_pipeline() -> None:
    client = _Client()
    assert send(client, (("GET", "a"),)) == ["direct"]
    assert client.direct == [("GET", "a")] and client.pipelines == []
    assert send(client, (("GET", "a"), ("GET", "b"))) == ["r0", "r1"]
    assert client.pipelines == [[("GET", "a"), ("GET", "b")]]
    assert client.transactions == [False]  # no MULTI/EXEC: a plain pipeline


class _AsyncPipeline(_Pipeline):
    async def execute(self) -> list[Any]:  # type: ignore[override]
        return _Pipeline.execute(self)


class _AsyncClient(_Client):
    async def execute_command(self, *command: Any) -> str:  # type: ignore[override]
        self.direct.append(command)
        return "direct"

    def pipeline(self, transaction: bool = True) -> _AsyncPipeline:
        self.transactions.append(transaction)
        return _AsyncPipeline(self)


def test_asend_is_send_on_an_asyncio_client() -> None:
    client = _AsyncClient()
    assert asyncio.run(asend(client, (("GET", "a"),))) == ["direct"]
    assert asyncio.run(asend(client, (("GET", "a"), ("GET", "b")))) == ["r0", "r1"]
    assert client.pipelines == [[("GET", "a"), ("GET", "b")]]
    assert client.transactions == [False]


def _pages(log: list[Any]) -> Generator[Any, Any, str]:
    first = yield Send((("ZRANGE", "idx"),))
    log.append(first)
    yield Emit(["a", "b"])
    log.append("after the first page")
    try:
        yield Sleep(0.1)
    except ValueError as exc:
        log.append(f"caught {exc}")
    yield Emit([])
    yield Emit(["c"])
    return "listed"


def _handle(step: Any) -> Any:
    if isinstance(step, Sleep):
        raise ValueError("no sleeping")
    return ["page"]


def test_iterate_hands_out_what_the_plan_emits_lazily_and_returns_its_value() -> None:
    log: list[Any] = []
    items = iterate(_pages(log), _handle)
    assert next(items) == "a"
    assert log == [["page"]]  # nothing past the first page runs before it is asked for
    assert next(items) == "b"
    assert log == [["page"]]
    assert next(items) == "c"
    assert log == [["page"], "after the first page", "caught no sleeping"]
    with pytest.raises(StopIteration) as end:
        next(items)
    assert end.value.value == "listed"


def test_aiterate_is_iterate_with_an_async_handler() -> None:
    log: list[Any] = []

    async def handle(step: Any) -> Any:
        return _handle(step)

    async def collect() -> list[Any]:
        found = []
        async for item in aiterate(_pages(log), handle):
            found.append((item, len(log)))
        return found

    assert asyncio.run(collect()) == [("a", 1), ("b", 1), ("c", 3)]
    assert log == [["page"], "after the first page", "caught no sleeping"]


def test_an_error_the_plan_does_not_catch_leaves_iterate() -> None:
    def plan() -> Generator[Any, Any, None]:
        yield Emit([1])
        yield Send((("GET", "a"),))

    def handle(step: Any) -> Any:
        raise ResponseError("WRONGTYPE")

    items = iterate(plan(), handle)
    assert next(items) == 1
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        next(items)

    async def ahandle(step: Any) -> Any:
        raise ResponseError("WRONGTYPE")

    async def collect() -> list[Any]:
        return [item async for item in aiterate(plan(), ahandle)]

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        asyncio.run(collect())
