"""Connection and behaviour settings, read from arguments or the environment."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from .errors import ConfigurationError

__all__ = [
    "ENV_VARS",
    "SUPPORTED_SCHEMES",
    "RedisUrl",
    "Settings",
    "boolean_word",
    "join_url",
    "parse_redis_url",
    "redact_url",
    "secret_free",
]

SUPPORTED_SCHEMES: tuple[str, ...] = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)

# Environment variable -> Settings field.
ENV_VARS: dict[str, str] = {
    "REDIS_URL": "url",
    "REDIS_MAX_CONNECTIONS": "max_connections",
    "REDIS_SOCKET_TIMEOUT": "socket_timeout",
    "REDIS_SOCKET_CONNECT_TIMEOUT": "socket_connect_timeout",
    "REDIS_RETRIES": "retries",
    "CACHE_ENABLED": "cache_enabled",
    "CACHE_DEFAULT_TTL": "default_ttl",
    "REDIS_KEY_PREFIX": "key_prefix",
    "REDIS_CLUSTER": "cluster",
}

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_SECRET_QUERY_KEYS = frozenset({"password", "sentinel_password"})
_SCHEME_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, the rest as written.

    User name, hosts, ports, path and other query parameters are kept so the
    result still identifies the server in logs and error messages. A password
    holding '/', '#', '?' or '@' without percent-encoding confuses URL parsers;
    everything that might be part of it is masked then (see :func:`_secret_spans`).
    """
    try:
        urlsplit(url)
    except ValueError:
        # Never echo something we could not parse: it may hold a secret.
        return "<unparseable redis url>"
    return _masked(url, _secret_spans(url))


@dataclass(frozen=True)
class _Layout:
    """Where the parts of a URL are, read the way urllib (and so redis-py) reads it."""

    start: int  # just after '://' (0 when there is none)
    host_end: int  # the host part ends at the first '/', '?' or '#' after ``start``
    path_end: int  # the query ('?') or the fragment ('#') begins here, else the end
    query_end: int  # the fragment ('#') begins here, else the end
    secret_value: int | None  # where the value of a password query parameter begins


def _layout(url: str) -> _Layout:
    scheme, separator, _ = url.partition("://")
    # Without a scheme before '://', all of it may be user information (user:pw@host://...).
    start = len(scheme) + 3 if separator and _SCHEME_TOKEN.fullmatch(scheme) else 0
    ends = [i for i in (url.find(c, start) for c in "/?#") if i >= 0]
    host_end = min(ends, default=len(url))
    fragment = url.find("#", host_end)
    query_end = len(url) if fragment < 0 else fragment
    question = url.find("?", host_end, query_end)
    path_end = query_end if question < 0 else question
    secret_value: int | None = None
    if question >= 0:
        offset = question + 1
        for param in url[offset:query_end].split("&"):
            key, equals, _ = param.partition("=")
            if equals and unquote_plus(key) in _SECRET_QUERY_KEYS:
                secret_value = offset + len(key) + 1
                break
            offset += len(param) + 1
    return _Layout(start, host_end, path_end, query_end, secret_value)


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """The stretches (start, end) of ``url`` that may hold a password.

    A password with a raw '/', '#', '?' or '@' gives a URL two readings: urllib's (and
    redis-py's), where the host part ends at the first '/', '?' or '#', and its author's,
    where the user information runs to the last '@'. Both are covered: from the first ':'
    after the scheme to the last '@', and from the value of a password query parameter to the
    end (a raw '&' or '#' may be part of it).
    """
    layout = _layout(url)
    spans: list[tuple[int, int]] = []
    at = url.rfind("@", layout.start)
    colon = url.find(":", layout.start, at) if at >= 0 else -1
    if colon >= 0:
        spans.append((colon + 1, at))
    if layout.secret_value is not None:
        spans.append((layout.secret_value, len(url)))
    return spans


def _masked(url: str, spans: Iterable[tuple[int, int]]) -> str:
    """``url`` with each of ``spans`` (merged where they overlap) replaced by ``***``."""
    merged: list[list[int]] = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    pieces: list[str] = []
    last = 0
    for begin, end in merged:
        pieces += [url[last:begin], "***"]
        last = end
    pieces.append(url[last:])
    return "".join(pieces)


def secret_free(text: str, url: str) -> bool:
    """True when ``text`` (another library's error message, say) quotes no part of ``url``
    that :func:`redact_url` would mask, raw or percent-decoded."""
    for begin, end in _secret_spans(url):
        secret = url[begin:end]
        if secret and (secret in text or unquote_plus(secret) in text):
            return False
    return True


