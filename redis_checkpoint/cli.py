"""``redis-checkpoint``: look at and steer the caches from a shell.

::

    redis-checkpoint health                      # exit 0 when Redis answers, 1 when not
    redis-checkpoint stats [--sample 100000]     # server facts, keys and bytes per cache type
    redis-checkpoint threads list [--limit 50]
    redis-checkpoint threads show THREAD [--limit 20]
    redis-checkpoint threads delete THREAD
    redis-checkpoint prune (--thread ID ... | --all) [--strategy keep_latest|delete] [--dry-run]
    redis-checkpoint invalidate --namespace NS [--key K ...] [--tag T ...]
    redis-checkpoint store namespaces [--prefix a/b] [--limit N]   # with their item counts

``--url`` (else ``REDIS_URL``) picks the server, ``--prefix`` the key prefix (``rc``), ``--json``
prints machine-readable output. Exit codes: 0 done, 1 Redis unreachable or the operation failed,
2 bad usage, 3 the thread, cache namespace or store namespace prefix asked for does not exist,
4 Redis refused the password or the ACL forbids a command or key (the one-line message says
which and how to fix it). Progress of long operations goes to stderr (when it is a terminal, or
with ``--progress``), never into the output a script parses. After ``store namespaces``,
``--prefix`` is the namespace's labels joined by ``/`` (``\\/`` for a ``/`` inside a label), and
namespaces are shown the same way.

The CLI never falls back to memory: what it reports and changes is what Redis holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from redis_checkpoint.cache.engine import CacheEngine
from redis_checkpoint.checkpoint.saver import RedisSaver
from redis_checkpoint.client import check_connection, create_client
from redis_checkpoint.errors import (
    ConfigurationError,
    CorruptEntryError,
    RedisAuthError,
    RedisUnavailableError,
)
from redis_checkpoint.failures import access_error
from redis_checkpoint.ops.health import HealthMonitor
from redis_checkpoint.ops.keyspace import (
    keyspace_plan,
    missing_namespace_message,
    missing_namespace_plan,
)
from redis_checkpoint.ops.namespaces import (
    format_namespace,
    missing_store_prefix_message,
    parse_namespace,
    store_namespaces_plan,
)
from redis_checkpoint.ops.plan import run_sync
from redis_checkpoint.ops.threads import summarize
from redis_checkpoint.settings import Settings
from redis_checkpoint.store.layout import StoreLayout

__all__ = ["EXIT_AUTH", "EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4

PRUNE_BATCH = 100


class _NotFound(Exception):
    pass


class Output:
    """Where results (stdout) and progress (stderr) go."""

    def __init__(self, as_json: bool, progress: bool | None, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err
        self.progress_on = err.isatty() if progress is None else progress

    def emit(self, data: Any, render: Callable[[Any], str]) -> None:
        text = json.dumps(data, indent=2, default=str) if self.as_json else render(data)
        self.out.write(text.rstrip("\n") + "\n")

    def progress(self, message: str) -> None:
        if self.progress_on:
            self.err.write(message + "\n")
            self.err.flush()


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Left-aligned text columns, numbers right-aligned, with a header rule."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        all(isinstance(row[i], (int, float)) for row in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), rule, *(line(row) for row in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return _printable(str(value))


def _printable(text: str) -> str:
    """``text`` with newlines, NULs and other control characters escaped (as repr does), so
    one value stays on one line of a table and cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)  # pragma: no cover


# -- the commands --------------------------------------------------------------------------------


def cmd_health(settings: Settings, args: argparse.Namespace, output: Output) -> int:
    monitor = HealthMonitor(settings, metrics=_private_metrics())
    try:
        report = monitor.check()
    finally:
        monitor.stop()

    def render(data: dict[str, Any]) -> str:
        rows = [("status", data["status"]), *((k, v) for k, v in data["redis"].items())]
        if data["error"]:
            rows.append(("error", data["error"]))
        return table(rows, ("field", "value"))

    output.emit(report.as_dict(), render)
    if report.status == "auth_failed":
        return EXIT_AUTH
    return EXIT_OK if report.up else EXIT_FAILED


