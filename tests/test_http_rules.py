"""The pure parts of the HTTP cache: RFC 9111 rules, entry encoding, the near cache's bounds."""

from __future__ import annotations

from typing import Any

import pytest

from redis_checkpoint.web import rfc9111
from redis_checkpoint.web.entry import (
    StoredResponse,
    VaryMarker,
    decode_entry,
    encode_entry,
    path_tags,
)
from redis_checkpoint.web.near import NearCache


def test_cache_control_parsing() -> None:
    headers = [(b"Cache-Control", b'public, max-age="60"'), (b"cache-control", b"S-MaxAge=5")]
    assert rfc9111.directives(headers) == {"public": None, "max-age": "60", "s-maxage": "5"}
    assert rfc9111.explicit_lifetime(headers, rfc9111.directives(headers)) == 5
    bad = [(b"cache-control", b"max-age=soon")]
    assert rfc9111.explicit_lifetime(bad, rfc9111.directives(bad)) == 0  # invalid: stale
    dated = [
        (b"date", b"Thu, 26 Nov 2026 10:00:00 GMT"),
        (b"expires", b"Thu, 26 Nov 2026 10:02:00 GMT"),
    ]
    assert rfc9111.explicit_lifetime(dated, {}) == 120
    assert rfc9111.explicit_lifetime([(b"expires", b"0")], {}) == 0
    assert rfc9111.explicit_lifetime([], {}) is None  # none given: the middleware's default


def test_if_none_match() -> None:
    etag = b'"abc"'
    assert rfc9111.none_match(b'"abc"', etag)
    assert rfc9111.none_match(b'W/"abc"', etag)
    assert rfc9111.none_match(b'"x", W/"abc" , "y"', etag)
    assert rfc9111.none_match(b"*", etag)
    assert rfc9111.none_match(b'"a,b", "abc"', etag)  # a comma inside quotes does not split
    assert not rfc9111.none_match(b'"abcd"', etag)
    assert not rfc9111.none_match(None, etag)


def test_vary_names() -> None:
    assert rfc9111.vary_names([(b"vary", b"Accept-Encoding, accept-language")]) == (
        "accept-encoding",
        "accept-language",
    )
    assert rfc9111.vary_names([(b"vary", b"accept, *")]) is None
    assert rfc9111.vary_names([]) == ()


def test_refusals() -> None:
    anonymous = rfc9111.RequestFacts(authorization=False, per_user=False)
    with_auth = rfc9111.RequestFacts(authorization=True, per_user=False)

    def refusal(status: int, facts: rfc9111.RequestFacts, *headers: tuple[bytes, bytes]) -> Any:
        return rfc9111.refusal(status, list(headers), rfc9111.directives(list(headers)), facts)

    assert refusal(200, anonymous) is None
    assert refusal(206, anonymous) == "status 206"
    assert refusal(500, anonymous) == "status 500"
    assert refusal(200, anonymous, (b"cache-control", b"no-store")) == "no-store"
    assert refusal(200, anonymous, (b"cache-control", b"private")) == "private"
    assert refusal(200, anonymous, (b"set-cookie", b"a=b")) == "Set-Cookie"
    assert refusal(200, with_auth) is not None
    for allowed in (b"public", b"s-maxage=10", b"must-revalidate"):
        assert refusal(200, with_auth, (b"cache-control", allowed)) is None


def test_entries_round_trip_and_foreign_bytes_are_refused() -> None:
    response = StoredResponse(200, [(b"a", b"b")], b"body", b'"e"', 1.5, 60.0, 0.0, False)
    assert decode_entry(encode_entry(response)) == response
    assert decode_entry(encode_entry(VaryMarker(("accept",)))) == VaryMarker(("accept",))
    with pytest.raises(ValueError):
        decode_entry(b"\x93\xa1R\x01\x02")


def test_path_tags() -> None:
    assert path_tags("h", "/a/b") == ["=h/a/b", "^h/", "^h/a", "^h/a/b"]
    assert path_tags("h", "/") == ["=h/", "^h/"]


def test_near_cache_bounds() -> None:
    now = [0.0]
    near = NearCache(10, max_entries=2, max_bytes=10, clock=lambda: now[0])

    def entry(body: bytes) -> StoredResponse:
        return StoredResponse(200, [], body, b'"e"', 0.0, 60.0, 0.0, False)

    near.put("a", entry(b"1"))
    near.put("b", entry(b"2"))
    assert near.get("a") is not None  # a is now the most recent
    near.put("c", entry(b"3"))
    assert near.get("b") is None and near.get("a") is not None  # LRU by entries
    near.put("d", entry(b"1234567890"))
    assert len(near) == 1 and near.get("d") is not None  # bounded in bytes
    near.put("huge", entry(b"x" * 11))
    assert near.get("huge") is None
    now[0] = 10.0
    assert near.get("d") is None  # aged out
