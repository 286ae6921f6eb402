"""The one place where Redis clients are built.

Every component gets its client from :func:`create_client` or
:func:`create_async_client`, so all of them share the same timeouts, bounded
retries, pooling and binary (non-decoding) replies.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.exceptions
import redis.retry
import redis.sentinel
from redis.backoff import ExponentialBackoff
from redis.utils import HIREDIS_AVAILABLE as _HIREDIS_AVAILABLE

from .errors import ConfigurationError, RedisUnavailableError
from .failures import access_error, is_unavailable_error
from .settings import (
    Settings,
    boolean_word,
    join_url,
    parse_redis_url,
    redact_url,
    secret_free,
)
from .steps import Invoke, adrive, drive

__all__ = [
    "HIREDIS_AVAILABLE",
    "AsyncRedisClient",
    "SyncRedisClient",
    "acheck_connection",
    "aconnected",
    "check_connection",
    "connected",
    "create_async_client",
    "create_client",
    "describe_client",
    "is_cluster",
    "redact_url",
    "reply_text",
]

#: True when redis-py found a usable hiredis and parses replies with it.
HIREDIS_AVAILABLE: bool = bool(_HIREDIS_AVAILABLE)

SyncRedisClient = redis.Redis | redis.cluster.RedisCluster
AsyncRedisClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

# Backoff between the bounded retries: 10 ms, 20 ms, ... capped at 100 ms.
_BACKOFF_BASE = 0.005
_BACKOFF_CAP = 0.1
_SENTINEL_DEFAULT_PORT = 26379


# --- URL parsing ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    kind: Literal["standalone", "cluster", "sentinel"]
    tls: bool
    # standalone/cluster: a URL redis-py's own parser accepts. It and the passwords are kept out
    # of the repr, which a traceback or a debugger may show.
    url: str = field(default="", repr=False)
    # cluster: further startup nodes; sentinel: the sentinel addresses.
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    options: Mapping[str, str] = field(default_factory=dict)


def _bool_param(url: str, name: str, raw: str) -> bool:
    value = boolean_word(raw)
    if value is not None:
        return value
    raise ConfigurationError(
        f"{name}={raw!r} in {redact_url(url)} is not a boolean (expected true/false)"
    )


def _split_hosts(url: str, hosts: str, default_port: int | None) -> list[tuple[str, int]]:
    result: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            parts = urlsplit("//" + item)
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"bad host {item!r} in {redact_url(url)}: {exc}") from None
        if not parts.hostname:
            raise ConfigurationError(f"bad host {item!r} in {redact_url(url)}")
        if port is None:
            if default_port is None:
                raise ConfigurationError(f"host {item!r} in {redact_url(url)} needs a port")
            port = default_port
        result.append((parts.hostname, port))
    if not result:
        raise ConfigurationError(f"no host in {redact_url(url)}")
    return result


def _named_url(settings: Settings) -> str:
    """``REDIS_URL='redis://:***@host:6379/0'`` (or ``url=...``): the URL as messages show it."""
    return f"{settings.source('url')}={settings.redacted_url()!r}"


def _url_origin(settings: Settings) -> str:
    """Where a fix goes: ``REDIS_URL``, or ``the url= argument``."""
    source = settings.source("url")
    return "the url= argument" if source == "url" else source


def _parse_target(settings: Settings) -> _Target:
    url = settings.url
    # Settings has checked the URL already; this reads its hosts and db.
    checked = parse_redis_url(url, settings.source("url"))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    base_scheme, _, flavour = scheme.partition("+")
    tls = base_scheme == "rediss"
    query = parse_qsl(parts.query, keep_blank_values=True)
    cluster_param = [v for k, v in query if k == "cluster"]
    query = [(k, v) for k, v in query if k != "cluster"]
    url_wants_cluster = flavour == "cluster" or any(
        _bool_param(url, "cluster", v) for v in cluster_param
    )

    if settings.cluster is False and url_wants_cluster:
        raise ConfigurationError(f"cluster=False contradicts the cluster URL {redact_url(url)}")
    cluster = url_wants_cluster or settings.cluster is True

    if flavour == "sentinel":
        if cluster:
            raise ConfigurationError(f"a sentinel URL cannot also be a cluster: {redact_url(url)}")
        return _parse_sentinel(url, parts.netloc, parts.path, query, tls)

    if cluster:
        if base_scheme == "unix":
            raise ConfigurationError(
                f"Redis Cluster does not support unix sockets: {redact_url(url)}"
            )
        userinfo, at, hosts = parts.netloc.rpartition("@")
        nodes = _split_hosts(url, hosts, 6379)
        first_host, first_port = nodes[0]
        host_text = f"[{first_host}]" if ":" in first_host else first_host
        netloc = f"{userinfo}{at}{host_text}:{first_port}"
        plain = join_url(base_scheme, netloc, parts.path, urlencode(query))
        return _Target("cluster", tls, url=plain, hosts=tuple(nodes[1:]))

    if len(checked.hosts) > 1:
        raise ConfigurationError(
            f"{_named_url(settings)} lists {len(checked.hosts)} hosts, but only a cluster or "
            "Sentinel URL may list several: use redis+cluster://host:port,host:port (or "
            "REDIS_CLUSTER=true), redis+sentinel://host:port,host:port/service_name, or one host"
        )
    if not cluster_param:
        # untouched: redis-py parses it
        return _Target("standalone", tls, url=url, db=checked.db)
    plain = join_url(scheme, parts.netloc, parts.path, urlencode(query), parts.fragment)
    return _Target("standalone", tls, url=plain, db=checked.db)


def _parse_sentinel(
    url: str, netloc: str, path: str, query: list[tuple[str, str]], tls: bool
) -> _Target:
    # redis+sentinel://[[user]:password@]host1:port1[,host2:port2]/service_name[/db]
    userinfo, at, hosts_text = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = _split_hosts(url, hosts_text, _SENTINEL_DEFAULT_PORT)
    segments = [s for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ConfigurationError(
            f"sentinel URL {redact_url(url)} must look like "
            "redis+sentinel://[:password@]host:port[,host:port]/service_name[/db]"
        )
    service = unquote(segments[0])
    db_text = segments[1] if len(segments) == 2 else "0"
    options: dict[str, str] = {}
    sentinel_password: str | None = None
    for key, value in query:
        if key == "db":
            db_text = value
        elif key == "sentinel_password":
            sentinel_password = value
        elif key in ("password", "username"):
            if key == "password":
                password = value
            else:
                username = value
        else:
            options[key] = value
    if options:
        raise ConfigurationError(
            f"unsupported option(s) {sorted(options)} in sentinel URL {redact_url(url)}"
        )
    try:
        db = int(db_text)
    except ValueError:
        raise ConfigurationError(f"db={db_text!r} in {redact_url(url)} is not an integer") from None
    return _Target(
        "sentinel",
        tls,
        hosts=tuple(hosts),
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
    )


# --- settings resolution ----------------------------------------------------------------


def _settings_for(target: str | Settings | None, overrides: dict[str, Any]) -> Settings:
    if target is None:
        return Settings.from_env(**overrides)
    if isinstance(target, str):
        if overrides.get("url") is not None:
            raise ConfigurationError("pass the URL either positionally or as url=, not both")
        overrides = {k: v for k, v in overrides.items() if k != "url"}
        # The environment still supplies timeouts etc.; the explicit URL wins.
        return Settings.from_env(url=target, **overrides)
    return target.replace(**overrides)


def _decodes_responses(client: object) -> bool:
    getter = getattr(client, "get_connection_kwargs", None)
    if callable(getter):
        kwargs = getter()
        if isinstance(kwargs, Mapping) and "decode_responses" in kwargs:
            return bool(kwargs["decode_responses"])
    pool = getattr(client, "connection_pool", None)
    pool_kwargs = getattr(pool, "connection_kwargs", None)
    if isinstance(pool_kwargs, Mapping) and "decode_responses" in pool_kwargs:
        return bool(pool_kwargs["decode_responses"])
    encoder = getattr(client, "encoder", None)
    return bool(getattr(encoder, "decode_responses", False))


def _require_binary(client: object) -> None:
    if _decodes_responses(client):
        raise ConfigurationError(
            f"{type(client).__name__} was created with decode_responses=True; "
            "redis_checkpoint stores binary payloads and needs raw bytes replies, "
            "so create the client with decode_responses=False"
        )


def _common_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_connect_timeout,
        "decode_responses": False,
    }


def _cluster_failure(settings: Settings, exc: Exception) -> Exception:
    # The sync cluster client connects in its constructor; report an outage
    # as such and anything else (e.g. "cluster mode not enabled") as config.
    denied = access_error(exc, settings.redacted_url())
    if denied is not None:
        return denied
    if is_unavailable_error(exc):
        return RedisUnavailableError(
            f"cannot reach Redis Cluster at {settings.redacted_url()}: {exc}"
        )
    if _not_a_cluster(exc):
        return _not_a_cluster_error(settings)
    return ConfigurationError(
        f"cannot use Redis Cluster at {_named_url(settings)}: {_detail(exc, settings.url)}"
    )


def _not_a_cluster(exc: BaseException) -> bool:
    """True when ``exc`` is redis-py finding that a server it was told is a cluster node is not
    (a NOPERM on CLUSTER SLOTS reads the same, but is a refusal: see :func:`access_error`)."""
    return (
        isinstance(exc, redis.exceptions.RedisClusterException)
        and "not enabled" in str(exc)
        and access_error(exc, "") is None
    )


def _not_a_cluster_error(settings: Settings) -> ConfigurationError:
    """What the sync and the asyncio cluster clients raise alike when cluster mode was asked for
    a server that is not a cluster node: what asked for it, and how to stop asking."""
    scheme, _, _ = settings.url.partition("://")
    scheme = scheme.lower()
    url_name = _url_origin(settings)
    cluster_param = [v for k, v in parse_qsl(urlsplit(settings.url).query) if k == "cluster"]
    if scheme.endswith("+cluster"):
        asked = f"the {scheme}:// scheme of {url_name}"
        fix = f"use {scheme.partition('+')[0]}:// for a single server"
    elif any(boolean_word(v) is True for v in cluster_param):
        asked = f"cluster=true in the query of {url_name}"
        fix = "drop cluster=true for a single server"
    elif settings.source("cluster") == "cluster":
        asked = "cluster=True"
        fix = "pass cluster=None (decide from the URL) or cluster=False for a single server"
    else:
        asked = f"{settings.source('cluster')}=true"
        fix = f"set {settings.source('cluster')}=auto (or false) for a single server"
    return ConfigurationError(
        f"cannot use Redis Cluster: {asked} asks for it, but the server at "
        f"{_named_url(settings)} is not a cluster node (cluster mode is not enabled): "
        f"{fix}, or point {url_name} at a node of the cluster"
    )


def _detail(exc: BaseException, url: str) -> str:
    """``exc``'s message for an error about ``url``, unless it quotes part of the password."""
    text = str(exc)
    return text if secret_free(text, url) else f"{type(exc).__name__} (details hidden)"


