"""What the sync and async savers share besides the core: options, the wiring of core, memory
tier, journal, breaker and router, versions, setup checks and the cluster lookups."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import warnings
from collections.abc import Generator
from typing import Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.exceptions import ResponseError

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.checkpoint.core import SaverCore
from redis_checkpoint.checkpoint.journal import Journal
from redis_checkpoint.checkpoint.keys import ThreadKeyLayout
from redis_checkpoint.checkpoint.memory import DEFAULT_MAX_OWED_BYTES, ThreadMemoryTier
from redis_checkpoint.checkpoint.routing import Router, Step, WriteBackReport
from redis_checkpoint.checkpoint.scripts import SCRIPTS
from redis_checkpoint.client import is_cluster, reply_text
from redis_checkpoint.errors import ConfigurationError, RedisUnavailableError
from redis_checkpoint.metrics import Metrics, get_metrics
from redis_checkpoint.settings import Settings, redact_url
from redis_checkpoint.steps import Invoke

log = logging.getLogger("redis_checkpoint.checkpoint")

DEFAULT_FALLBACK_BYTES = 64 * 1024 * 1024
DEFAULT_CLOSE_TIMEOUT = 10.0
EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")
EVICTING_WITH_TTL = ("volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")


class SaverOptions(TypedDict, total=False):
    """The savers' keyword options (see :class:`RedisSaverBase`): typed, so that a user's mypy
    catches a misspelt one (tests/test_typing.py keeps this list and the signature equal)."""

    serde: SerializerProtocol | None
    ttl: float | None
    refresh_on_read: bool
    max_history: int | None
    key_prefix: str | None
    fallback: bool
    fallback_max_bytes: int
    fallback_max_owed_bytes: int
    fallback_journal: str | os.PathLike[str] | None
    close_timeout: float
    wait_replicas: int
    wait_timeout: float
    metrics: Metrics | None
    breaker: CircuitBreaker | None


def check_client(client: object, kinds: tuple[type, ...], saver: str) -> None:
    """A TypeError that says what to pass, for anything but a client of ``kinds``."""
    if not isinstance(client, kinds):
        raise TypeError(
            f"{saver} takes a {' or '.join(_name(kind) for kind in kinds)}, not a "
            f"{_name(type(client))}; for a URL use {saver}.from_conn_string(url)"
        )


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


class RedisSaverBase(BaseCheckpointSaver[str]):
    """Shared state of :class:`RedisSaver` and :class:`AsyncRedisSaver`.

    Args:
        serde: serializer for checkpoints and writes (JsonPlusSerializer by default;
            EncryptedSerializer works).
        ttl: seconds after its last write that a thread expires, all its keys together;
            None keeps threads until deleted. Pin a thread to exempt it.
        refresh_on_read: reading a thread also restarts its TTL.
        max_history: checkpoints a thread keeps per namespace: each ``put`` prunes older ones
            in its own round trip (keeping those a DeltaChannel rebuilds from, as ``prune``
            does). None keeps all. ``set_thread_max_history`` gives one thread its own limit.
        key_prefix: first part of every key (default from settings, "rc").
        fallback: serve from a bounded in-memory tier while Redis is unreachable, and write what
            it took back to Redis when Redis returns. False: fail fast with RedisUnavailableError.
        fallback_max_bytes: budget of the in-memory tier for threads it only mirrors, in the
            same estimate of memory.
        fallback_max_owed_bytes: budget of the in-memory tier for threads it holds for Redis
            (written during an outage, or not yet confirmed by replicas), in its estimate of
            the memory they take (Python's objects included; within ~15 % of the process's
            measured growth, ``benchmarks/tier_soak.py``). An outage write that would go over
            it raises RedisUnavailableError and changes nothing (back-pressure instead of the
            OOM killer); reads are still answered, and writes are accepted again once
            write-backs to Redis have drained it. The default, 256 MiB, holds some 30,000 turns
            of a small chat graph (about 8 KB each). 0 refuses every outage write (reads only
            while Redis is away).
        fallback_journal: a directory: what the tier takes during an outage is appended there
            and fsynced before the call returns, and a saver opened later on the same directory
            (after a crash, say) writes back what is still owed.
        close_timeout: seconds closing the saver keeps trying to write back what the tier
            owes Redis (a failover may take a few) before it logs what is left at ERROR.
        wait_replicas: after each round trip that writes, WAIT for this many replicas to have
            it (so a checkpoint survives a primary's death); a write they do not confirm
            within ``wait_timeout`` seconds stays in the tier and is written back if the
            primary fails before a later WAIT confirms it.
    """

    def __init__(
        self,
        *,
        url: str,
        settings: Settings | None = None,
        serde: SerializerProtocol | None = None,
        ttl: float | None = None,
        refresh_on_read: bool = False,
        max_history: int | None = None,
        key_prefix: str | None = None,
        fallback: bool = True,
        fallback_max_bytes: int = DEFAULT_FALLBACK_BYTES,
        fallback_max_owed_bytes: int = DEFAULT_MAX_OWED_BYTES,
        fallback_journal: str | os.PathLike[str] | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        wait_replicas: int = 0,
        wait_timeout: float = 0.1,
        metrics: Metrics | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if ttl is not None and ttl < 0:
            raise ValueError(f"ttl must be >= 0 seconds or None, not {ttl!r}")
        if max_history is not None and (type(max_history) is not int or max_history < 1):
            raise ValueError(f"max_history must be an int >= 1 or None, not {max_history!r}")
        if fallback_journal is not None and not fallback:
            raise ConfigurationError("fallback_journal needs fallback=True (it journals the tier)")
        if type(fallback_max_owed_bytes) is not int or fallback_max_owed_bytes < 0:
            raise ConfigurationError(
                f"fallback_max_owed_bytes must be an int >= 0, not {fallback_max_owed_bytes!r}"
            )
        if close_timeout < 0 or wait_replicas < 0 or wait_timeout <= 0:
            raise ConfigurationError(
                f"close_timeout={close_timeout!r} and wait_replicas={wait_replicas!r} must be "
                f">= 0 and wait_timeout={wait_timeout!r} > 0"
            )
        self.close_timeout = close_timeout
        self.settings = settings or Settings()
        self.url = redact_url(url)
        self.ttl = ttl or None
        self.core = SaverCore(
            self.serde,
            ThreadKeyLayout(key_prefix or self.settings.key_prefix),
            ttl_ms=int((ttl or 0) * 1000),
            refresh_on_read=refresh_on_read,
            max_history=max_history or 0,
        )
        self.journal = (
            Journal(fallback_journal, self.core.layout.prefix)
            if fallback_journal is not None
            else None
        )
        self.memory = (
            ThreadMemoryTier(
                fallback_max_bytes,
                on_evict=self.core.known.forget_thread,
                journal=self.journal,
                max_owed_bytes=fallback_max_owed_bytes,
            )
            if fallback
            else None
        )
        if self.journal is not None and self.memory is not None:
            # A crashed process's outage writes: written back at setup (or once Redis answers).
            self.memory.adopt(self.journal.adopt())
        self.metrics = metrics or get_metrics()
        self.breaker = breaker or CircuitBreaker.from_settings(
            self.settings, name="checkpoint", on_transition=self.metrics.breaker_transition
        )
        self._router = Router(
            self.core,
            self.breaker,
            self.memory,
            self.metrics,
            self.url,
            locate=self._node_of if is_cluster(self.client) else None,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
        )

    @property
    def round_trips(self) -> int:
        """Round trips to Redis made so far (benchmarks read it around one call)."""
        return self._router.round_trips

    @property
    def serving_from_memory(self) -> bool:
        """Whether some threads are being served from memory (on a cluster: some node's)."""
        return self._router.breaker_state != "closed"

    @property
    def breaker_state(self) -> str:
        """The worst state among the breakers (one per cluster primary)."""
        return self._router.breaker_state

    @property
    def write_backs(self) -> int:
        """Threads written back from the in-memory tier so far (one restore each)."""
        return self._router.write_backs

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        """The next version of a channel: ``<length letter><counter>.<random>``.

        The letter spells the counter's digit count (b = 1, c = 2, ...), so versions sort as
        strings without zero padding: every checkpoint repeats its channels' versions, and short
        ones keep records small. The random tail keeps forked branches' versions apart.
        Versions of other savers (``"0000…12.0.43"``) are read by their leading number.
        """
        if current is None:
            number = 0
        elif isinstance(current, (int, float)):
            number = int(current)
        else:
            head = str(current).split(".", 1)[0]
            number = int(head[1:] if head[:1].isalpha() else head)
        digits = str(number + 1)
        return f"{chr(ord('a') + len(digits))}{digits}.{random.getrandbits(32):08x}"

    # -- helpers of the drivers ----------------------------------------------------------------

    def _setup_plan(self) -> Generator[Invoke | Step, Any, None]:
        """``setup()`` for either driver: load the scripts and warn about an evicting
        maxmemory-policy (Invoke steps on its client), then write back what an adopted journal
        owes. Redis away: the saver starts on its in-memory tier (the router decides)."""
        try:
            for script in SCRIPTS.values():
                yield Invoke("script_load", (script.source,))
            # CONFIG may be disabled (managed Redis): nothing to check then.
            with contextlib.suppress(ResponseError):
                self._check_policy((yield Invoke("config_get", ("maxmemory-policy",))))
        except Exception as exc:
            self._router.setup_failed(exc)
            return
        if self._router.owes:
            yield from self._router.write_back(limit=None)

    #: The driver's client (redis-py's sync one, or redis.asyncio's), set before this class's
    #: ``__init__`` runs: on a cluster the router is built with its slot map (``_node_of``).
    client: Any

    def _node_of(self, key: str) -> str:
        """The name of the cluster node serving ``key``'s slot (the router's ``locate``)."""
        cluster = self.client
        return str(cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key)).name)

    def _cluster_node(self, name: str) -> Any:
        """The cluster client's node of that name (a shard's primary)."""
        node = self.client.get_node(node_name=name)
        if node is None:
            raise RedisUnavailableError(f"Redis Cluster at {self.url} has no node {name} now")
        return node

    def _closed(self, report: WriteBackReport) -> None:
        """Say what closing left behind; keep the journal only while it holds something owed."""
        if report.left:
            where = (
                f"they are kept in the journal at {self.journal.directory} and the next saver "
                "opened on it writes them back"
                if self.journal is not None
                else "they are LOST (no fallback_journal)"
            )
            log.error(
                "closing the saver: %d threads taken in memory while Redis at %s was away "
                "could not be written back within %.1f s; %s: %s",
                len(report.left),
                self.url,
                self.close_timeout,
                where,
                ", ".join(repr(t) for t in report.left),
            )
        if report.unconfirmed:
            log.warning(
                "closing the saver: the last writes of %d threads were not confirmed by %d "
                "replicas of Redis at %s: %s",
                len(report.unconfirmed),
                self._router.wait_replicas,
                self.url,
                ", ".join(repr(t) for t in report.unconfirmed),
            )
        if self.journal is not None:
            if not report.left:
                self.journal.reset()
            self.journal.close()  # removed unless it still owes something

    def _check_policy(self, reply: Any) -> None:
        """Warn when Redis may evict keys: an evicted key is a silently lost conversation."""
        if isinstance(reply, dict):
            policies = {
                reply_text(v) for k, v in reply.items() if reply_text(k) == "maxmemory-policy"
            }
            # A cluster client answers per node: {node: {name: value}}.
            for value in reply.values():
                if isinstance(value, dict):
                    policies |= {
                        reply_text(v)
                        for k, v in value.items()
                        if reply_text(k) == "maxmemory-policy"
                    }
        else:
            policies = set()
        risky = [p for p in policies if p in EVICTING or (self.ttl and p in EVICTING_WITH_TTL)]
        if risky:
            message = (
                f"Redis at {self.url} has maxmemory-policy {risky[0]!r}: it may evict checkpoint "
                "keys under memory pressure and silently lose conversations. Use 'noeviction' "
                "(or a 'volatile-*' policy with ttl=None) for a checkpoint store."
            )
            log.warning(message)
            # Points at the caller of setup(): above this are _setup_plan, the plan loop's
            # resume and drive (or adrive), and setup (or asetup).
            warnings.warn(message, RuntimeWarning, stacklevel=6)