def cmd_stats(settings: Settings, args: argparse.Namespace, output: Output) -> int:
    with _client(settings) as client:
        monitor = HealthMonitor(settings, metrics=_private_metrics())
        try:
            report = monitor.check()
        finally:
            monitor.stop()
        plan = keyspace_plan(
            [args.prefix],
            [args.cache_prefix or f"{args.prefix}:cache"],
            max_keys=args.sample,
            store_prefixes=[args.prefix],
        )
        output.progress(f"scanning up to {args.sample} keys under {args.prefix}:...")
        sample = run_sync(client, plan)
        threads = client.zcard(f"{args.prefix}:cp:threads")
        # As the registry has them: namespaces whose items have not all expired.
        registry = StoreLayout(args.prefix).registry
        store_namespaces = client.zcount(registry, int(time.time() * 1000), "+inf")
    data = {
        "redis": report.redis,
        "threads": threads,
        "store_namespaces": store_namespaces,
        "keyspace": sample.as_dict(),
    }

    def render(data: dict[str, Any]) -> str:
        rows = [(t, e["keys"], _bytes(e["bytes"])) for t, e in data["keyspace"]["by_type"].items()]
        note = "" if sample.complete else f"\n(sampled: the first {sample.scanned} keys)"
        server = table(list(data["redis"].items()), ("server", "value"))
        return (
            f"{server}\n\nthreads: {data['threads']}\n"
            f"store namespaces: {data['store_namespaces']}\n\n"
            f"{table(rows, ('cache type', 'keys', 'memory'))}{note}"
        )

    output.emit(data, render)
    return EXIT_OK


def cmd_threads_list(settings: Settings, args: argparse.Namespace, output: Output) -> int:
    with _saver(settings, args) as saver:
        ids = list(saver.list_threads())
    shown = ids[: args.limit] if args.limit else ids
    data = {"total": len(ids), "threads": shown}
    output.emit(
        data,
        lambda d: (
            table([(t,) for t in d["threads"]], ("thread",))
            + f"\n{len(shown)} of {d['total']} threads"
        ),
    )
    return EXIT_OK


def cmd_threads_show(settings: Settings, args: argparse.Namespace, output: Output) -> int:
    with _saver(settings, args) as saver:
        config: Any = {"configurable": {"thread_id": args.thread_id}}
        history = [summarize(t) for t in saver.list(config, limit=args.limit or None)]
    if not history:
        raise _NotFound(f"thread {args.thread_id!r} not found")
    data = {"thread_id": args.thread_id, "checkpoints": history}
    headers = ("checkpoint", "ns", "step", "source", "written at", "writes")
    output.emit(
        data,
        lambda d: table(
            [
                (
                    c["checkpoint_id"],
                    c["checkpoint_ns"] or "-",
                    c["step"],
                    c["source"],
                    c["ts"],
                    c["pending_writes"],
                )
                for c in d["checkpoints"]
            ],
            headers,
        ),
    )
    return EXIT_OK


def cmd_threads_delete(settings: Settings, args: argparse.Namespace, output: Output) -> int:
    with _saver(settings, args) as saver:
        config: Any = {"configurable": {"thread_id": args.thread_id}}
        try:
            found = saver.get_tuple(config) is not None
        except CorruptEntryError:
            found = True  # damaged, but there: deleting it is how to be rid of it
        if not found:
            raise _NotFound(f"thread {args.thread_id!r} not found")
        saver.delete_thread(args.thread_id)
    output.emit(
        {"thread_id": args.thread_id, "deleted": True},
        lambda d: f"deleted thread {d['thread_id']!r}",
    )
    return EXIT_OK