# --- a db the server does not have ----------------------------------------------------


def _database_count(reply: Any) -> int | None:
    """The count in a CONFIG GET databases reply: a flat list (RESP2) or a map (RESP3)."""
    values = list(reply.values()) if isinstance(reply, Mapping) else list(reply or [])[1::2]
    try:
        return int(values[0])
    except (IndexError, TypeError, ValueError):
        return None


def _missing_db_error(settings: Settings, db: int, count: int | None) -> ConfigurationError:
    if count:
        has, fix = f"has {count} databases (0 to {count - 1})", f"use a db from 0 to {count - 1}"
    else:
        has = "does not have it (DB index is out of range)"
        fix = "use a db the server has (CONFIG GET databases; 16 by default, 0 to 15)"
    return ConfigurationError(
        f"{_named_url(settings)} selects db {db}, but the server {has}: {fix} in "
        f"{_url_origin(settings)}, or raise `databases` in the server's configuration"
    )


def _connect_plan(settings: Settings, db: int) -> Generator[Invoke, Any, None]:
    """A new connection's handshake as redis-py does it (AUTH, SELECT, ...), except that a db
    the server does not have raises a ConfigurationError naming it and the server's count, not
    a bare ResponseError: the connection, still open, asks CONFIG GET databases first.

    Each step is a call of a method of the connection; the sync and asyncio hooks below make it."""
    try:
        yield Invoke("on_connect")
    except redis.exceptions.ResponseError as exc:
        if "DB index is out of range" not in str(exc):
            raise
        count: int | None = None
        try:
            yield Invoke("send_command", ("CONFIG", "GET", "databases"))
            count = _database_count((yield Invoke("read_response")))
        except redis.exceptions.RedisError:
            pass  # CONFIG renamed or forbidden (managed Redis, an ACL): say it without the count
        with contextlib.suppress(Exception):
            yield Invoke("disconnect")
        raise _missing_db_error(settings, db, count) from exc


