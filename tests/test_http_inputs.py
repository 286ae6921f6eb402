"""What the HTTP cache reads of a request (web/inputs.py): pure functions on hand-made scopes."""

from __future__ import annotations

from typing import Any

import pytest

from redis_checkpoint import TrustedForwarding
from redis_checkpoint.web.inputs import KEYED_HEADERS, read_request


def scope(
    *headers: tuple[str, str], method: str = "GET", client: Any = ("127.0.0.1", 50000)
) -> dict[str, Any]:
    """A request from ``client`` (by default the proxy on this host)."""
    pairs = [(name.encode(), value.encode()) for name, value in headers]
    return {
        "type": "http",
        "method": method,
        "headers": pairs,
        "server": ("10.0.0.5", 8000),
        "client": client,
    }


def test_a_plain_request_keys_nothing_extra() -> None:
    inputs = read_request(scope(("host", "Shop.Example"), ("accept", "text/html")))
    assert (inputs.host, inputs.site, inputs.keyed) == ("shop.example", "shop.example", ())
    assert inputs.bypass is None and inputs.method_override is None and not inputs.credentials


def test_without_a_host_header_the_server_address_is_the_host() -> None:
    assert read_request(scope()).host == "10.0.0.5:8000"


@pytest.mark.parametrize("name", sorted(name.decode() for name in KEYED_HEADERS))
def test_every_keyed_header_is_keyed_as_sent_when_nothing_is_trusted(name: str) -> None:
    inputs = read_request(scope(("host", "a"), (name, "Evil, x")))
    assert inputs.keyed == ((name, "Evil, x"),)
    assert inputs.site == "a" and inputs.bypass is None


def test_occurrences_stay_apart_in_the_key() -> None:
    """Apps read the first occurrence: two headers are not one list."""
    two = read_request(scope(("x-forwarded-host", "evil"), ("x-forwarded-host", "good")))
    one = read_request(scope(("x-forwarded-host", "evil, good")))
    assert two.keyed != one.keyed


def test_trusted_x_forwarded_for_leaves_the_proxies_addresses_out() -> None:
    trust = TrustedForwarding(x_forwarded_for=1)
    alone = read_request(scope(("x-forwarded-for", "203.0.113.7")), trust)
    other = read_request(scope(("x-forwarded-for", "198.51.100.2")), trust)
    assert alone.keyed == other.keyed == () and alone.untrusted_addresses == ()
    injected = read_request(scope(("x-forwarded-for", "evil, 203.0.113.7")), trust)
    assert injected.keyed == (("x-forwarded-for", "evil"),)
    # Two proxies, the outer one adding its own header line: the last two values are theirs.
    two = TrustedForwarding(x_forwarded_for=2)
    lines = read_request(
        scope(("x-forwarded-for", "evil, 1.1.1.1"), ("x-forwarded-for", "2.2.2.2")), two
    )
    assert lines.keyed == (("x-forwarded-for", "evil"),)
    # Fewer values than proxies: the request did not come through them all, so all is keyed.
    short = read_request(scope(("x-forwarded-for", "1.1.1.1")), two)
    assert short.keyed == (("x-forwarded-for", "1.1.1.1"),)


def test_untrusted_client_addresses_are_named_for_the_hint() -> None:
    inputs = read_request(scope(("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "1.1.1.1")))
    assert set(inputs.untrusted_addresses) == {"x-forwarded-for", "x-real-ip"}


def test_trusted_forwarded_drops_for_and_names_the_site() -> None:
    trust = TrustedForwarding(forwarded=1)
    header = (
        "forwarded",
        'for=evil;host=evil.example, for="[2001:db8::1]";proto=https;host=Shop.Example',
    )
    inputs = read_request(scope(("host", "backend:8000"), header), trust)
    assert inputs.site == "shop.example" and inputs.host == "backend:8000"
    assert inputs.keyed == (
        ("forwarded", "for=evil;host=evil.example"),
        ("forwarded", "proto=https;host=Shop.Example"),
    )


def test_trusted_x_forwarded_host_names_the_site_and_stays_in_the_key() -> None:
    trust = TrustedForwarding(x_forwarded_host=1)
    inputs = read_request(
        scope(("host", "backend"), ("x-forwarded-host", "evil, shop.example")), trust
    )
    assert inputs.site == "shop.example"
    assert inputs.keyed == (("x-forwarded-host", "evil, shop.example"),)
    untrusted = read_request(scope(("host", "backend"), ("x-forwarded-host", "shop.example")))
    assert untrusted.site == "backend"


def test_trusted_client_address_headers_leave_the_key() -> None:
    trust = TrustedForwarding(client_address_headers=["x-real-ip"])
    inputs = read_request(scope(("x-real-ip", "1.2.3.4"), ("cf-connecting-ip", "1.2.3.4")), trust)
    assert inputs.keyed == (("cf-connecting-ip", "1.2.3.4"),)


@pytest.mark.parametrize(
    ("proxies", "client", "trusted"),
    [
        (("127.0.0.1", "::1"), ("127.0.0.1", 1), True),
        (("127.0.0.1", "::1"), ("::1", 1), True),
        (("127.0.0.1", "::1"), ("203.0.113.9", 1), False),  # around the proxy
        (("127.0.0.1", "::1"), None, False),
        (("10.0.0.0/8",), ("10.20.30.40", 1), True),
        (("10.0.0.0/8",), ("11.0.0.1", 1), False),
        (("10.0.0.0/8",), ("not-an-ip", 1), False),
        (("*",), None, True),  # a unix socket
        (("*",), ("203.0.113.9", 1), True),
    ],
)
def test_trust_applies_only_to_requests_from_the_proxies(
    proxies: tuple[str, ...], client: Any, trusted: bool
) -> None:
    trust = TrustedForwarding(x_forwarded_for=1, proxies=proxies)
    inputs = read_request(scope(("x-forwarded-for", "203.0.113.7"), client=client), trust)
    assert inputs.keyed == (() if trusted else (("x-forwarded-for", "203.0.113.7"),))


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"x_forwarded_for": -1}, ValueError),
        ({"forwarded": True}, ValueError),
        ({"client_address_headers": ["x-forwarded-host"]}, ValueError),
        ({"client_address_headers": "x-real-ip"}, TypeError),
        ({"proxies": ["10.0.0.300"]}, ValueError),
        ({"proxies": "10.0.0.1"}, TypeError),
    ],
)
def test_trusted_forwarding_is_checked(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        TrustedForwarding(**options)


@pytest.mark.parametrize(
    ("headers", "method", "bypass"),
    [
        ((("host", "a"), ("host", "b")), "GET", "more than one Host header"),
        ((("content-length", "4"),), "GET", "a body on GET"),
        ((("transfer-encoding", "chunked"),), "HEAD", "a body on HEAD"),
        ((("content-length", "x"),), "GET", "a body on GET"),
        ((("content-length", "0"),), "GET", None),
        ((("content-length", "4"),), "POST", None),
    ],
)
def test_reasons_to_bypass(
    headers: tuple[tuple[str, str], ...], method: str, bypass: str | None
) -> None:
    assert read_request(scope(*headers, method=method)).bypass == bypass


def test_method_override_and_credentials() -> None:
    inputs = read_request(scope(("x-http-method-override", "delete"), ("x-api-key", "k")))
    assert inputs.method_override == "DELETE" and inputs.credentials
    assert read_request(scope(("x-method-override", " "))).method_override == "?"