def join_url(scheme: str, netloc: str, path: str, query: str = "", fragment: str = "") -> str:
    """Inverse of urlsplit that always keeps ``//`` (urlunsplit drops it for unix:///)."""
    url = f"{scheme}://{netloc}{path}"
    if query:
        url = f"{url}?{query}"
    if fragment:
        url = f"{url}#{fragment}"
    return url


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad(label: str, value: object, expectation: str) -> ConfigurationError:
    return ConfigurationError(f"{label}={value!r} {expectation}")


# --- the one check of a Redis URL ---------------------------------------------------

_SCHEMES_TEXT = ", ".join(s + "://" for s in SUPPORTED_SCHEMES)
_DB_PATH = re.compile(r"/([0-9]+)/?")
_EXAMPLE = "redis://127.0.0.1:6379/0"
_ENCODE_HINT = (
    "percent-encode the password and user name ('/' as %2F, '#' as %23, '?' as %3F, '@' as "
    "%40; in Python urllib.parse.quote(password, safe='')), e.g. redis://:PASS%2FWORD@host:6379/0"
)
_SENTINEL_SHAPE = "redis+sentinel://[[user]:password@]host:port[,host:port]/service_name[/db]"


@dataclass(frozen=True)
class RedisUrl:
    """What :func:`parse_redis_url` found in a URL it accepted (redis-py parses the rest)."""

    scheme: str  # lower case, one of SUPPORTED_SCHEMES
    hosts: tuple[str, ...]  # the host[:port] items of the host part (none for unix://)
    db: int  # from the path (/0, or /service/0 for Sentinel) or ?db=, else 0


def parse_redis_url(url: str, label: str = "url") -> RedisUrl:
    """Check ``url`` the way every client of this package is built from: :class:`Settings`
    runs it on ``url=`` and on REDIS_URL, so the saver, the cache engines, the health monitor
    and the CLI all reject the same URLs with the same words.

    A bad URL raises :class:`ConfigurationError` naming ``label`` (REDIS_URL, or url), showing
    the URL with any password masked (see :func:`redact_url`) and saying the fix. Checked here:
    empty; no or an unknown scheme; a '/', '#', '?' or '@' in the password that would make
    part of it read as host, port or db; a port that is not a number from 1 to 65535; a db
    (path or ``?db=``) that is not a number. Whether the server has that db is checked when
    the first connection selects it (:mod:`redis_checkpoint.client`).
    """
    text = url.rstrip()  # a trailing newline (a URL read from a file) is harmless

    def bad(problem: str, *hidden: tuple[int, int]) -> ConfigurationError:
        return _bad(label, _masked(url, [*_secret_spans(url), *hidden]), problem)

    if not text:
        raise _bad(label, url, f"is empty: give a Redis URL such as {_EXAMPLE}")
    written_scheme, separator, _ = text.partition("://")
    if not separator or not _SCHEME_TOKEN.fullmatch(written_scheme):
        raise bad(
            f"does not start with a scheme and '://' (expected one of {_SCHEMES_TEXT}, "
            f"e.g. {_EXAMPLE}): check the ':' and the '//' after the scheme"
        )
    scheme = written_scheme.lower()
    if scheme not in SUPPORTED_SCHEMES:
        raise bad(f"has unsupported scheme {scheme!r} (expected one of {_SCHEMES_TEXT})")
    try:
        urlsplit(text)
    except ValueError:
        # urllib's message may quote the host part, password and all.
        raise ConfigurationError(
            f"{label} holds a URL that cannot be parsed, so it is not shown: check for an "
            f"unbalanced '[' or ']' in its host part, and {_ENCODE_HINT}"
        ) from None
    layout = _layout(text)

    # A '@' past the host part (that no password query value explains) means the user
    # information was cut short by a '/', '#' or '?': part of the password would be read as the
    # host, port or db. Only a ':' before the last '@' makes it a password, not a user name.
    explained_from = len(text) if layout.secret_value is None else layout.secret_value
    stray_at = "@" in text[layout.host_end : explained_from]
    if stray_at and ":" in text[layout.start : text.rfind("@")]:
        raise bad(
            "has a '/', '#', '?' or '@' in its password or user name, which ends the host part "
            f"of a URL early, so part of the password would be read as host, port or db: "
            f"{_ENCODE_HINT}"
        )

    hosts: list[str] = []
    if scheme != "unix":
        first = text.rfind("@", layout.start, layout.host_end) + 1 or layout.start
        offset = first
        for item in text[first : layout.host_end].split(","):
            if item.strip():
                _check_port(item, offset, bad)
                hosts.append(item)
            offset += len(item) + 1

    path = text[layout.host_end : layout.path_end]
    query = (
        text[layout.path_end + 1 : layout.query_end] if layout.path_end < layout.query_end else ""
    )
    db = 0
    if scheme == "unix":
        if not path:
            raise bad("has no socket path: e.g. unix:///run/redis/redis.sock?db=0")
    elif scheme.endswith("+sentinel"):
        segments = [segment for segment in path.split("/") if segment]
        if not 1 <= len(segments) <= 2:
            raise bad(f"must look like {_SENTINEL_SHAPE}")
        if len(segments) == 2:
            if not _is_digits(segments[1]):
                raise bad(
                    f"has {segments[1]!r} as its db: the db after the service name must be a "
                    f"number, as in {_SENTINEL_SHAPE}"
                )
            db = int(segments[1])
    elif path not in ("", "/"):
        match = _DB_PATH.fullmatch(path)
        if match is None:
            raise bad(
                f"has {path!r} as its db: the path must be a db number, e.g. /0 (a server has "
                "databases 0 to 15 unless its `databases` setting says otherwise)"
            )
        db = int(match.group(1))
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "db":
            if not _is_digits(value):
                raise bad(f"has db={value!r} in its query: db must be a number, e.g. ?db=0")
            db = int(value)
    return RedisUrl(scheme, tuple(hosts), db)


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _check_port(item: str, offset: int, bad: Callable[..., ConfigurationError]) -> None:
    """Check the port of one host[:port] item of the host part (``offset``: where it starts)."""
    not_host_port = f"has a host part that is not host:port or [IPv6]:port: e.g. {_EXAMPLE}"
    if item.startswith("["):  # [IPv6]:port
        close = item.find("]")
        if close < 0:
            raise bad(not_host_port)
        tail_at = close + 1
    else:
        colon = item.find(":")
        tail_at = colon if colon >= 0 else len(item)
    tail = item[tail_at:]
    if tail and not tail.startswith(":"):
        raise bad(not_host_port)
    port = tail[1:]
    if not port:
        return  # no port: redis-py's default (6379; 26379 for a Sentinel)
    if not _is_digits(port):
        # Not shown: it may be a password whose '@host' went missing (redis://user:password).
        raise bad(
            "has a port that is not a number (hidden here, in case it is a password): the "
            f"port must be a number from 1 to 65535, e.g. {_EXAMPLE}; a password goes before "
            "the host: redis://:PASSWORD@host:6379/0",
            (offset + tail_at + 1, offset + len(item)),
        )
    if not 1 <= int(port) <= 65535:
        raise bad(f"has port {int(port)}, outside 1 to 65535: e.g. {_EXAMPLE}")


