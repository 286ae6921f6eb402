"""What of a request the HTTP cache keys on, bypasses for, or ignores (pure functions, no I/O).

A shared cache is poisoned when the app's answer depends on a request input that is not in the
key: one client's request then decides what every later client of that URL gets. So every input
that apps commonly read to decide *which* resource to build, or *where* it lives, is either in the
key as the client sent it, or makes the request bypass the cache:

* **keyed as sent**: the forwarding headers (``Forwarded``, ``X-Forwarded-Host``, ``-Proto``,
  ``-For``...), the client-address headers (``X-Real-IP``, ``CF-Connecting-IP``...) and the rewrite
  headers (``X-Original-URL``, ``X-Rewrite-URL``...), each occurrence with its value, in the order
  received. A request that carries none of them (every visitor who talks to the app directly)
  shares its entry only with others that carry none; an attacker's injected value gets an entry of
  its own that nobody else asks for. Keying rather than bypassing keeps caching on behind a proxy,
  which sends the same values for every request of a site.
* **bypass**: a method override (``X-HTTP-Method-Override``...: the app may answer a GET as a
  DELETE, so the request is handled as an unsafe one), a body on GET or HEAD (the answer may depend
  on it), and more than one ``Host`` header (apps read the first, a key could take another).

A trusted proxy (:class:`TrustedForwarding`) changes two things and no more: the client addresses
it adds are left out of the key, as the socket's peer address is (they differ per visitor and are
not chosen by the client), and the host it names is the host of the entry's invalidation tags.
Everything the client itself put in those headers stays in the key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

__all__ = [
    "CLIENT_ADDRESS_HEADERS",
    "CREDENTIAL_HEADERS",
    "KEYED_HEADERS",
    "METHOD_OVERRIDE_HEADERS",
    "ClientAddressHeader",
    "RequestInputs",
    "TrustedForwarding",
    "read_request",
]

#: Headers in which a proxy (or anyone) names the client's address; one value each.
ClientAddressHeader = Literal[
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
]
CLIENT_ADDRESS_HEADERS: Final = frozenset(name.encode() for name in get_args(ClientAddressHeader))
#: Headers apps read to learn another scheme, host, port, path or client than the request's own.
KEYED_HEADERS: Final = CLIENT_ADDRESS_HEADERS | frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-scheme",
        b"x-forwarded-server",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-path",
        b"x-forwarded-ssl",
        b"front-end-https",
        b"x-url-scheme",
        b"x-host",
        b"x-original-host",
        b"x-http-host-override",
        b"x-script-name",
        b"x-original-url",
        b"x-original-uri",
        b"x-rewrite-url",
    }
)
#: Headers with which a client asks the app to treat the request as another method.
METHOD_OVERRIDE_HEADERS: Final = frozenset(
    {b"x-http-method-override", b"x-http-method", b"x-method-override"}
)
#: Headers that carry credentials: handled as ``Authorization`` is (RFC 9111 3.5).
CREDENTIAL_HEADERS: Final = frozenset(
    {b"authorization", b"proxy-authorization", b"x-api-key", b"x-auth-token", b"x-access-token"}
)
# Request headers the cache's own rules read.
_RULE_HEADERS: Final = frozenset({b"cookie", b"cache-control", b"pragma", b"range"})


@dataclass(frozen=True)
class TrustedForwarding:
    """The proxies in front of the app, declared so that the cache reads their headers as they
    define them (pass as ``CacheMiddleware(trusted_forwarding=...)``).

    Each count is how many trusted proxies add a value to that header (0: none does, so whatever
    it holds came from the client). As with Werkzeug's ``ProxyFix``, the last ``n`` values of a
    list header are the proxies'; values before them came from the client and stay in the key.

    * ``x_forwarded_for`` / ``forwarded``: the addresses the proxies add (``X-Forwarded-For``
      values, ``for=`` of ``Forwarded`` elements) are left out of the key. ``forwarded`` also
      makes ``host=`` of the first trusted element the entry's host.
    * ``x_forwarded_host``: the first trusted value is the entry's host for invalidation (its
      tags), so an unsafe request through the proxy invalidates the entries of the host it names.
      The key keeps the ``Host`` header and ``X-Forwarded-Host`` as sent.
    * ``client_address_headers``: single-value headers the proxy sets to the client's address
      (``"x-real-ip"``, ``"cf-connecting-ip"``...), overwriting any the client sent; left out of
      the key.
    * ``proxies``: the addresses (or networks, ``"10.0.0.0/8"``) the nearest proxy connects
      from, as uvicorn's ``forwarded_allow_ips``; ``"*"`` for any, which a unix socket needs. A
      request from anywhere else reached the app around the proxy: its headers are the
      client's own, keyed as sent.

    Every other forwarding header stays in the key as sent, trusted or not: a proxy sends the
    same value for every request of a site, so keying it costs no hits.
    """

    x_forwarded_for: int = 0
    forwarded: int = 0
    x_forwarded_host: int = 0
    client_address_headers: Sequence[ClientAddressHeader] = ()
    proxies: Sequence[str] = ("127.0.0.1", "::1")
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def trusts(self, client: Any) -> bool:
        """Whether a request from ``client`` (the ASGI scope's ``(host, port)`` or None) came
        through the declared proxies."""
        if self._networks is None:
            return True  # "*"
        if not client:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def __post_init__(self) -> None:
        for name in ("x_forwarded_for", "forwarded", "x_forwarded_host"):
            count = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"TrustedForwarding({name}={count!r}) must be a count >= 0")
        if isinstance(self.client_address_headers, str):
            raise TypeError("client_address_headers must be a sequence of header names")
        known = sorted(name.decode() for name in CLIENT_ADDRESS_HEADERS)
        for name in self.client_address_headers:
            if name.lower().encode("latin-1") not in CLIENT_ADDRESS_HEADERS:
                raise ValueError(
                    f"{name!r} is not a client-address header; one of {', '.join(known)}"
                )
        object.__setattr__(
            self,
            "client_address_headers",
            tuple(sorted({name.lower() for name in self.client_address_headers})),
        )
        if isinstance(self.proxies, str):
            raise TypeError("proxies must be a sequence of addresses, e.g. ['10.0.0.0/8']")
        object.__setattr__(self, "proxies", tuple(self.proxies))
        if "*" not in self.proxies:
            try:
                networks = tuple(ipaddress.ip_network(entry) for entry in self.proxies)
            except ValueError as exc:
                raise ValueError(f"TrustedForwarding(proxies=...): {exc}") from None
            object.__setattr__(self, "_networks", networks)


_NOBODY: Final = TrustedForwarding()


@dataclass(frozen=True)
class RequestInputs:
    """What the cache reads of one request's headers, in one pass."""

    #: The Host header's value (the first), else the server's address; lower-case.
    host: str
    #: The host whose entries the request reads and invalidates (tags): the one a trusted proxy
    #: names, else ``host``.
    site: str
    #: The keyed headers as they go into the key: (name, value) in the order received.
    keyed: tuple[tuple[str, str], ...]
    #: The first method-override header's value, upper-case; None when there is none.
    method_override: str | None
    #: Why the request must bypass the cache whatever its method (None: it need not).
    bypass: str | None
    #: The values of the headers the cache's own rules read (cookie, cache-control...).
    rule_headers: dict[bytes, bytes]
    #: Whether it carries credentials (``Authorization`` or another credential header).
    credentials: bool
    #: The untrusted client-address headers it carries (for a hint to declare a proxy).
    untrusted_addresses: tuple[str, ...]


def _values(raw: bytes) -> list[str]:
    return [part.strip() for part in raw.decode("latin-1").split(",")]


def _split_trusted(occurrences: list[bytes], count: int) -> tuple[list[list[str]], list[str]]:
    """A list header's values per occurrence less the last ``count`` (the trusted proxies'),
    and those. When it holds fewer values than there are proxies, they are all the client's."""
    values = [_values(raw) for raw in occurrences]
    total = sum(len(occurrence) for occurrence in values)
    if count == 0 or total < count:
        return values, []
    trusted: list[str] = []
    while len(trusted) < count:
        last = values[-1]
        take = min(len(last), count - len(trusted))
        trusted[:0] = last[len(last) - take :]
        del last[len(last) - take :]
        if not last:
            values.pop()
    return values, trusted


def _without_for(element: str) -> str:
    params = [pair.strip() for pair in element.split(";")]
    return ";".join(p for p in params if p.partition("=")[0].strip().lower() != "for")


def _param(element: str, wanted: str) -> str | None:
    for pair in element.split(";"):
        name, _, value = pair.partition("=")
        if name.strip().lower() == wanted:
            return value.strip().strip('"')
    return None


def _content_length(raw: bytes) -> int:
    text = raw.strip()
    return int(text) if text.isdigit() else 1  # unreadable: assume a body, to be safe


def read_request(
    scope: MutableMapping[str, Any], trusted: TrustedForwarding | None = None
) -> RequestInputs:
    """Read the request's headers once: its host, its keyed inputs and any reason to bypass.
    ``trusted`` applies only to a request that came from one of its proxies."""
    trust = trusted if trusted is not None and trusted.trusts(scope.get("client")) else _NOBODY
    keyed: list[tuple[str, str]] = []
    lists: dict[bytes, list[bytes]] = {b"x-forwarded-for": [], b"forwarded": []}
    forwarded_hosts: list[bytes] = []
    rule_headers: dict[bytes, bytes] = {}
    hosts: list[bytes] = []
    override: str | None = None
    credentials = False
    body = False
    untrusted: list[str] = []
    for name, value in scope["headers"]:
        if name == b"host":
            hosts.append(value)
        elif name in lists:
            lists[name].append(value)
        elif name in KEYED_HEADERS:
            text = name.decode("latin-1")
            if text in trust.client_address_headers:
                continue  # the proxy's word for the client's address, like the peer's
            keyed.append((text, value.decode("latin-1")))
            if name == b"x-forwarded-host":
                forwarded_hosts.append(value)
            elif name in CLIENT_ADDRESS_HEADERS:
                untrusted.append(text)
        elif name in METHOD_OVERRIDE_HEADERS:
            if override is None:
                override = value.decode("latin-1").strip().upper() or "?"
        elif name in CREDENTIAL_HEADERS:
            credentials = True
        elif name == b"content-length":
            body = body or _content_length(value) > 0
        elif name == b"transfer-encoding":
            body = True
        elif name in _RULE_HEADERS:
            rule_headers[name] = value
    host: str | None = None
    client_for, _ = _split_trusted(lists[b"x-forwarded-for"], trust.x_forwarded_for)
    keyed += [("x-forwarded-for", ", ".join(values)) for values in client_for]
    client_forwarded, proxies = _split_trusted(lists[b"forwarded"], trust.forwarded)
    keyed += [("forwarded", ", ".join(values)) for values in client_forwarded]
    if proxies:
        keyed.append(("forwarded", ", ".join(_without_for(element) for element in proxies)))
        host = _param(proxies[0], "host")
    _, proxy_hosts = _split_trusted(forwarded_hosts, trust.x_forwarded_host)
    if host is None and proxy_hosts:
        host = proxy_hosts[0]
    if lists[b"x-forwarded-for"] and not trust.x_forwarded_for:
        untrusted.append("x-forwarded-for")
    if lists[b"forwarded"] and not trust.forwarded:
        untrusted.append("forwarded")
    bypass = None
    if len(hosts) > 1:
        bypass = "more than one Host header"
    elif body and scope["method"] in ("GET", "HEAD"):
        bypass = f"a body on {scope['method']}"
    own_host = (hosts[0].decode("latin-1") if hosts else _server(scope)).lower()
    return RequestInputs(
        host=own_host,
        site=host.lower() if host else own_host,
        keyed=tuple(keyed),
        method_override=override,
        bypass=bypass,
        rule_headers=rule_headers,
        credentials=credentials,
        untrusted_addresses=tuple(dict.fromkeys(untrusted)),
    )


def _server(scope: MutableMapping[str, Any]) -> str:
    server = scope.get("server") or ("", None)
    return f"{server[0]}:{server[1]}" if server[1] else str(server[0])