def cmd_prune(settings: Settings, args: argparse.Namespace, output: Output) -> int:
    if bool(args.thread) == args.all:
        raise ConfigurationError("say which threads to prune: --thread ID (repeatable) or --all")
    with _saver(settings, args) as saver:
        threads = list(args.thread or saver.list_threads())
        if args.dry_run:
            output.emit(
                {"would_prune": threads, "strategy": args.strategy},
                lambda d: (
                    table([(t,) for t in d["would_prune"]], ("thread",))
                    + f"\n{len(d['would_prune'])} threads would be pruned ({d['strategy']}); "
                    "nothing was changed (--dry-run)"
                ),
            )
            return EXIT_OK
        damaged: dict[str, str] = {}
        done = 0
        for start in range(0, len(threads), PRUNE_BATCH):
            batch = threads[start : start + PRUNE_BATCH]
            try:
                saver.prune(batch, strategy=args.strategy)
            except CorruptEntryError:
                # One damaged thread must not stop the rest: find it, thread by thread.
                for thread_id in batch:
                    try:
                        saver.prune([thread_id], strategy=args.strategy)
                    except CorruptEntryError as exc:
                        damaged[thread_id] = str(exc)
            done += len(batch)
            output.progress(f"pruned {done}/{len(threads)} threads ({args.strategy})")
    pruned = len(threads) - len(damaged)
    output.emit(
        {"pruned": pruned, "strategy": args.strategy, "damaged": damaged},
        lambda d: (
            f"pruned {d['pruned']} threads ({d['strategy']})"
            + "".join(
                f"\nnot pruned, damaged: {_printable(t)}: {_printable(why)}"
                for t, why in d["damaged"].items()
            )
        ),
    )
    return EXIT_FAILED if damaged else EXIT_OK


def cmd_invalidate(settings: Settings, args: argparse.Namespace, output: Output) -> int:
    if args.key and args.tag:
        raise ConfigurationError("give --key or --tag, not both")
    prefix = args.cache_prefix or f"{args.prefix}:cache"
    # No memory tier: an invalidation that cannot reach Redis must fail, not wait in memory.
    with CacheEngine(settings, prefix=prefix, memory=None, metrics=_private_metrics()) as engine:
        check_connection(engine.client, settings.url)
        held = run_sync(engine.client, missing_namespace_plan(prefix, args.namespace))
        if held is not None:
            raise _NotFound(missing_namespace_message(args.namespace, prefix, held))
        if args.key:
            removed: int | None = engine.delete(args.namespace, *args.key)
            scope = "key"
        elif args.tag:
            removed = engine.invalidate_tags(args.namespace, *args.tag)
            scope = "tag"
        else:
            engine.clear(args.namespace)
            removed, scope = None, "namespace"
        if engine.core.pending_invalidations:
            raise RedisUnavailableError(f"Redis at {settings.redacted_url()} stopped answering")
    data = {"namespace": args.namespace, "scope": scope, "removed": removed}

    def render(d: dict[str, Any]) -> str:
        if d["scope"] == "namespace":
            return f"cleared namespace {d['namespace']!r}"
        return f"invalidated {d['removed']} entries of {d['namespace']!r} by {d['scope']}"

    output.emit(data, render)
    return EXIT_OK


def cmd_store_namespaces(settings: Settings, args: argparse.Namespace, output: Output) -> int:
    spelled = args.namespace_prefix or ""
    prefix = parse_namespace(spelled, "/")
    with _client(settings) as client:
        plan = store_namespaces_plan(args.prefix, prefix, limit=args.limit or None)
        listing = run_sync(client, plan)
    if listing.missing:
        raise _NotFound(missing_store_prefix_message(spelled, args.prefix, listing.held, "/"))

    def render(d: dict[str, Any]) -> str:
        rows = [(format_namespace(ns, "/"), items) for ns, items in listing.namespaces]
        more = " (more follow: --limit)" if listing.more else ""
        return table(rows, ("namespace", "items")) + f"\n{len(rows)} namespaces{more}"

    output.emit(listing.as_dict(), render)
    return EXIT_OK


# -- plumbing ------------------------------------------------------------------------------------


def _private_metrics() -> Any:
    from prometheus_client import CollectorRegistry

    from redis_checkpoint.metrics import Metrics

    return Metrics(CollectorRegistry())  # a CLI run must not touch the default registry


@contextmanager
def _client(settings: Settings) -> Iterator[Any]:
    client = create_client(settings)
    try:
        check_connection(client, settings.url)
        yield client
    finally:
        client.close()