@dataclass(frozen=True)
class Settings:
    """Everything needed to build clients and the layers on top of them.

    ``default_ttl`` of 0 is normalised to ``None`` (no expiry). ``cluster`` of
    ``None`` means "decide from the URL".
    """

    url: str = "redis://127.0.0.1:6379/0"
    max_connections: int = 50
    socket_timeout: float = 2.0
    socket_connect_timeout: float = 0.5
    retries: int = 1
    cache_enabled: bool = True
    default_ttl: int | None = 3600
    key_prefix: str = "rc"
    cluster: bool | None = None
    breaker_failure_threshold: int = 3
    breaker_recovery_timeout: float = 1.0
    breaker_max_recovery_timeout: float = 30.0

    # The fields read from environment variables, for messages (see :meth:`source`). Not a
    # field: equality, hashing and repr ignore where a value came from.
    _from_env: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = _validate(field.name, getattr(self, field.name), field.name)
            # Normalised values (0 TTL -> None, int timeouts -> float).
            object.__setattr__(self, field.name, value)
        if self.breaker_max_recovery_timeout < self.breaker_recovery_timeout:
            raise ConfigurationError(
                f"breaker_max_recovery_timeout={self.breaker_max_recovery_timeout!r} "
                f"must be >= breaker_recovery_timeout={self.breaker_recovery_timeout!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from environment variables.

        Explicit keyword ``overrides`` win over the environment (the variable
        is then not read); an override of ``None`` counts as not given (use
        ``default_ttl=0`` for no expiry). Empty environment variables count as
        unset, except REDIS_URL: set but empty, it is an error rather than a
        silent fall back to the local default.
        """
        env = os.environ if environ is None else environ
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(unknown)}; expected some of {sorted(known)}"
            )
        values: dict[str, Any] = {}
        for var, name in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or overrides.get(name) is not None:
                continue
            if not raw.strip():
                if name == "url":
                    raise ConfigurationError(
                        f"{var} is set but empty: set it to a Redis URL such as {_EXAMPLE}, "
                        "or unset it to use that default"
                    )
                continue
            raw = raw.strip()
            # Errors quote the text as written in the environment.
            shown = redact_url(raw) if name == "url" else raw
            values[name] = _validate(name, _PARSERS[name](var, raw), var, shown)
        from_env = frozenset(values)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        settings = cls(**values)
        object.__setattr__(settings, "_from_env", from_env)
        return settings

    def source(self, name: str) -> str:
        """How messages name setting ``name``: its environment variable when the value was read
        from the environment (``REDIS_URL``), else the argument (``url``)."""
        return _ENV_VAR_OF[name] if name in self._from_env else name

    def redacted_url(self) -> str:
        """The URL with its password replaced by ``***``, safe for logs."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        # The generated repr would show the password, in logs, tracebacks, and even the repr of
        # the bound method ``settings.redacted_url`` if someone forgets to call it.
        shown = (
            f"{f.name}={self.redacted_url() if f.name == 'url' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"{type(self).__name__}({', '.join(shown)})"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(unknown)}; expected some of {sorted(known)}"
            )
        given = {k: v for k, v in changes.items() if v is not None}
        if not given:
            return self
        changed = dataclasses.replace(self, **given)
        object.__setattr__(changed, "_from_env", self._from_env - set(given))
        return changed


# --- parsing of environment strings -------------------------------------------------


def _parse_str(var: str, raw: str) -> str:
    return raw


def _parse_int(var: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _bad(var, raw, "is not an integer") from None


def _parse_float(var: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _bad(var, raw, "is not a number (expected seconds, e.g. 2.0)") from None
    if not math.isfinite(value):
        raise _bad(var, raw, "is not a finite number (expected seconds, e.g. 2.0)")
    return value


def boolean_word(raw: str) -> bool | None:
    """The boolean a URL option or an environment variable spells (true/false, 1/0, yes/no,
    on/off, in any case); None for any other word."""
    lowered = raw.lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def _parse_bool(var: str, raw: str) -> bool:
    value = boolean_word(raw)
    if value is not None:
        return value
    raise _bad(var, raw, "is not a boolean (expected true/false, 1/0, yes/no or on/off)")


def _parse_ttl(var: str, raw: str) -> int | None:
    if raw.lower() == "none":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _bad(
            var, raw, "is not a TTL (expected whole seconds, or 0/none for no expiry)"
        ) from None


def _parse_cluster(var: str, raw: str) -> bool | None:
    if raw.lower() == "auto":
        return None
    try:
        return _parse_bool(var, raw)
    except ConfigurationError:
        raise _bad(var, raw, "is not a boolean (expected true/false or auto)") from None


_ENV_VAR_OF: dict[str, str] = {name: var for var, name in ENV_VARS.items()}

_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "url": _parse_str,
    "max_connections": _parse_int,
    "socket_timeout": _parse_float,
    "socket_connect_timeout": _parse_float,
    "retries": _parse_int,
    "cache_enabled": _parse_bool,
    "default_ttl": _parse_ttl,
    "key_prefix": _parse_str,
    "cluster": _parse_cluster,
}


# --- validation of typed values -----------------------------------------------------


_UNSET: Any = object()


def _validate(name: str, value: Any, label: str, shown: Any = _UNSET) -> Any:
    """Check one field; ``label`` is what the error names (field or env var)."""
    if shown is _UNSET:
        shown = redact_url(value) if name == "url" and isinstance(value, str) else value
    if name == "url":
        if not isinstance(value, str):
            raise _bad(label, shown, f"must be a Redis URL string such as {_EXAMPLE}")
        parse_redis_url(value, label)
        return value
    if name in ("max_connections", "breaker_failure_threshold"):
        if not _is_int(value) or value < 1:
            raise _bad(label, shown, "must be a positive integer")
        return value
    if name == "retries":
        if not _is_int(value) or value < 0:
            raise _bad(label, shown, "must be an integer >= 0")
        return value
    if name in (
        "socket_timeout",
        "socket_connect_timeout",
        "breaker_recovery_timeout",
        "breaker_max_recovery_timeout",
    ):
        if not _is_number(value) or value <= 0:
            raise _bad(label, shown, "must be a positive number of seconds")
        return float(value)
    if name == "cache_enabled":
        if not isinstance(value, bool):
            raise _bad(label, shown, "must be a bool")
        return value
    if name == "default_ttl":
        if value is None:
            return None
        if not _is_int(value) or value < 0:
            raise _bad(label, shown, "must be whole seconds >= 0, or None/0 for no expiry")
        return value or None
    if name == "key_prefix":
        if not isinstance(value, str) or not value:
            raise _bad(label, shown, "must be a non-empty string")
        if any(c in "{}" or c.isspace() for c in value):
            raise _bad(label, shown, "must not contain '{', '}' or whitespace")
        return value
    if name == "cluster":
        if value is not None and not isinstance(value, bool):
            raise _bad(label, shown, "must be True, False or None (decide from the URL)")
        return value
    raise _bad(label, shown, "is not a known setting")  # pragma: no cover
