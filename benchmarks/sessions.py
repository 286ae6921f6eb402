"""Sessions on an ASGI app: Starlette's signed cookie, starsessions on Redis and our
``SessionMiddleware``, measured in one run over real HTTP.

Run from the project root::

    python -m benchmarks.sessions [--seconds S] [--connections C] [--rounds R] [--count N]
                                  [--no-write]

One FastAPI app with the same endpoints; each setup installs a different session middleware:

* ``starlette cookie``: Starlette's ``SessionMiddleware`` (the session is the signed cookie;
  no server);
* ``starsessions``: ``starsessions.SessionMiddleware`` with its ``RedisStore`` and its
  ``SessionAutoloadMiddleware`` (without it ``request.session`` raises until the endpoint
  loads it), lifetime 14 days as Starlette's cookie;
* ``ours``: ``redis_checkpoint.SessionMiddleware`` (defaults: 2 h sliding idle timeout,
  fail closed).

Endpoints: ``GET /login?user=N`` writes 5 keys (``user_id`` and four 100-byte strings);
``GET /read`` returns ``user_id`` from the session; ``GET /write`` increments a counter in it
(a change on every request). Each load connection logs in first and keeps its cookie (taking
every ``Set-Cookie`` it is sent, as a browser does); the clock starts once all are logged in.
A ``/read`` that does not return the connection's user, or a ``/write`` whose counter is not
the previous one plus 1, counts as an error.

Each setup is served by its own uvicorn process (one worker, uvloop and httptools when
installed) on a loopback port; a load generator in this process keeps ``--connections``
HTTP/1.1 keep-alive connections busy for ``--seconds`` per endpoint, setup and round. Rounds
alternate the setups; a row's best round is reported (the machine is shared, so the best round
is the least disturbed one). All Redis setups use the same private ``redis-server`` started by
this script.

Redis cost per request, measured in the first round on one connection (``--count`` requests
after a warm-up request) from the private server's ``INFO stats`` and ``INFO commandstats``
before and after, minus an idle interval of the same length measured the same way (the
``INFO`` calls themselves and anything in the background): round trips are the read events the
server processed (a pipeline or a script call is one), commands are every command it executed,
those a Lua script runs included. Target, printed and never asserted: ours makes 1 round trip
to read, at most 1 more when the session changed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import platform
import statistics
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple

import redis.asyncio
from fastapi import Request  # at module level: the endpoints' annotations are resolved here

from benchmarks.asgi import one_request, run_uvicorn, server_process, server_stack
from benchmarks.report import (
    DASH,
    LE,
    LOADAVG_START,
    command_line,
    load_summary,
    loadavg,
    progress,
    table,
    utc_stamp,
    write_results,
)
from redis_checkpoint.testing import RedisServer

SECRET = "benchmark-secret-key-0123456789abcdef"
LIFETIME = timedelta(days=14)  # Starlette's default max_age, given to the others too
#: The values /login stores beside user_id: four of ~100 bytes each.
PROFILE = {f"attr{i}": chr(ord("a") + i) * 100 for i in range(4)}


class Setup(NamedTuple):
    kind: str  # which middleware build_app installs
    redis: bool  # whether it keeps sessions in Redis


SETUPS = {
    "starlette cookie": Setup("starlette", redis=False),
    "starsessions": Setup("starsessions", redis=True),
    "ours": Setup("ours", redis=True),
}
ENDPOINTS = ("read", "write")


# -- the app, built inside each server process ---------------------------------------------


def build_app(kind: str, redis_url: str) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/login")
    async def login(request: Request, user: str) -> dict[str, Any]:
        request.session["user_id"] = user
        request.session.update(PROFILE)
        return {"user_id": user}

    @app.get("/read")
    async def read(request: Request) -> dict[str, Any]:
        return {"user_id": request.session.get("user_id")}

    @app.get("/write")
    async def write(request: Request) -> dict[str, Any]:
        counter = request.session.get("counter", 0) + 1
        request.session["counter"] = counter
        return {"counter": counter}

    # Secure cookies off everywhere: the benchmark speaks plain HTTP on loopback.
    if kind == "starlette":
        from starlette.middleware.sessions import SessionMiddleware

        app.add_middleware(
            SessionMiddleware, secret_key=SECRET, max_age=int(LIFETIME.total_seconds())
        )
    elif kind == "starsessions":
        from starsessions import SessionAutoloadMiddleware
        from starsessions import SessionMiddleware as StarSessionMiddleware
        from starsessions.stores.redis import RedisStore

        # add_middleware puts the last one outermost: the session middleware must wrap autoload.
        app.add_middleware(SessionAutoloadMiddleware)
        store = RedisStore(
            connection=redis.asyncio.Redis.from_url(redis_url), prefix="bench-starsessions:"
        )
        app.add_middleware(
            StarSessionMiddleware, store=store, lifetime=LIFETIME, cookie_https_only=False
        )
    elif kind == "ours":
        from redis_checkpoint import SessionMiddleware as OurSessionMiddleware

        app.add_middleware(
            OurSessionMiddleware, secret_key=SECRET, target=redis_url, prefix="bench-ours"
        )
    else:
        raise ValueError(kind)
    return app


def serve(kind: str, redis_url: str, port: int) -> None:
    run_uvicorn(build_app(kind, redis_url), port)


# -- the load generator ----------------------------------------------------------------------


class Client:
    """One keep-alive connection with the session cookie it was last sent."""

    def __init__(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.port = port
        self.reader = reader
        self.writer = writer
        self.cookie = ""
        self.user = ""
        self.counter = 0

    @classmethod
    async def logged_in(cls, port: int, user: str) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(port, reader, writer)
        status, body = await client.get(f"/login?user={user}")
        if status != 200 or not client.cookie:
            raise RuntimeError(f"/login answered {status} {body!r}, cookie {client.cookie!r}")
        client.user = user
        return client

    async def get(self, path: str) -> tuple[int, bytes]:
        cookie = f"Cookie: {self.cookie}\r\n" if self.cookie else ""
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{cookie}\r\n".encode()
        status, headers, body = await one_request(self.reader, self.writer, request)
        set_cookie = headers.get(b"set-cookie")
        if set_cookie is not None:
            self.cookie = set_cookie.split(b";", 1)[0].decode("latin-1")
        return status, body

    async def request(self, endpoint: str) -> bool:
        """One ``/read`` or ``/write``; False when the answer shows a lost session or write."""
        status, body = await self.get(f"/{endpoint}")
        if status != 200:
            return False
        if endpoint == "read":
            return body == f'{{"user_id":"{self.user}"}}'.encode()
        self.counter += 1
        return body == f'{{"counter":{self.counter}}}'.encode()

    def close(self) -> None:
        self.writer.close()


async def load(port: int, endpoint: str, seconds: float, connections: int) -> dict[str, Any]:
    # Everyone logs in before the clock starts: logins (and Redis pool growth) are not measured.
    clients = await asyncio.gather(
        *(Client.logged_in(port, f"user-{endpoint}-{i}") for i in range(connections))
    )
    latencies: list[float] = []
    errors = 0

    async def worker(client: Client, deadline: float) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            ok = await client.request(endpoint)
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    deadline = started + seconds
    try:
        await asyncio.gather(*(worker(client, deadline) for client in clients))
    finally:
        for client in clients:
            client.close()
    elapsed = time.perf_counter() - started
    cookie_bytes = statistics.fmean(len(client.cookie) for client in clients)
    return {**load_summary(latencies, elapsed, errors), "cookie_bytes": cookie_bytes}


async def server_counts(server: redis.asyncio.Redis) -> dict[str, int]:
    """Round trips (read events), commands executed, and calls per command, so far."""
    info = await server.info("stats", "commandstats")
    counts = {
        "round_trips": int(info["total_reads_processed"]),
        "commands": int(info["total_commands_processed"]),
    }
    for name, stats in info.items():
        if name.startswith("cmdstat_"):
            counts[name.removeprefix("cmdstat_")] = int(stats["calls"])
    return counts


def difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: value - before.get(name, 0) for name, value in after.items()}


async def redis_cost(port: int, endpoint: str, redis_url: str, count: int) -> dict[str, Any]:
    """What ``count`` requests to ``endpoint`` on one connection cost the private Redis, per
    request: the counted interval minus an idle one of the same length."""
    server = redis.asyncio.Redis.from_url(redis_url)
    client = await Client.logged_in(port, f"user-count-{endpoint}")
    try:
        if not await client.request(endpoint):  # warm-up: the app's connection and script
            raise RuntimeError(f"/{endpoint} failed during warm-up")
        before = await server_counts(server)
        started = time.perf_counter()
        for _ in range(count):
            if not await client.request(endpoint):
                raise RuntimeError(f"/{endpoint} failed while counting")
        busy = time.perf_counter() - started
        during = await server_counts(server)
        await asyncio.sleep(busy)
        idle = difference(await server_counts(server), during)
    finally:
        client.close()
        await server.aclose()
    per_request = {
        name: (value - idle.get(name, 0)) / count
        for name, value in difference(during, before).items()
    }
    mix = {
        name: round(value, 2)
        for name, value in sorted(per_request.items())
        if name not in ("round_trips", "commands") and round(value, 2) != 0
    }
    return {
        "round_trips": per_request["round_trips"],
        "commands": per_request["commands"],
        "mix": mix,
        "idle": idle,
        "count": count,
    }


async def wait_for(port: int, process: multiprocessing.process.BaseProcess) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline or not process.is_alive():
                raise RuntimeError("the server did not start") from None
            await asyncio.sleep(0.05)


def run_setup(
    setup: Setup, redis_url: str, args: argparse.Namespace, count_cost: bool
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with server_process(serve, setup.kind, redis_url) as (port, process):
        asyncio.run(wait_for(port, process))
        for endpoint in ENDPOINTS:
            results[endpoint] = asyncio.run(load(port, endpoint, args.seconds, args.connections))
            if count_cost:
                cost = asyncio.run(redis_cost(port, endpoint, redis_url, args.count))
                results[endpoint]["redis"] = cost
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="load per endpoint, setup and round"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--count", type=int, default=200, help="requests counted for the Redis cost"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    date = utc_stamp()
    rounds: dict[str, list[dict[str, Any]]] = {
        f"{name}, {endpoint}": [] for name in SETUPS for endpoint in ENDPOINTS
    }
    costs: dict[str, dict[str, Any]] = {}
    with RedisServer() as server:
        version = server.client().info("server")["redis_version"]
        for round_number in range(1, args.rounds + 1):
            for name, setup in SETUPS.items():
                progress(f"round {round_number}/{args.rounds}: {name} ({args.seconds:g} s each)")
                results = run_setup(setup, server.url, args, count_cost=round_number == 1)
                for endpoint, result in results.items():
                    row = f"{name}, {endpoint}"
                    if "redis" in result:
                        costs[row] = result.pop("redis")
                    progress(
                        f"   {endpoint}: {result['rps']:.0f} requests/s, "
                        f"p99 {result['p99_ms']:.2f} ms, {result['errors']} errors"
                    )
                    rounds[row].append(result)
    best = {row: max(results, key=lambda r: r["rps"]) for row, results in rounds.items()}

    def vs_cookie(row: str) -> str:
        endpoint = row.rsplit(", ", 1)[1]
        return f"{best[row]['rps'] / best[f'starlette cookie, {endpoint}']['rps']:.2f}x"

    rows = []
    for row, r in best.items():
        cost = costs[row]
        mix = ", ".join(f"{name} {calls:g}" for name, calls in cost["mix"].items())
        rows.append(
            [
                row,
                f"{r['rps']:.0f}",
                DASH.join(f"{f(x['rps'] for x in rounds[row]):.0f}" for f in (min, max)),
                vs_cookie(row),
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{cost['round_trips']:.2f}",
                f"{cost['commands']:.2f}",
                mix or "-",
                f"{r['cookie_bytes']:.0f}",
                str(r["errors"]),
            ]
        )
    ours_read = costs["ours, read"]["round_trips"]
    ours_write = costs["ours, write"]["round_trips"]
    met = ours_read <= 1 and ours_write <= 2
    lines = [
        "# Sessions: Starlette's cookie, starsessions on Redis and our SessionMiddleware on one "
        "FastAPI app",
        "",
        f"- date: {date}",
        f"- served by {server_stack()} over loopback TCP, one server process per setup; load "
        f"from a separate process: {args.connections} keep-alive HTTP/1.1 connections, each "
        f"logged in first, {args.seconds:g} s per endpoint, setup and round, best of "
        f"{args.rounds} rounds; all rounds: the slowest and the fastest (the machine is a shared "
        "VM: the same setup has varied by tens of percent between runs minutes apart)",
        f"- python {platform.python_version()}; redis-server {version} (private, started by the "
        f"benchmark); {multiprocessing.cpu_count()} CPU cores shared by server, load generator "
        "and Redis",
        f"- command: `{command_line('benchmarks.sessions', argv)}`",
        f"- total run time: {time.perf_counter() - started:.0f} s; load average at start "
        f"{LOADAVG_START}, at end {loadavg()}",
        "- the session: user_id and four 100-byte strings (set by /login); /read returns "
        "user_id, /write increments a counter; errors: a /read without the user or a /write "
        "whose counter skipped",
        f"- Redis cost per request: {args.count} requests on one connection, from INFO stats "
        "and commandstats minus an idle interval as long; round trips = read events the server "
        "processed (a pipeline or a script call is one); commands = all it executed, those inside "
        "a Lua script included",
        "- starsessions (from its source): `RedisStore.read` is a GET, `write` a SET of the "
        "whole session (with its `__metadata__`), each awaited on its own; it writes on every "
        "response of a loaded non-empty session, so a request that only reads pays the SET too",
        "- ours: the read is one EVALSHA (HGETALL, HGET, PEXPIRE inside: read and slide the "
        "idle timer); a change adds one pipeline: HSET and PEXPIRE of the changed fields, SADD "
        "and PEXPIRE of the user's index of sessions (user_id is set)",
        "",
        table(
            [
                "setup",
                "requests/s",
                "all rounds",
                "vs cookie",
                "p50 ms",
                "p99 ms",
                "Redis round trips/request",
                "Redis commands/request",
                "commands (calls/request)",
                "cookie bytes",
                "errors",
            ],
            rows,
            right=[1, 2, 3, 4, 5, 6, 7, 9, 10],
        ),
        "",
        f"Target: ours makes 1 Redis round trip to read and {LE} 1 more when the session changed. "
        f"Measured: **{ours_read:.2f} to read, {ours_write:.2f} to write: "
        + ("met" if met else "not met")
        + "**.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_results(
            "sessions",
            report,
            {"date": date, "args": vars(args), "best": best, "rounds": rounds, "redis": costs},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