@contextmanager
def _saver(settings: Settings, args: argparse.Namespace) -> Iterator[RedisSaver]:
    with RedisSaver.from_conn_string(
        settings=settings, key_prefix=args.prefix, fallback=False, metrics=_private_metrics()
    ) as saver:
        yield saver


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redis-checkpoint",
        description="Inspect and manage the redis_checkpoint caches and checkpoints in Redis.",
        epilog=(
            "exit codes: 0 done, 1 Redis unreachable or failed, 2 bad usage, 3 not found, "
            "4 password or ACL refused"
        ),
    )
    parser.add_argument("--url", help="Redis URL (default: $REDIS_URL)")
    parser.add_argument("--prefix", default=None, help="key prefix (default: settings, 'rc')")
    parser.add_argument("--cache-prefix", help="cache engine key prefix (default: PREFIX:cache)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: when stderr is a terminal)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("health", help="PING and INFO; exit 1 when Redis is down").set_defaults(
        run=cmd_health
    )
    stats = commands.add_parser("stats", help="server facts and keys/memory per cache type")
    stats.add_argument("--sample", type=_positive, default=100_000, help="max keys to scan")
    stats.set_defaults(run=cmd_stats)

    threads = commands.add_parser("threads", help="the saver's threads")
    threads_commands = threads.add_subparsers(dest="threads_command", required=True)
    listing = threads_commands.add_parser("list", help="thread ids")
    listing.add_argument("--limit", type=_positive, default=0, help="show at most N (0: all)")
    listing.set_defaults(run=cmd_threads_list)
    show = threads_commands.add_parser("show", help="a thread's checkpoints, newest first")
    show.add_argument("thread_id")
    show.add_argument("--limit", type=_positive, default=20, help="at most N checkpoints")
    show.set_defaults(run=cmd_threads_show)
    delete = threads_commands.add_parser("delete", help="delete a thread")
    delete.add_argument("thread_id")
    delete.set_defaults(run=cmd_threads_delete)

    prune = commands.add_parser("prune", help="prune threads' old checkpoints")
    prune.add_argument("--strategy", choices=("keep_latest", "delete"), default="keep_latest")
    prune.add_argument("--thread", action="append", help="this thread (repeatable)")
    prune.add_argument("--all", action="store_true", help="every thread of the saver")
    prune.add_argument(
        "--dry-run", action="store_true", help="list the threads it would prune, change nothing"
    )
    prune.set_defaults(run=cmd_prune)

    invalidate = commands.add_parser(
        "invalidate", help="invalidate cache entries by key or tag, or a whole namespace"
    )
    invalidate.add_argument("--namespace", required=True)
    invalidate.add_argument("--key", action="append", help="an entry key (repeatable)")
    invalidate.add_argument("--tag", action="append", help="a tag (repeatable)")
    invalidate.set_defaults(run=cmd_invalidate)

    store = commands.add_parser("store", help="the store's namespaces (read-only)")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    namespaces = store_commands.add_parser(
        "namespaces", help="namespaces with their item counts, sorted"
    )
    namespaces.add_argument(
        "--prefix",
        dest="namespace_prefix",
        metavar="A/B",
        help="only namespaces under these labels ('\\/' for a '/' inside a label)",
    )
    namespaces.add_argument("--limit", type=_positive, default=0, help="show at most N (0: all)")
    namespaces.set_defaults(run=cmd_store_namespaces)
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    settings: Settings | None = None
    try:
        settings = Settings.from_env(url=args.url)
        args.prefix = args.prefix or settings.key_prefix
        run: Callable[[Settings, argparse.Namespace, Output], int] = args.run
        return run(settings, args, Output(args.json, args.progress, out, err))
    except (_NotFound, ConfigurationError, RedisUnavailableError, RedisAuthError) as exc:
        err.write(f"redis-checkpoint: {exc}\n")
        return next(code for kind, code in _EXIT_CODES.items() if isinstance(exc, kind))
    except Exception as exc:
        # A refusal the layer below did not name (e.g. NOPERM on a script the saver loads).
        denied = access_error(exc, settings.redacted_url() if settings else "the configured URL")
        if denied is not None:
            err.write(f"redis-checkpoint: {denied}\n")
            return EXIT_AUTH
        err.write(f"redis-checkpoint: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED


#: The exit code of each error the command explains in one line.
_EXIT_CODES: dict[type[Exception], int] = {
    _NotFound: EXIT_NOT_FOUND,
    ConfigurationError: EXIT_USAGE,
    RedisUnavailableError: EXIT_FAILED,
    RedisAuthError: EXIT_AUTH,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
