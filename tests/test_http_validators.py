"""Conditional requests answered by the app (web/validators.py): a FastAPI app through httpx's
ASGI transport, and direct calls on hand-made requests. No Redis."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from redis_checkpoint.web.rfc9111 import http_date
from redis_checkpoint.web.validators import (
    format_etag,
    format_http_date,
    not_modified,
    validator_headers,
)

#: RFC 9110's example date, as a POSIX timestamp.
NOV_6_1994: float = 784111777.0
NOV_6_1994_TEXT = "Sun, 06 Nov 1994 08:49:37 GMT"
#: Every visible ASCII character an entity tag may hold but letters and digits.
PUNCTUATION = "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
NOON = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def imf(moment: datetime) -> str:
    """An IMF-fixdate written independently of the code under test."""
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    utc = moment.astimezone(timezone.utc)
    return (
        f"{days[utc.weekday()]}, {utc.day:02d} {months[utc.month - 1]} {utc.year} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} GMT"
    )


@dataclass
class Resource:
    """What the app serves: its validators, and how often it built the expensive body."""

    etag: str | None = "v1"
    last_modified: datetime | None = NOON
    builds: int = 0
    cache: dict[str, str] = field(default_factory=lambda: {"Cache-Control": "max-age=60"})


def make_app(resource: Resource) -> FastAPI:
    app = FastAPI()

    @app.api_route("/doc", methods=["GET", "HEAD", "POST"])
    async def doc(request: Request) -> Response:
        unchanged = not_modified(
            request,
            etag=resource.etag,
            last_modified=resource.last_modified,
            headers=resource.cache,
        )
        if unchanged is not None:
            return unchanged
        resource.builds += 1
        headers = {
            **resource.cache,
            **validator_headers(etag=resource.etag, last_modified=resource.last_modified),
        }
        return Response(b"the expensive body", media_type="text/plain", headers=headers)

    return app


@pytest.fixture
def resource() -> Resource:
    return Resource()


@pytest.fixture
async def client(resource: Resource) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(resource))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def incoming(method: str = "GET", *headers: tuple[str, str]) -> Request:
    """A request as Starlette builds it from an ASGI scope (repeated headers stay apart)."""
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    scope = {"type": "http", "method": method, "path": "/doc", "headers": raw}
    return Request(scope)


# If-None-Match, through the app


async def test_a_matching_etag_gets_an_empty_304_with_validators_and_extra_headers(
    client: httpx.AsyncClient, resource: Resource
) -> None:
    response = await client.get("/doc", headers={"If-None-Match": '"v1"'})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"v1"'
    assert response.headers["last-modified"] == "Wed, 01 May 2024 12:00:00 GMT"
    assert response.headers["cache-control"] == "max-age=60"
    assert "content-length" not in response.headers
    assert "content-type" not in response.headers
    assert resource.builds == 0  # the expensive body was never built


async def test_another_etag_gets_the_full_response_with_its_validators(
    client: httpx.AsyncClient, resource: Resource
) -> None:
    response = await client.get("/doc", headers={"If-None-Match": '"v0"'})
    assert response.status_code == 200
    assert response.content == b"the expensive body"
    assert response.headers["etag"] == '"v1"'
    assert response.headers["last-modified"] == "Wed, 01 May 2024 12:00:00 GMT"
    assert resource.builds == 1


async def test_the_full_responses_validators_revalidate_it(client: httpx.AsyncClient) -> None:
    """What a cache does: send back the ETag and Last-Modified it stored."""
    full = await client.get("/doc")
    conditional = {
        "If-None-Match": full.headers["etag"],
        "If-Modified-Since": full.headers["last-modified"],
    }
    assert (await client.get("/doc", headers=conditional)).status_code == 304
    only_date = {"If-Modified-Since": full.headers["last-modified"]}
    assert (await client.get("/doc", headers=only_date)).status_code == 304


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        ('"a", "v1", "b"', 304),
        ('"a","v1"', 304),
        ('"a", "b"', 200),
        ('"a, v1"', 200),  # one tag with a comma in it, not two
        ("*", 304),
        ('W/"v1"', 304),
        ('"a", W/"v1"', 304),
        ('"V1"', 200),  # entity tags compare case-sensitively
        ("v1", 200),  # not a quoted tag
        ("", 200),
    ],
)
async def test_if_none_match_lists_star_and_weak_tags(
    client: httpx.AsyncClient, sent: str, status: int
) -> None:
    response = await client.get("/doc", headers={"If-None-Match": sent})
    assert response.status_code == status


async def test_a_weak_etag_matches_its_strong_form_and_stays_weak_on_the_304(
    client: httpx.AsyncClient, resource: Resource
) -> None:
    resource.etag = 'W/"v1"'
    response = await client.get("/doc", headers={"If-None-Match": '"v1"'})
    assert response.status_code == 304
    assert response.headers["etag"] == 'W/"v1"'


async def test_head_is_answered_like_get(client: httpx.AsyncClient, resource: Resource) -> None:
    assert (await client.head("/doc", headers={"If-None-Match": '"v1"'})).status_code == 304
    assert (await client.head("/doc", headers={"If-None-Match": '"v0"'})).status_code == 200
    assert resource.builds == 1


async def test_post_is_never_answered_with_a_304(
    client: httpx.AsyncClient, resource: Resource
) -> None:
    response = await client.post("/doc", headers={"If-None-Match": '"v1"'})
    assert response.status_code == 200
    since = {"If-Modified-Since": "Wed, 01 May 2024 12:00:00 GMT"}
    assert (await client.post("/doc", headers=since)).status_code == 200
    assert resource.builds == 2


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_none(method: str) -> None:
    sent = incoming(method, ("if-none-match", "*"), ("if-modified-since", imf(NOON)))
    assert not_modified(sent, etag="v1", last_modified=NOON) is None
    assert not_modified(incoming("GET", ("if-none-match", "*")), etag="v1") is not None


def test_if_none_match_on_several_lines_is_one_list() -> None:
    sent = incoming("GET", ("if-none-match", '"a"'), ("if-none-match", '"v1"'))
    assert not_modified(sent, etag="v1") is not None
    assert not_modified(sent, etag="v2") is None


def test_star_needs_an_etag() -> None:
    sent = incoming("GET", ("if-none-match", "*"))
    assert not_modified(sent, last_modified=NOON) is None
    assert not_modified(sent, etag=b'"x"') is not None


def test_without_conditional_headers_or_validators_nothing_is_304() -> None:
    assert not_modified(incoming(), etag="v1", last_modified=NOON) is None
    since = incoming("GET", ("if-modified-since", imf(NOON)))
    assert not_modified(since) is None
    assert not_modified(incoming("GET", ("if-none-match", '"v1"'))) is None


# If-Modified-Since


@pytest.mark.parametrize(
    ("since", "status"),
    [
        (NOON, 304),  # equal
        (NOON + timedelta(hours=1), 304),  # sent after the last change
        (NOON - timedelta(seconds=1), 200),  # sent before it
        (NOON - timedelta(days=3), 200),
    ],
)
async def test_if_modified_since_compares_with_last_modified(
    client: httpx.AsyncClient, resource: Resource, since: datetime, status: int
) -> None:
    resource.etag = None
    response = await client.get("/doc", headers={"If-Modified-Since": imf(since)})
    assert response.status_code == status
    if status == 304:
        assert response.content == b""
        assert response.headers["last-modified"] == imf(NOON)
        assert "etag" not in response.headers


@pytest.mark.parametrize(
    ("fraction", "since", "unchanged"),
    [
        (0.7, NOON, True),  # 12:00:00.7 is not modified since 12:00:00
        (0.0, NOON, True),
        (1.0, NOON, False),  # 12:00:01 is
        (0.7, NOON - timedelta(seconds=1), False),
        (-0.3, NOON, True),  # 11:59:59.7
        (-0.3, NOON - timedelta(seconds=1), True),  # 11:59:59.7 is still 11:59:59
    ],
)
def test_if_modified_since_compares_whole_seconds(
    fraction: float, since: datetime, unchanged: bool
) -> None:
    sent = incoming("GET", ("if-modified-since", imf(since)))
    changed_at = NOON + timedelta(seconds=fraction)
    assert (not_modified(sent, last_modified=changed_at) is not None) is unchanged
    # The same moment as a POSIX timestamp behaves the same.
    stamp = changed_at.timestamp()
    assert (not_modified(sent, last_modified=stamp) is not None) is unchanged


@pytest.mark.parametrize(
    "sent",
    [
        "yesterday",
        "Wed, 01 May 2024 12:00:00",  # no GMT
        "Wed, 01 May 2024 12:00:00 UTC",
        "Wed, 32 May 2024 12:00:00 GMT",
        "Wed, 01 May 2024 12:00:00 GMT, Wed, 01 May 2024 12:00:00 GMT",  # two members
        "",
    ],
)
async def test_an_invalid_if_modified_since_is_ignored(
    client: httpx.AsyncClient, resource: Resource, sent: str
) -> None:
    resource.last_modified = datetime(1990, 1, 1, tzinfo=timezone.utc)  # before any of them
    resource.etag = None
    assert (await client.get("/doc", headers={"If-Modified-Since": sent})).status_code == 200
    assert resource.builds == 1


@pytest.mark.parametrize(
    "sent",
    [
        "Wednesday, 01-May-24 12:00:00 GMT",  # RFC 850
        "Wed May  1 12:00:00 2024",  # asctime
    ],
)
def test_obsolete_date_forms_are_read(sent: str) -> None:
    assert not_modified(incoming("GET", ("if-modified-since", sent)), last_modified=NOON)
    later = NOON + timedelta(seconds=1)
    assert not_modified(incoming("GET", ("if-modified-since", sent)), last_modified=later) is None


async def test_if_modified_since_is_ignored_when_if_none_match_is_present(
    client: httpx.AsyncClient,
) -> None:
    # The date alone would say "not modified": the tag that differs wins.
    both = {"If-None-Match": '"v0"', "If-Modified-Since": imf(NOON + timedelta(days=1))}
    assert (await client.get("/doc", headers=both)).status_code == 200
    # The date alone would say "modified": the tag that matches wins.
    both = {"If-None-Match": '"v1"', "If-Modified-Since": imf(NOON - timedelta(days=1))}
    assert (await client.get("/doc", headers=both)).status_code == 304


def test_if_none_match_without_an_etag_still_shadows_the_date() -> None:
    sent = incoming("GET", ("if-none-match", '"v1"'), ("if-modified-since", imf(NOON)))
    assert not_modified(sent, last_modified=NOON) is None
    assert not_modified(incoming("GET", ("if-modified-since", imf(NOON))), last_modified=NOON)


# The 304's headers


def test_the_304_takes_extra_headers_but_keeps_its_own_validators() -> None:
    sent = incoming("GET", ("if-none-match", '"v1"'))
    extra = {"Cache-Control": "private, max-age=5", "Vary": "Accept", "Etag": '"forged"'}
    response = not_modified(sent, etag="v1", last_modified=NOON, headers=extra)
    assert response is not None
    assert response.status_code == 304
    assert response.body == b""
    assert response.headers.getlist("etag") == ['"v1"']
    assert response.headers["last-modified"] == imf(NOON)
    assert response.headers["cache-control"] == "private, max-age=5"
    assert response.headers["vary"] == "Accept"
    assert "content-length" not in response.headers


def test_validator_headers_lists_what_is_given() -> None:
    assert validator_headers() == {}
    assert validator_headers(etag=b"x") == {"ETag": '"x"'}
    assert validator_headers(last_modified=NOV_6_1994) == {"Last-Modified": NOV_6_1994_TEXT}
    assert validator_headers(etag='W/"x"', last_modified=NOON) == {
        "ETag": 'W/"x"',
        "Last-Modified": "Wed, 01 May 2024 12:00:00 GMT",
    }


def test_an_invalid_etag_fails_loudly_rather_than_never_matching() -> None:
    with pytest.raises(ValueError, match="double quote"):
        not_modified(incoming("GET", ("if-none-match", "*")), etag='a"b')


# format_etag


@pytest.mark.parametrize(
    ("tag", "weak", "expected"),
    [
        ("abc", False, '"abc"'),
        ('"abc"', False, '"abc"'),
        ('W/"abc"', False, 'W/"abc"'),
        ("abc", True, 'W/"abc"'),
        ('"abc"', True, 'W/"abc"'),
        ('W/"abc"', True, 'W/"abc"'),
        (b"abc", False, '"abc"'),
        (b'W/"abc"', False, 'W/"abc"'),
        ("", False, '""'),
        ('""', False, '""'),
        ("W/abc", False, '"W/abc"'),  # no quote after W/: part of the tag
        (PUNCTUATION, False, f'"{PUNCTUATION}"'),
        (b"caf\xe9", False, '"caf\xe9"'),  # obs-text
        ("café", False, '"café"'),
    ],
)
def test_format_etag(tag: str | bytes, weak: bool, expected: str) -> None:
    assert format_etag(tag, weak=weak) == expected


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ('a"b', "double quote"),
        ('abc"', "double quote"),
        ('"a"b"', "double quote"),
        ('w/"abc"', "double quote"),  # the weak prefix is case-sensitive
        ('"abc', "does not close"),
        ('"', "does not close"),
        ('W/"', "does not close"),
        ('W/"abc', "does not close"),
        ("a b", "control character"),
        ("a\tb", "control character"),
        ("abc\r\nSet-Cookie: x=1", "control character"),
        ("a\x00", "control character"),
        ("a\x7f", "control character"),
        ('"a\nb"', "control character"),
        (b"a\nb", "control character"),
        ("a\u20acb", "latin-1"),
    ],
)
def test_format_etag_rejects_what_is_not_an_entity_tag(tag: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_etag(tag)


# format_http_date


@pytest.mark.parametrize(
    "moment",
    [
        NOV_6_1994,
        int(NOV_6_1994),
        NOV_6_1994 + 0.999,  # fractions are dropped, not rounded
        datetime(1994, 11, 6, 8, 49, 37, tzinfo=timezone.utc),
        datetime(1994, 11, 6, 8, 49, 37, 999999, tzinfo=timezone.utc),
        datetime(1994, 11, 6, 10, 49, 37, tzinfo=timezone(timedelta(hours=2))),
        datetime(1994, 11, 5, 22, 49, 37, tzinfo=timezone(timedelta(hours=-10))),
    ],
)
def test_format_http_date_writes_imf_fixdate_in_gmt(moment: datetime | float) -> None:
    assert format_http_date(moment) == NOV_6_1994_TEXT


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (0.0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (-0.5, "Wed, 31 Dec 1969 23:59:59 GMT"),  # the second it falls in
        (951782400.0, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc), "Fri, 31 Dec 9999 23:59:59 GMT"),
        (datetime(999, 1, 1, tzinfo=timezone.utc), "Tue, 01 Jan 0999 00:00:00 GMT"),
    ],
)
def test_format_http_date_edges(moment: datetime | float, expected: str) -> None:
    assert format_http_date(moment) == expected


@pytest.mark.parametrize("day", range(7))
def test_format_http_date_reads_back_as_the_same_second(day: int) -> None:
    moment = NOON + timedelta(days=day, seconds=day * 3607.25)
    text = format_http_date(moment)
    assert text == imf(moment)
    assert http_date(text.encode()) == math.floor(moment.timestamp())


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        format_http_date(datetime(2024, 5, 1, 12, 0, 0))
    with pytest.raises(ValueError, match="aware datetime"):
        validator_headers(last_modified=datetime(2024, 5, 1, 12, 0, 0))


@pytest.mark.parametrize(
    "stamp",
    [
        math.nan,
        math.inf,
        -math.inf,
        1e20,
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2))),  # year 10000 in UTC
    ],
)
def test_a_moment_no_http_date_can_hold_is_refused(stamp: datetime | float) -> None:
    with pytest.raises(ValueError, match="HTTP date can hold"):
        format_http_date(stamp)