def _sync_connect_hook(settings: Settings) -> Callable[[Any], None]:
    def connect(connection: Any) -> None:
        drive(_connect_plan(settings, connection.db), lambda step: step.on(connection))

    _OWN_HOOKS.add(connect)
    return connect


def _async_connect_hook(settings: Settings) -> Callable[[Any], Awaitable[None]]:
    async def connect(connection: Any) -> None:
        async def run(step: Invoke) -> Any:
            return await step.on(connection)

        await adrive(_connect_plan(settings, connection.db), run)

    _OWN_HOOKS.add(connect)
    return connect


#: The connect hooks made above: a copy of a client (cache.face.mirror_client) may leave them
#: out, losing only the clearer message about a missing db.
_OWN_HOOKS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def is_own_connect_hook(function: object) -> bool:
    """Whether a connection's ``redis_connect_func`` is this module's check of the db."""
    try:
        return function in _OWN_HOOKS
    except TypeError:
        return False


class _AsyncRedisCluster(redis.asyncio.cluster.RedisCluster):
    """redis-py's asyncio cluster client. It connects on first use, so that is where a server
    that is not a cluster node raises the ConfigurationError the sync client raises when built."""

    _checkpoint_settings: Settings | None = None

    async def initialize(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().initialize(*args, **kwargs)
        except redis.exceptions.RedisClusterException as exc:
            if self._checkpoint_settings is None or not _not_a_cluster(exc):
                raise
            raise _not_a_cluster_error(self._checkpoint_settings) from exc


# --- factories --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Flavour:
    """redis-py's classes for one side (sync or asyncio): one factory body builds both."""

    name: str
    redis: Any
    cluster: Any
    cluster_class: Any  # what builds a cluster client (``cluster`` is what one is)
    connect_hook: Callable[[Settings], Any]  # checks the db a new connection selects
    node: Any
    sentinel: Any
    pool: Any
    retry: Any
    other: tuple[type, ...]  # the other side's clients, refused with a pointer to its factory
    other_factory: str


_SYNC = _Flavour(
    "create_client",
    redis.Redis,
    redis.cluster.RedisCluster,
    redis.cluster.RedisCluster,
    _sync_connect_hook,
    redis.cluster.ClusterNode,
    redis.sentinel.Sentinel,
    redis.BlockingConnectionPool,
    redis.retry.Retry,
    (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster),
    "create_async_client",
)
_ASYNC = _Flavour(
    "create_async_client",
    redis.asyncio.Redis,
    redis.asyncio.cluster.RedisCluster,
    _AsyncRedisCluster,
    _async_connect_hook,
    redis.asyncio.cluster.ClusterNode,
    redis.asyncio.sentinel.Sentinel,
    redis.asyncio.BlockingConnectionPool,
    redis.asyncio.retry.Retry,
    (redis.Redis, redis.cluster.RedisCluster),
    "create_client",
)


def _build(flavour: _Flavour, target: Any, overrides: dict[str, Any]) -> Any:
    if isinstance(target, flavour.other):
        raise ConfigurationError(
            f"{flavour.name}() cannot use {type(target).__module__}.{type(target).__name__}; "
            f"use {flavour.other_factory}() for it"
        )
    if isinstance(target, (flavour.redis, flavour.cluster)):
        _require_binary(target)
        return target
    if target is not None and not isinstance(target, (str, Settings)):
        raise ConfigurationError(
            f"{flavour.name}() target={type(target).__name__!s} is not a URL, Settings or "
            "redis client"
        )
    settings = _settings_for(target, overrides)
    parsed = _parse_target(settings)
    common = _common_kwargs(settings)
    # Only transport failures are retried, and only a few times: redis-py's
    # default policy (10 retries, 1 s cap) makes a dead server cost seconds.
    retry = flavour.retry(
        ExponentialBackoff(cap=_BACKOFF_CAP, base=_BACKOFF_BASE),
        settings.retries,
        supported_errors=(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
    )
    if parsed.db and parsed.kind != "cluster":
        # Only a non-zero db is selected, so only then can the server lack it.
        common["redis_connect_func"] = flavour.connect_hook(settings)
    if parsed.kind == "sentinel":
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": settings.socket_timeout,
            "socket_connect_timeout": settings.socket_connect_timeout,
            "retry": retry,
        }
        if parsed.tls:
            sentinel_kwargs["ssl"] = True
        if parsed.sentinel_password is not None:
            sentinel_kwargs["password"] = parsed.sentinel_password
        # ``common`` (the db hook too) goes to the master's connections, sentinel_kwargs to
        # the Sentinels'.
        sentinel = flavour.sentinel(list(parsed.hosts), sentinel_kwargs=sentinel_kwargs, **common)
        client = sentinel.master_for(
            parsed.service,
            redis_class=flavour.redis,
            db=parsed.db,
            username=parsed.username,
            password=parsed.password,
            ssl=parsed.tls,
            max_connections=settings.max_connections,
            retry=retry,
        )
    elif parsed.kind == "cluster":
        try:
            client = flavour.cluster_class.from_url(
                parsed.url,
                startup_nodes=[flavour.node(h, p) for h, p in parsed.hosts],
                retry=retry,
                max_connections=settings.max_connections,
                **common,
            )
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise _cluster_failure(settings, exc) from exc
        except ValueError as exc:
            raise _unusable_url(settings, exc) from None
        if isinstance(client, _AsyncRedisCluster):
            client._checkpoint_settings = settings
    else:
        # Blocking pool: callers past max_connections wait (up to socket_timeout)
        # instead of getting MaxConnectionsError, which looks like an outage.
        try:
            pool = flavour.pool.from_url(
                parsed.url,
                max_connections=settings.max_connections,
                timeout=settings.socket_timeout,
                retry=retry,
                **common,
            )
        except ValueError as exc:
            raise _unusable_url(settings, exc) from None
        client = flavour.redis.from_pool(pool)
    # A URL query string (?decode_responses=true) overrides our kwargs.
    _require_binary(client)
    return client


def _unusable_url(settings: Settings, exc: ValueError) -> ConfigurationError:
    """A URL that passed our checks but not redis-py's parser (a query option's value, say)."""
    return ConfigurationError(
        f"{_named_url(settings)} is not a URL redis-py can use: {_detail(exc, settings.url)}"
    )


def create_client(
    target: str | Settings | redis.Redis | redis.cluster.RedisCluster | None = None,
    **overrides: Any,
) -> redis.Redis | redis.cluster.RedisCluster:
    """Return a synchronous client for ``target``.

    ``target`` is a URL, a :class:`Settings`, an existing client (returned
    as-is after checking it returns bytes; ``overrides`` are then ignored) or
    ``None`` for :meth:`Settings.from_env`. ``overrides`` are Settings fields.
    The sync cluster client connects at once: an unreachable cluster raises
    RedisUnavailableError here.
    """
    client: redis.Redis | redis.cluster.RedisCluster = _build(_SYNC, target, overrides)
    return client


def create_async_client(
    target: (
        str | Settings | redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None
    ) = None,
    **overrides: Any,
) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
    """Asyncio counterpart of :func:`create_client` (nothing connects until first use)."""
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = _build(
        _ASYNC, target, overrides
    )
    return client


# --- inspection and health ------------------------------------------------------------


def is_cluster(client: object) -> bool:
    """True for a sync or asyncio Redis Cluster client."""
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def describe_client(client: object) -> str:
    """A URL-like, password-free description of where ``client`` points, for messages."""
    nodes_manager = getattr(client, "nodes_manager", None)
    startup = getattr(nodes_manager, "startup_nodes", None)
    if isinstance(startup, Mapping) and startup:
        node = next(iter(startup.values()))
        return f"redis+cluster://{node.host}:{node.port}"
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if isinstance(service, str):
        sentinels = getattr(getattr(pool, "sentinel_manager", None), "sentinels", [])
        hosts = ",".join(
            "{host}:{port}".format_map(s.connection_pool.connection_kwargs) for s in sentinels
        )
        return f"redis+sentinel://{hosts}/{service}"
    getter = getattr(client, "get_connection_kwargs", None)
    kwargs = getter() if callable(getter) else {}
    if isinstance(kwargs, Mapping):
        if kwargs.get("path"):
            return f"unix://{kwargs['path']}"
        if kwargs.get("host"):
            return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    return type(client).__name__


def _connection_failure(exc: Exception, where: str) -> Exception | None:
    """What a failed PING raises instead: refused credentials or an outage (None: ``exc``)."""
    denied = access_error(exc, where)
    if denied is not None:
        return None if denied is exc else denied
    if is_unavailable_error(exc):
        return RedisUnavailableError(f"cannot reach Redis at {where}: {exc}")
    return None


def check_connection(
    client: redis.Redis | redis.cluster.RedisCluster, url: str | None = None
) -> None:
    """PING ``client``; raise :class:`RedisUnavailableError` if Redis is unreachable and
    :class:`RedisAuthError` if it refuses the credentials (or the ACL forbids PING)."""
    where = redact_url(url) if url is not None else describe_client(client)
    try:
        client.ping()
    except Exception as exc:
        failure = _connection_failure(exc, where)
        if failure is None:
            raise
        raise failure from exc


async def acheck_connection(
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster, url: str | None = None
) -> None:
    """Asyncio counterpart of :func:`check_connection`."""
    where = redact_url(url) if url is not None else describe_client(client)
    try:
        await client.ping()
    except Exception as exc:
        failure = _connection_failure(exc, where)
        if failure is None:
            raise
        raise failure from exc


@contextlib.contextmanager
def connected(
    url: str | None, settings: Settings | None, *, check: bool = True
) -> Iterator[tuple[SyncRedisClient, Settings]]:
    """A client on ``url`` (or the settings, or REDIS_URL) and the settings it was made from,
    checked with a PING unless ``check`` is False, and closed at the end: what every
    ``from_conn_string`` starts from."""
    settings = settings or Settings.from_env(url=url)
    client = create_client(settings)
    try:
        if check:
            check_connection(client, settings.url)
        yield client, settings
    finally:
        client.close()


@contextlib.asynccontextmanager
async def aconnected(
    url: str | None, settings: Settings | None, *, check: bool = True
) -> AsyncIterator[tuple[AsyncRedisClient, Settings]]:
    """:func:`connected` for an asyncio client."""
    settings = settings or Settings.from_env(url=url)
    client = create_async_client(settings)
    try:
        if check:
            await acheck_connection(client, settings.url)
        yield client, settings
    finally:
        await client.aclose()


def reply_text(value: Any) -> str:
    """A Redis reply as text (bytes decoded, undecodable bytes replaced)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
