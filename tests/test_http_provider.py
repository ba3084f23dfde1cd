"""The http provider's header work: forwarded request headers (the one-Host fast path gives what
the general path gives), the function's reply headers (checked every time, remembered when
good), and the event ids it mints."""

import os
import re
import uuid

import pytest

from eventgate.dataplane.body import EMPTY_BODY
from eventgate.dataplane.types import Headers, Request
from eventgate.events.http_event import now_rfc3339
from eventgate.events.ids import uuid4_text
from eventgate.providers.http import (
    MalformedReply,
    _forwarded_headers_listed,
    forwarded_headers,
    parse_reply,
)


def request(headers: Headers, client: tuple[str, int] | None = ("10.0.0.7", 5555)) -> Request:
    return Request("GET", b"/", "/", b"", headers, EMPTY_BODY, "1.1", client)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"host", b"gw.example")],
        [(b"user-agent", b"t"), (b"host", b"gw.example"), (b"accept", b"*/*")],
        [(b"host", b"a"), (b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")],
        [(b"x-forwarded-host", b"orig"), (b"host", b"a")],
        [(b"host", b"a"), (b"host", b"b")],
        [(b"accept", b"*/*")],
        [(b"host", b"a"), (b"te", b"trailers"), (b"expect", b"100-continue")],
    ],
)
@pytest.mark.parametrize("client", [("10.0.0.7", 5555), None])
def test_forwarded_headers_match_the_general_path(
    headers: Headers, client: tuple[str, int] | None
) -> None:
    given = request(headers, client)
    address = client[0].encode() if client else None
    assert forwarded_headers(given) == _forwarded_headers_listed(given, address)


def test_forwarded_headers_for_a_plain_request() -> None:
    assert forwarded_headers(request([(b"accept", b"*/*"), (b"host", b"gw")])) == [
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"10.0.0.7"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"gw"),
    ]


@pytest.mark.parametrize("times", [1, 2])
def test_reply_headers_are_checked_every_time(times: int) -> None:
    for _ in range(times):
        good = parse_reply(b'{"headers": {"X-A": "1", "content-TYPE": "a/b", "Connection": "x"}}')
        assert good.headers == [(b"X-A", b"1"), (b"content-TYPE", b"a/b")]
        with pytest.raises(MalformedReply):
            parse_reply(b'{"headers": {"X-A": "1\\nset-cookie: x"}}')
        with pytest.raises(MalformedReply):
            parse_reply(b'{"headers": {"X-A": 1}}')
        plain = parse_reply(b'{"headers": {"X-A": "1"}, "body": "hi"}')
        assert plain.headers[-1] == (b"Content-Type", b"text/plain; charset=utf-8")


def test_event_ids_are_random_version_4_uuids() -> None:
    ids = {uuid4_text() for _ in range(2000)}
    assert len(ids) == 2000
    for text in list(ids)[:300]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    uuid4_text()  # the parent has a batch ready
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, uuid4_text().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child and child != uuid4_text()


def test_event_times_are_rfc_3339_utc_with_microseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", now_rfc3339())
