"""RFC 9111 MUSTs of a shared cache that are easy to miss, on a real redis-server: invalid dates,
unknown unsafe methods, a list-valued Age, invalidation before the response leaves, and what an
outage or a never-cached path costs an unsafe request."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cache_helpers import private_metrics, unique
from http_helpers import http_scope

from redis_checkpoint import CacheMiddleware, CacheRule, Settings
from redis_checkpoint.web import rfc9111
from redis_checkpoint.web.rfc9111 import age, http_date

Scope = dict[str, Any]
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def origin(calls: Counter[str], headers_for: Callable[[str], list[tuple[bytes, bytes]]]) -> Any:
    """An app that answers every method with 200, a body counting GETs of the path, and the
    headers ``headers_for(path)``; a POST body is streamed in two messages."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        path, method = scope["path"], scope["method"]
        calls[f"{method} {path}"] += 1
        headers = [(b"content-type", b"text/plain"), *headers_for(path)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if method == "POST":
            await send({"type": "http.response.body", "body": b"saved", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = f"{path}#{calls[f'GET {path}']}".encode()
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture
async def cached(redis_url: str) -> AsyncIterator[Callable[..., Any]]:
    made: list[CacheMiddleware] = []

    def make(
        headers_for: Callable[[str], list[tuple[bytes, bytes]]] = lambda path: [],
        url: str | Settings = redis_url,
        **options: Any,
    ) -> tuple[CacheMiddleware, httpx.AsyncClient, Counter[str]]:
        calls: Counter[str] = Counter()
        app = CacheMiddleware(
            origin(calls, headers_for),
            url,
            prefix=unique("rfc9111"),
            metrics=private_metrics(),
            **options,
        )
        made.append(app)
        transport = httpx.ASGITransport(app=app)
        return app, httpx.AsyncClient(transport=transport, base_url="http://testserver"), calls

    yield make
    for app in made:
        await app.aclose()


def _dates(at: float) -> dict[str, str]:
    """``at`` in the three HTTP-date forms of RFC 9110 5.6.7."""
    t = time.gmtime(at)
    month, clock = _MONTHS[t.tm_mon - 1], f"{t.tm_hour:02}:{t.tm_min:02}:{t.tm_sec:02}"
    day = _DAYS[t.tm_wday]
    return {
        "IMF-fixdate": f"{day[:3]}, {t.tm_mday:02} {month} {t.tm_year} {clock} GMT",
        "rfc850-date": f"{day}, {t.tm_mday:02}-{month}-{t.tm_year % 100:02} {clock} GMT",
        "asctime-date": f"{day[:3]} {month} {t.tm_mday:2} {clock} {t.tm_year}",
    }


def test_the_three_date_forms_and_nothing_else() -> None:
    at = 1_800_000_000.0  # 2027-01-15
    for form, text in _dates(at).items():
        assert http_date(text.encode()) == at, form
        # Recipients are to be robust (RFC 9110 5.6.7): names in the wrong case still parse.
        assert http_date(text.upper().encode()) == at, form
        assert http_date(text.lower().encode()) == at, form
    invalid = [
        "Fri, 15 Jan 2027 08:00:00 UTC",  # another zone name
        "Fri, 15 Jan 2027 08:00:00 +0000",
        "Fri, 15 Jan 27 08:00:00 GMT",  # a two-digit year in the IMF form
        "Fri 15 Jan 2027 08:00:00 GMT",  # no comma
        "Fri, 30 Feb 2027 08:00:00 GMT",
        "Fri, 15 Jan 2027 24:00:00 GMT",
        "0",
        "-1",
        "",
    ]
    for text in invalid:
        assert http_date(text.encode()) is None, text


@pytest.mark.parametrize("form", ["IMF-fixdate", "rfc850-date", "asctime-date"])
async def test_a_valid_expires_in_each_form_is_fresh(cached: Any, form: str) -> None:
    expires = _dates(time.time() + 3600)[form]
    _, client, calls = cached(lambda path: [(b"expires", expires.encode())])
    await client.get("/dated")
    assert (await client.get("/dated")).headers["x-cache"] == "HIT"
    assert calls["GET /dated"] == 1


@pytest.mark.parametrize(
    "expires",
    [
        "{IMF} UTC",  # the IMF form of an hour ahead, with another zone name
        "Fri, 01 Jan 49 00:00:00 GMT",  # two-digit year: 2049 to a lenient parser
        "Tue 01 Jan 2099 00:00:00 GMT",  # no comma
        "0",
        "never",
    ],
)
async def test_an_invalid_expires_means_already_expired(cached: Any, expires: str) -> None:
    ahead = _dates(time.time() + 3600)["IMF-fixdate"].removesuffix(" GMT")
    value = expires.replace("{IMF}", ahead).encode()
    _, client, calls = cached(lambda path: [(b"expires", value)])
    await client.get("/dated")
    again = await client.get("/dated")
    assert again.headers["x-cache"] == "MISS" and calls["GET /dated"] == 2


def test_age_is_its_first_member() -> None:
    assert age([(b"age", b"7200, 0")]) == 7200
    assert age([(b"age", b"7200"), (b"age", b"0")]) == 7200
    assert age([(b"age", b"abc")]) == 0 and age([(b"age", b"-5")]) == 0 and age([]) == 0


async def test_a_list_valued_age_is_read_by_its_first_member(cached: Any) -> None:
    headers = {
        "/old": [(b"cache-control", b"max-age=3600"), (b"age", b"7200, 0")],
        "/young": [(b"cache-control", b"max-age=3600"), (b"age", b"60, 5000")],
    }
    _, client, calls = cached(lambda path: headers[path])
    for path in ("/old", "/young"):
        await client.get(path)
        await client.get(path)
    assert calls["GET /old"] == 2  # already stale when it arrived: not stored
    assert calls["GET /young"] == 1
    assert int((await client.get("/young")).headers["age"]) >= 60


@pytest.mark.parametrize(
    ("method", "invalidates"),
    [("M-SEARCH", True), ("PURGE", True), ("POST", True), ("OPTIONS", False), ("TRACE", False)],
)
async def test_a_method_not_known_to_be_safe_invalidates(
    cached: Any, method: str, invalidates: bool
) -> None:
    _, client, _ = cached()
    await client.get("/thing")
    assert (await client.get("/thing")).headers["x-cache"] == "HIT"
    assert (await client.request(method, "/thing")).headers["x-cache"] == "BYPASS"
    after = await client.get("/thing")
    assert after.headers["x-cache"] == ("MISS" if invalidates else "HIT")


async def test_invalidation_happens_before_the_response_starts_to_leave(cached: Any) -> None:
    """A client that has seen any of the POST's response (here: its status line, and its first
    body message) must not read the old entry, on this connection or another."""
    app, client, _ = cached()
    await client.get("/report")
    assert (await client.get("/report")).headers["x-cache"] == "HIT"
    seen: list[tuple[str, str]] = []

    async def client_side(message: dict[str, Any]) -> None:
        other = await client.get("/report")
        seen.append((message["type"], other.headers["x-cache"]))

    scope = http_scope("POST", "/report")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app(scope, receive, client_side)
    # The first GET re-stores the page, so the GETs after it may hit the new entry.
    assert seen[0] == ("http.response.start", "MISS")
    assert [kind for kind, _ in seen] == ["http.response.start", *["http.response.body"] * 2]


async def test_a_never_cached_path_costs_no_invalidation(cached: Any) -> None:
    headers = {"/admin/save": [(b"location", b"/items/7")], "/admin/ping": []}
    rules = [CacheRule("/admin/*", cache=False)]
    app, client, _ = cached(lambda path: headers.get(path, []), rules=rules)
    await client.get("/items/7")
    before = app.engine.round_trips
    await client.post("/admin/ping")
    assert app.engine.round_trips == before  # nothing of its own, nothing named
    assert (await client.get("/items/7")).headers["x-cache"] == "HIT"
    await client.post("/admin/save")  # names /items/7 in its Location: that one goes
    assert (await client.get("/items/7")).headers["x-cache"] == "MISS"


async def test_an_outage_logs_no_traceback_per_write(
    cached: Any, dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, client, _ = cached(url=Settings(url=dead_url, retries=0, socket_connect_timeout=0.2))
    with caplog.at_level(logging.WARNING, logger="redis_checkpoint"):
        for _ in range(5):
            assert (await client.put("/items/1")).status_code == 200
    loud = [r for r in caplog.records if r.name.startswith("redis_checkpoint")]
    assert not [r for r in loud if r.levelno >= logging.ERROR or r.exc_info]
    assert len(loud) <= 1, [r.getMessage() for r in loud]  # the engine's "serves from memory"


SHARED = rfc9111.RequestFacts(authorization=False, per_user=False)
NO_CACHE = "no-cache without a validator (it could never be revalidated)"


def _refusal(status: int, *headers: tuple[bytes, bytes], facts: Any = SHARED) -> str | None:
    return rfc9111.refusal(status, headers, rfc9111.directives(headers), facts)


@pytest.mark.parametrize("status", sorted(rfc9111.CACHEABLE_STATUSES))
def test_every_heuristically_cacheable_status_may_be_stored(status: int) -> None:
    assert _refusal(status) is None


@pytest.mark.parametrize("status", [201, 202, 206, 302, 303, 307, 400, 401, 403, 500, 503])
def test_other_statuses_are_not_stored(status: int) -> None:
    assert _refusal(status) == f"status {status}"


@pytest.mark.parametrize(
    ("headers", "facts", "reason"),
    [
        (((b"cache-control", b"no-store"),), SHARED, "no-store"),
        (((b"cache-control", b"no-cache"),), SHARED, NO_CACHE),
        (
            ((b"cache-control", b'no-cache="set-cookie"'),),
            SHARED,
            NO_CACHE,
        ),
        (((b"cache-control", b"private"),), SHARED, "private"),
        (((b"set-cookie", b"a=b"),), SHARED, "Set-Cookie"),
        (((b"vary", b"accept, *"),), SHARED, "Vary: *"),
        # A Content-Range means nothing on a 200 (RFC 9110 14.4): a full response, stored.
        (((b"content-range", b"bytes 0-9/100"),), SHARED, None),
        (
            (),
            rfc9111.RequestFacts(authorization=True, per_user=False),
            "Authorization without public, s-maxage or must-revalidate",
        ),
        (((b"cache-control", b"private"),), rfc9111.RequestFacts(False, per_user=True), None),
        (
            ((b"cache-control", b"s-maxage=60"),),
            rfc9111.RequestFacts(authorization=True, per_user=False),
            None,
        ),
    ],
)
def test_what_a_shared_cache_refuses_to_store(
    headers: tuple[tuple[bytes, bytes], ...], facts: Any, reason: str | None
) -> None:
    assert _refusal(200, *headers, facts=facts) == reason


def test_the_edges_of_a_date() -> None:
    assert http_date(b"Sun, 31 Dec 2023 23:59:59 GMT") == 1704067199.0
    assert http_date(b"Mon, 01 Jan 2024 00:00:00 GMT") == 1704067200.0  # day 1, hour 0
    assert http_date(b"Sun, 31 Dec 2023 23:59:60 GMT") == 1704067199.0  # a leap second
    for bad in (
        b"Mon, 00 Jan 2024 00:00:00 GMT",
        b"Mon, 01 Jan 2024 24:00:00 GMT",
        b"Mon, 01 Jan 2024 00:60:00 GMT",
        b"Mon, 01 Jan 2024 00:00:61 GMT",
    ):
        assert http_date(bad) is None, bad


def test_a_two_digit_year_more_than_50_years_ahead_is_in_the_past() -> None:
    this_year = time.gmtime().tm_year

    def year_of(two_digits: int) -> int:
        stamp = http_date(f"Monday, 01-Jan-{two_digits:02} 00:00:00 GMT".encode())
        assert stamp is not None
        return time.gmtime(stamp).tm_year

    assert year_of((this_year + 50) % 100) == this_year + 50
    assert year_of((this_year + 51) % 100) == this_year + 51 - 100


def test_an_expires_before_the_date_is_no_lifetime() -> None:
    headers = [
        (b"date", b"Mon, 01 Jan 2024 00:00:10 GMT"),
        (b"expires", b"Mon, 01 Jan 2024 00:00:00 GMT"),
    ]
    assert rfc9111.explicit_lifetime(headers, {}) == 0.0
    ahead = [
        (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"expires", b"Mon, 01 Jan 2024 00:00:30 GMT"),
    ]
    assert rfc9111.explicit_lifetime(ahead, {}) == 30.0


def test_directives_keep_quoted_lists_whole() -> None:
    headers = [(b"cache-control", b'private="set-cookie, x-token", no-cache="X-Id", max-age=60')]
    assert rfc9111.directives(headers) == {
        "private": "set-cookie, x-token",
        "no-cache": "X-Id",
        "max-age": "60",
    }


def test_a_vary_value_is_compared_with_its_whitespace_folded() -> None:
    headers = [(b"accept-language", b"en,   fr\t; q=0.5")]
    assert rfc9111.vary_values(headers, ["accept-language", "accept"]) == ["en, fr ; q=0.5", None]


def test_age_of_three_members_is_the_first() -> None:
    assert age([(b"age", b"7200, 30, 0")]) == 7200


# -- revalidation, storage by explicit freshness, targeted fields (RFC 9111, 5861, 9213) --

LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"


def _stores(status: int, *headers: tuple[bytes, bytes]) -> bool:
    facts = rfc9111.RequestFacts(authorization=False, per_user=False)
    return rfc9111.refusal(status, headers, rfc9111.directives(headers), facts) is None


def test_request_accepts() -> None:
    accepts = rfc9111.request_accepts
    assert accepts(5, 10, {}, {}) and not accepts(10, 10, {}, {})
    assert not accepts(5, 10, {"max-age": "4"}, {}) and accepts(5, 10, {"max-age": "5"}, {})
    assert accepts(5, 10, {"min-fresh": "5"}, {}) and not accepts(5, 10, {"min-fresh": "6"}, {})
    assert accepts(15, 10, {"max-stale": "5"}, {}) and not accepts(16, 10, {"max-stale": "5"}, {})
    assert accepts(1e6, 10, {"max-stale": None}, {})
    assert not accepts(11, 10, {"max-stale": "bad"}, {})
    for forbidding in ("must-revalidate", "proxy-revalidate", "no-cache", "s-maxage"):
        assert not accepts(11, 10, {"max-stale": None}, {forbidding: None}), forbidding


def test_any_final_status_with_explicit_freshness_may_be_stored() -> None:
    for status in (201, 302, 303, 307, 400, 403, 500, 503, 599):
        assert not _stores(status), status  # no explicit freshness: not heuristically cacheable
        assert _stores(status, (b"cache-control", b"max-age=60")), status
        assert _stores(status, (b"cache-control", b"s-maxage=60")), status
        assert _stores(status, (b"expires", b"Mon, 01 Jan 2024 00:00:00 GMT")), status
        assert _stores(status, (b"cache-control", b"public")), status
    for status in (100, 101, 103, 206, 304):  # not final, partial, or a 304 itself
        assert not _stores(status, (b"cache-control", b"max-age=60")), status
    assert _stores(200, (b"cache-control", b"no-cache"), (b"etag", b'"a"'))
    assert _stores(200, (b"cache-control", b"no-cache"), (b"last-modified", LAST_MODIFIED.encode()))
    assert not _stores(200, (b"cache-control", b"no-cache"))


def test_heuristic_freshness_from_last_modified() -> None:
    dated = [(b"date", b"Mon, 01 Jan 2024 01:40:00 GMT")]  # 6,000 s after LAST_MODIFIED
    modified = [*dated, (b"last-modified", LAST_MODIFIED.encode())]
    assert rfc9111.heuristic_lifetime(modified, 3600) == 600.0  # a tenth of 6,000 s
    assert rfc9111.heuristic_lifetime(modified, 60) == 60.0  # never above the cap
    assert rfc9111.heuristic_lifetime(dated, 600) == 600.0
    future = [*dated, (b"last-modified", b"Tue, 02 Jan 2024 00:00:00 GMT")]
    assert rfc9111.heuristic_lifetime(future, 600) == 0.0


def test_vary_values_are_normalised() -> None:
    def values(**sent: str) -> list[str | None]:
        headers = [(k.replace("_", "-").encode(), v.encode()) for k, v in sent.items()]
        return rfc9111.vary_values(headers, ["accept-encoding", "accept"])

    same = values(accept_encoding="gzip, deflate", accept="text/html")
    assert values(accept_encoding="GZIP,deflate", accept="text/html") == same
    assert values(accept_encoding=" gzip ,  deflate ", accept="text/html") == same
    assert values(accept_encoding="gzip, deflate", accept="Text/HTML") != same  # case kept
    assert values(accept_encoding="deflate, gzip", accept="text/html") != same  # order kept


def test_a_304_updates_the_stored_fields_it_carries() -> None:
    stored = [
        (b"content-type", b"text/plain"),
        (b"x-a", b"1"),
        (b"x-a", b"2"),
        (b"etag", b'"e"'),
    ]
    fresh = [
        (b"x-a", b"3"),
        (b"content-length", b"0"),
        (b"set-cookie", b"s=1"),
        (b"cache-control", b"max-age=9"),
    ]
    assert rfc9111.updated_headers(stored, fresh) == [
        (b"content-type", b"text/plain"),
        (b"x-a", b"3"),  # in the place of the first stored x-a
        (b"etag", b'"e"'),
        (b"cache-control", b"max-age=9"),
    ]
    assert rfc9111.updated_headers(stored, [(b"x-a", b"1"), (b"x-a", b"2")]) == stored
    assert rfc9111.same_validator([], b'"e"') and rfc9111.same_validator(
        [(b"etag", b'W/"e"')], b'"e"'
    )
    assert not rfc9111.same_validator([(b"etag", b'"f"')], b'"e"')


def test_targeted_fields_parse_as_structured_dictionaries() -> None:
    def parsed(value: bytes) -> dict[str, str | None] | None:
        return rfc9111.targeted_directives([(b"cdn-cache-control", value)], b"cdn-cache-control")

    assert parsed(b"max-age=60") == {"max-age": "60"}
    assert parsed(b"foo, MaX-aGe=60") == {"foo": None, "max-age": "60"}
    assert parsed(b'no-cache="x-a", private') == {"no-cache": "x-a", "private": None}
    assert parsed(b'no-cache="x-a, x-b"') == {"no-cache": "x-a, x-b"}  # a comma in a string
    assert parsed(b"max-age=1, max-age=2") == {"max-age": "1"}  # the first one wins
    assert parsed(b"max-age=99999999999") == {"max-age": "99999999999"}
    for invalid in (b'max-age="60"', b"max-age =60", b"max-age= 60", b"max-age=60, &&", b"=1"):
        assert parsed(invalid) is None, invalid
    assert rfc9111.targeted_directives([], b"cdn-cache-control") is None
    # A targeted lifetime replaces Expires, which then gives none.
    expires = [(b"expires", b"Mon, 01 Jan 2024 00:00:00 GMT")]
    assert rfc9111.explicit_lifetime(expires, {}, targeted=True) is None
    assert rfc9111.explicit_lifetime(expires, {}) == 0.0
    assert rfc9111.explicit_lifetime([], {}) is None


def test_what_revalidates_a_stored_response() -> None:
    last = (b"last-modified", LAST_MODIFIED.encode())
    assert rfc9111.conditional_headers([last], b'"e"') == [
        (b"if-none-match", b'"e"'),
        (b"if-modified-since", LAST_MODIFIED.encode()),
    ]
    assert rfc9111.conditional_headers([], None) == []
    assert rfc9111.conditional_headers([(b"last-modified", b"yesterday")], None) == []


def test_if_modified_since() -> None:
    stored = [(b"last-modified", LAST_MODIFIED.encode())]
    later = b"Mon, 01 Jan 2024 00:00:01 GMT"
    assert rfc9111.modified_since(LAST_MODIFIED.encode(), stored) is False
    assert rfc9111.modified_since(later, stored) is False
    assert rfc9111.modified_since(b"Sun, 31 Dec 2023 23:59:59 GMT", stored) is True
    assert rfc9111.modified_since(b"not a date", stored) is None
    assert rfc9111.modified_since(None, stored) is None
    dated = [(b"date", LAST_MODIFIED.encode())]  # no Last-Modified: the Date stands in
    assert rfc9111.modified_since(later, dated) is False
    assert rfc9111.modified_since(later, []) is True  # nothing to compare: modified


def test_stale_windows() -> None:
    own = {"max-age": "1", "stale-while-revalidate": "30", "stale-if-error": "60"}
    assert rfc9111.stale_window(own, "stale-while-revalidate", 0) == 30.0
    assert rfc9111.stale_window(own, "stale-if-error", 90) == 90.0  # the longer
    assert rfc9111.stale_window({"stale-if-error": "x"}, "stale-if-error", 5) == 5.0
    for forbidding in ("no-cache", "must-revalidate", "proxy-revalidate", "s-maxage"):
        assert rfc9111.stale_window({**own, forbidding: None}, "stale-if-error", 9) == 0.0


def test_must_understand_lets_a_known_status_be_stored_despite_no_store() -> None:
    understood = ((b"cache-control", b"max-age=60, no-store, must-understand"),)
    assert _refusal(200, *understood) is None
    assert _refusal(302, *understood) is None
    assert _refusal(599, *understood) == "no-store"  # a status it does not understand
    assert _refusal(200, (b"cache-control", b"max-age=60, no-store")) == "no-store"


def test_a_heuristic_from_last_modified_without_a_flat_default() -> None:
    modified = [
        (b"date", b"Tue, 02 Jan 2024 00:00:00 GMT"),
        (b"last-modified", LAST_MODIFIED.encode()),  # a day earlier
    ]
    assert rfc9111.heuristic_lifetime(modified, None) == 8640.0  # a tenth of a day
    assert rfc9111.heuristic_lifetime(modified, None, fraction=0.0) == 0.0
    assert rfc9111.heuristic_lifetime(modified, 600, fraction=0.0) == 600.0
    assert rfc9111.heuristic_lifetime(modified, None, fraction=1.0) == rfc9111.LONGEST_HEURISTIC
    assert rfc9111.heuristic_lifetime([], None) == 0.0


def test_one_byte_range_of_a_stored_response() -> None:
    assert rfc9111.byte_range(b"bytes=0-1", 11) == (0, 1)
    assert rfc9111.byte_range(b"bytes=1-", 11) == (1, 10)
    assert rfc9111.byte_range(b"bytes=-1", 11) == (10, 10)
    assert rfc9111.byte_range(b"bytes=-50", 11) == (0, 10)  # a suffix longer than the body
    assert rfc9111.byte_range(b"bytes=5-99", 11) == (5, 10)  # a last byte past the end
    # Answered in full (a cache may always ignore Range): several ranges, other units, bad
    # syntax, nothing satisfiable.
    for whole in (
        b"bytes=0-1,3-4",
        b"items=0-1",
        b"bytes=1-0",
        b"bytes=-",
        b"bytes=11-",
        b"bytes=-0",
    ):
        assert rfc9111.byte_range(whole, 11) is None, whole
    assert rfc9111.byte_range(b"bytes=-1", 0) is None
