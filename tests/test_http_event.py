"""The `http.request` event data and its CloudEvents 0.1 envelope."""

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from eventgate.dataplane.types import Request
from eventgate.events.http_event import (
    SOURCE,
    http_event_data,
    http_request_event,
    normalize_body,
)

SEED_BODY = b'{"message": "Hello world!"}'


class NoBody:
    async def read(self) -> bytes:
        return b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        return
        yield


def request(
    method: str = "POST",
    path: str = "/",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Request:
    return Request(
        method=method,
        raw_path=path.encode(),
        path=path,
        query_string=query,
        headers=headers if headers is not None else [(b"host", b"gw.example:4000")],
        body=NoBody(),
    )


def test_the_seed_form_body_stays_the_exact_string() -> None:
    # curl --data sends application/x-www-form-urlencoded: the body must arrive untouched.
    form = "application/x-www-form-urlencoded"
    assert normalize_body(SEED_BODY, form) == '{"message": "Hello world!"}'


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", SEED_BODY, {"message": "Hello world!"}),
        ("application/json; charset=utf-8", b'{"a": [1, 2]}', {"a": [1, 2]}),
        ("application/vnd.api+json", b'{"a": 1}', {"a": 1}),
        ("text/plain", b"hello", "hello"),
        ("text/plain; charset=latin-1", "café".encode("latin-1"), "café"),
        ("multipart/form-data; boundary=x", b"--x--", "--x--"),
    ],
)
def test_body_normalization(content_type: str, body: bytes, expected: object) -> None:
    assert normalize_body(body, content_type) == expected


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"[1, 2, 3]"),  # JSON, but not an object: stays bytes
        ("application/json", b"{not json"),
        ("application/octet-stream", b"\x00\x01\xff"),
        (None, b"raw"),
        ("text/plain", b"\xff\xfe not utf-8"),
    ],
)
def test_other_bodies_go_out_base64(content_type: str | None, body: bytes) -> None:
    encoded = normalize_body(body, content_type)
    assert isinstance(encoded, str)
    assert base64.b64decode(encoded) == body


def test_headers_query_and_shape() -> None:
    req = request(
        method="GET",
        path="/users/42",
        query=b"tag=a&tag=b&empty=&q=hello%20world",
        headers=[
            (b"host", b"gw.example:4000"),
            (b"x-multi", b"one"),
            (b"x-multi", b"two"),
            (b"content-type", b"text/plain"),
        ],
    )
    data = http_event_data(req, b"hi", {"id": "42"})
    assert data == {
        "headers": {"Host": "gw.example:4000", "X-Multi": "one, two", "Content-Type": "text/plain"},
        "query": {"tag": ["a", "b"], "empty": [""], "q": ["hello world"]},
        "body": "hi",
        "host": "gw.example:4000",
        "path": "/users/42",
        "method": "GET",
        "params": {"id": "42"},
    }


def test_envelope() -> None:
    form = (b"content-type", b"application/x-www-form-urlencoded")
    event = http_request_event(request(headers=[(b"host", b"h"), form]), SEED_BODY, {})
    assert event["eventType"] == "http.request"
    assert event["cloudEventsVersion"] == "0.1"
    assert event["source"] == SOURCE
    assert uuid.UUID(str(event["eventID"])).version == 4
    event_time = datetime.fromisoformat(str(event["eventTime"]).replace("Z", "+00:00"))
    assert str(event["eventTime"]).endswith("Z")
    assert event_time.utcoffset() == timedelta(0)
    assert event["contentType"] == "application/x-www-form-urlencoded"
    assert event["extensions"] == {
        "eventgateway": {"transformed": "true", "transformation-version": "0.1"}
    }
    data = event["data"]
    assert isinstance(data, dict)
    assert data["body"] == '{"message": "Hello world!"}'
    assert "eventTypeVersion" not in event
    assert http_request_event(request(), b"", {})["contentType"] == "application/octet-stream"
