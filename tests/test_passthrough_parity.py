"""The fast lane gives the general path's answers: for each kind of function answer (usual,
204/304, large, chunked, close-delimited, HTTP/1.0, interim, malformed...) and each method, in
proxy and eventgateway mode, the client gets the same status, headers and body whether the lane
or the general path (`Gateway.handle`) answered, and the function sees the same request.
"""

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.dataplane_helpers import get, raw_client, until
from tests.gateway_backend import Received, Reply
from tests.passthrough_helpers import (
    BIG,
    WARM,
    RawReply,
    RawRequest,
    answer_head,
    counted,
    lane_node,
    raw_backend,
    spy,
    subscribe,
)
from tests.test_gateway import Node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with lane_node(tmp_path) as started:
        yield started


_CHUNKED = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


@dataclass
class Case:
    """A function's answer: head, body (not sent to a HEAD), bytes after it, close after."""

    head: bytes
    body: bytes = b""
    extra: bytes = b""
    close: bool = False
    split: int = 0
    """If set, write this many bytes first, then the rest."""


CASES = {
    "200": Case(
        answer_head(
            "HTTP/1.1 200 OK",
            "Content-Type: text/plain",
            "X-Function: yes",
            "Date: Mon, 01 Jan 2001 00:00:00 GMT",
            "Server: fn",
            "Content-Length: 5",
        ),
        b"hello",
    ),
    "200 mixed-case names": Case(
        answer_head(
            "HTTP/1.1 200 OK", "content-TYPE: text/plain", "x-FUNCTION: yes", "CONTENT-LENGTH: 2"
        ),
        b"ok",
    ),
    "200 empty": Case(answer_head("HTTP/1.1 200 OK", "Content-Length: 0")),
    "201 repeated header": Case(
        answer_head(
            "HTTP/1.1 201 Created", "Set-Cookie: a=1", "Set-Cookie: b=2", "Content-Length: 2"
        ),
        b"ok",
    ),
    "204": Case(answer_head("HTTP/1.1 204 No Content", "X-Function: yes")),
    "204 with Content-Length 0": Case(
        answer_head("HTTP/1.1 204 No Content", "X-Function: yes", "Content-Length: 0")
    ),
    "304": Case(answer_head("HTTP/1.1 304 Not Modified", 'ETag: "v1"')),
    "304 with Content-Length": Case(
        answer_head("HTTP/1.1 304 Not Modified", 'ETag: "v1"', "Content-Length: 5")
    ),
    "404 with body": Case(
        answer_head(
            "HTTP/1.1 404 Not Found", "Content-Type: application/json", "Content-Length: 16"
        ),
        b'{"error":"nope"}',
    ),
    "500 from the function": Case(
        answer_head("HTTP/1.1 500 Internal Server Error", "Content-Length: 4"), b"oops"
    ),
    "unknown status": Case(answer_head("HTTP/1.1 299 Whatever", "Content-Length: 2"), b"ok"),
    "100 KiB": Case(answer_head("HTTP/1.1 200 OK", f"Content-Length: {len(BIG)}"), BIG),
    "chunked": Case(answer_head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"), _CHUNKED),
    "close-delimited": Case(
        answer_head("HTTP/1.1 200 OK", "Content-Type: text/plain", "Connection: close"),
        b"until the end",
        close=True,
    ),
    "HTTP/1.0": Case(answer_head("HTTP/1.0 200 OK", "Content-Length: 5"), b"hello", close=True),
    "HTTP/1.0 keep-alive": Case(
        answer_head("HTTP/1.0 200 OK", "Connection: keep-alive", "Content-Length: 5"), b"hello"
    ),
    "Connection: close": Case(
        answer_head("HTTP/1.1 200 OK", "Connection: close", "Content-Length: 5"),
        b"hello",
        close=True,
    ),
    "Connection: keep-alive": Case(
        answer_head("HTTP/1.1 200 OK", "Connection: keep-alive", "Content-Length: 5"), b"hello"
    ),
    "Connection listing a header": Case(
        answer_head(
            "HTTP/1.1 200 OK", "Connection: keep-alive, X-Drop", "X-Drop: 1", "Content-Length: 5"
        ),
        b"hello",
    ),
    "Keep-Alive header": Case(
        answer_head("HTTP/1.1 200 OK", "Keep-Alive: timeout=5", "Content-Length: 5"), b"hello"
    ),
    "103 Early Hints first": Case(
        answer_head("HTTP/1.1 103 Early Hints", "Link: </a.css>; rel=preload")
        + answer_head("HTTP/1.1 200 OK", "Content-Length: 5"),
        b"hello",
    ),
    "malformed": Case(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"),
    "two Content-Lengths": Case(
        answer_head("HTTP/1.1 200 OK", "Content-Length: 2", "Content-Length: 2"), b"ok"
    ),
    "body split across reads": Case(
        answer_head("HTTP/1.1 200 OK", "Content-Length: 10"), b"0123456789", split=42
    ),
    "head split across reads": Case(
        answer_head("HTTP/1.1 200 OK", "X-Long: " + "v" * 3000, "Content-Length: 2"),
        b"ok",
        split=20,
    ),
    "head split at its blank line": Case(
        answer_head("HTTP/1.1 200 OK", "Content-Length: 2"), b"ok", split=36
    ),
    "closes mid-body": Case(
        answer_head("HTTP/1.1 200 OK", "Content-Length: 10"), b"01234", close=True
    ),
    "bytes after the body": Case(
        answer_head("HTTP/1.1 200 OK", "Content-Length: 2"), b"ok", extra=b"junk"
    ),
}
METHODS = ["GET", "HEAD", "DELETE", "OPTIONS"]


def _comparable(response: httpx.Response) -> tuple[int, str, str, bytes, list[tuple[str, str]]]:
    headers = sorted(
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in response.headers.raw
        if name.lower() != b"date"
    )
    return (
        response.status_code,
        response.reason_phrase,
        response.http_version,
        response.content,
        headers,
    )


@pytest.mark.parametrize("name", list(CASES))
async def test_the_lane_and_the_general_path_answer_alike(node: Node, name: str) -> None:
    case = CASES[name]

    async def answer(request: RawRequest, index: int) -> RawReply:
        if request.target == "/warm":
            return WARM, False
        data = case.head if request.method == "HEAD" else case.head + case.body + case.extra
        if 0 < case.split < len(data):
            return [data[: case.split], data[case.split :]], case.close
        return data, case.close

    backend = await raw_backend(node, answer)
    await node.route("/*rest", backend.url, method="GET", mode="proxy")
    for method in METHODS[2:]:
        await subscribe(node, "fn-0", method, "/*rest")

    answers: dict[str, list[tuple[int, str, str, bytes, list[tuple[str, str]]]]] = {}
    for lane in (True, False):
        node.server.lane = spy(node).lane if lane else None
        for method in METHODS:
            warm = await node.client.get("/warm")  # leaves an idle pooled connection
            assert warm.content == b"warm"
            handled = len(spy(node).handled)
            taken = len(spy(node).taken)
            before = counted(node, method)
            response = await node.client.request(method, "/case?x=1")
            assert backend.received[-1].method == method
            assert backend.received[-1].target == "/case?x=1"
            after = counted(node, method)
            status = str(response.status_code)
            assert after - before == Counter({status: 1}), f"{method}: not counted once"
            if lane:  # the lane took the request (and answered it, or handed it over)
                assert spy(node).taken[taken:] == [True], method
                assert len(spy(node).handled) == handled, method
            else:
                assert len(spy(node).handled) == handled + 1
            answers.setdefault(method, []).append(_comparable(response))
    for method in METHODS:
        on_lane, general = answers[method]
        assert on_lane == general, f"{name}: {method} differs (lane, general)"


@pytest.mark.parametrize(
    "headers",
    [
        [],
        ["X-Multi: 1", "X-Multi: 2"],
        ["X-Empty:", "X-Spaced:   v  ", "X-Tight:v", "X-MiXeD: Case"],
        ["User-Agent: caf\xe9", "Accept: */*", "Cookie: a=1; b=2", "Authorization: Bearer t"],
        ["X-Forwarded-For: 10.0.0.1"],
        ["Forwarded: for=10.0.0.2", "Via: 1.1 proxy"],
        ["Connection: keep-alive", "Accept: */*"],
    ],
    ids=["plain", "repeated", "odd-spacing", "usual", "x-forwarded-for", "forwarded", "keep-alive"],
)
@pytest.mark.parametrize(
    "target", ["/api/x?q=1", "/api/a%20b/%7Eu?x=%2F&y", "/api/x?", "/api//double//slash"]
)
async def test_the_function_sees_the_same_request_from_the_lane_and_the_general_path(
    node: Node, target: str, headers: list[str]
) -> None:
    async def answer(request: RawRequest, index: int) -> RawReply:
        return WARM, False

    backend = await raw_backend(node, answer)
    await node.route("/api/*rest", backend.url + "/base", method="GET", mode="proxy")
    seen = []
    async with raw_client(node.server.port) as client:
        for lane in (True, False):
            node.server.lane = spy(node).lane if lane else None
            for head in (get("/api/warm"), get(target, *headers)):
                await client.send(head)
                assert (await client.response()).status == 200
            seen.append(backend.received[-1])
            if lane and not any(h.lower().startswith("x-forwarded") for h in headers):
                assert spy(node).taken[-1] is True  # the request took the lane
    on_lane, general = seen
    assert (on_lane.method, on_lane.target) == (general.method, general.target)
    assert on_lane.headers == general.headers  # in the same order too


async def test_a_request_with_a_different_host_is_forwarded_alike(node: Node) -> None:
    async def answer(request: RawRequest, index: int) -> RawReply:
        return WARM, False

    backend = await raw_backend(node, answer)
    await node.route("/*rest", backend.url, method="GET", mode="proxy")
    seen = []
    for lane in (True, False):
        node.server.lane = spy(node).lane if lane else None
        await node.client.get("/warm")
        response = await node.client.get("/x", headers={"host": "example.com:8080"})
        assert response.status_code == 200
        seen.append(backend.received[-1])
    assert sorted(seen[0].headers) == sorted(seen[1].headers)
    assert ("x-forwarded-host", "example.com:8080") in seen[0].headers
    assert ("host", f"127.0.0.1:{backend.port}") in seen[0].headers
    assert spy(node).taken[1] is True


# 3. Pipelined requests are answered in order


_REPLIES = {
    "text body": (
        200,
        orjson.dumps({"statusCode": 201, "headers": {"X-Seen": "yes"}, "body": "hi"}),
    ),
    "json body": (200, orjson.dumps({"statusCode": 200, "body": {"a": [1, 2]}})),
    "no status": (200, orjson.dumps({"body": "plain"})),
    "content-type": (
        200,
        orjson.dumps({"headers": {"Content-Type": "text/csv", "Content-Length": "1"}, "body": "a"}),
    ),
    "connection header": (200, orjson.dumps({"headers": {"Connection": "close"}, "body": "c"})),
    "204": (200, orjson.dumps({"statusCode": 204})),
    "empty": (200, b"{}"),
    "not json": (200, b"not json"),
    "bad status": (200, orjson.dumps({"statusCode": "200"})),
    "function 500": (500, b"Internal Server Error"),
    "function 404": (404, b"nope"),
}


@pytest.mark.parametrize("name", list(_REPLIES))
async def test_an_eventgateway_function_answers_alike_on_the_lane_and_the_general_path(
    node: Node, name: str
) -> None:
    """Eventgateway mode (the `http.request` envelope): the same event sent and the same answer
    from the function's reply, whichever path made them."""
    status, reply = _REPLIES[name]

    async def answer(request: Received) -> Reply:
        if request.json()["data"]["path"] == "/warm":
            return 200, [], orjson.dumps({"body": "warm"})
        return status, [("content-type", "application/json")], reply

    function = await node.backend(answer)
    await node.route("/users/:id", function.url, method="GET")
    await node.route("/warm", function.url, method="GET")
    for method in METHODS[2:]:
        await subscribe(node, "fn-0", method, "/users/:id")

    answers: dict[str, list[object]] = {}
    events: dict[str, list[object]] = {}
    async with raw_client(node.server.port) as client:
        for lane in (True, False):
            node.server.lane = spy(node).lane if lane else None
            for method in METHODS:
                await client.send(get("/warm"))
                assert (await client.response()).body == b"warm"
                request = get("/users/42?x=1&x=2", "X-Custom: kept", method=method)
                taken, before = len(spy(node).taken), counted(node, method)
                await client.send(request)
                response = await client.response(head_only=method == "HEAD")
                if lane:  # eventgateway mode is the lane's too (passthrough.py)
                    assert spy(node).taken[taken:] == [True], method
                counts = counted(node, method) - before
                assert counts == Counter({str(response.status): 1}), method
                headers = sorted(h for h in response.headers if h[0] != b"date")
                answers.setdefault(method, []).append((response.status, headers, response.body))
                call = function.received[-1]
                event = call.json()
                assert event["data"]["path"] == "/users/42"
                del event["eventID"], event["eventTime"]
                sent = sorted(h for h in call.headers if h[0] != "content-length")
                events.setdefault(method, []).append((call.method, call.target, sent, event))
    for method in METHODS:
        assert answers[method][0] == answers[method][1], f"{name}: {method} answers differ"
        assert events[method][0] == events[method][1], f"{name}: {method} events differ"


# 7. The flag


# Requests with a body (POST, PUT, PATCH; a Content-Length, the body in the same read)

_BODIES = {
    "json object": ("POST", "application/json", b'{"message": "Hello world!"}'),
    "json array": ("POST", "application/json", b"[1, 2]"),
    "invalid json": ("PUT", "application/json", b'{"a":'),
    "text": ("PUT", "text/plain; charset=utf-8", "h\xe9llo".encode()),
    "form": ("PATCH", "application/x-www-form-urlencoded", b"a=1&b=2"),
    "bytes, no type": ("POST", None, bytes(range(256))),
}


def _with_body(method: str, content_type: str | None, body: bytes, *extra: str) -> bytes:
    lines = [f"{method} /in?k=v HTTP/1.1", "Host: test", *extra]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if content_type is not None:
        lines.insert(2, f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_NO_BODY = ("GET", None, b"")
"""A request without a body, through the same test."""


@pytest.mark.parametrize("mode", ["proxy", "eventgateway", "cloudevents"])
@pytest.mark.parametrize("name", [*_BODIES, "no body"])
async def test_a_request_with_a_body_goes_alike_on_the_lane_and_the_general_path(
    node: Node, name: str, mode: str
) -> None:
    """The function gets the same request (proxy: head in the same order, and body; the other
    modes: the same event, its `data.body` normalized by content type; cloudevents: in the same
    binary-mode head) and the client the same answer, whichever path sent it."""
    method, content_type, body = _BODIES.get(name, _NO_BODY)

    async def answer(request: Received) -> Reply:
        if mode == "proxy":
            return 201, [("x-got", str(len(request.body)))], request.body[::-1]
        if mode == "cloudevents":
            reply = orjson.dumps(request.json()["body"])
            return 201, [("content-type", "application/json")], reply
        data = request.json()["data"]
        reply = {"statusCode": 202, "headers": {"X-Kind": type(data["body"]).__name__}}
        return 200, [], orjson.dumps({**reply, "body": data["body"]})

    function = await node.backend(answer)
    await node.route("/in", function.url + "/base", method=method, mode=mode)
    seen, answers = [], []
    async with raw_client(node.server.port) as client:
        for lane in (True, False):
            node.server.lane = spy(node).lane if lane else None
            for _ in range(2):  # the second meets an idle pooled connection
                await client.send(
                    _with_body(
                        method, content_type, body, "X-Custom: kept", "Connection: keep-alive"
                    )
                )
                response = await client.response()
            if lane:
                assert spy(node).taken[-1] is True  # the second request took the lane
            answers.append((response.status, _no_date(response.headers), response.body))
            call = function.received[-1]
            sent = call.json() if mode == "eventgateway" else call.body
            headers = call.headers
            if mode == "eventgateway":
                del sent["eventID"], sent["eventTime"]
            if mode == "cloudevents":  # the event's id and time: new for each call
                headers = [h for h in headers if h[0] not in ("ce-id", "ce-time")]
                assert [h[0] for h in call.headers][-3:] == ["ce-id", "ce-time", "content-length"]
            seen.append((call.method, call.target, headers, sent))
    assert seen[0] == seen[1]
    assert answers[0] == answers[1]
    assert answers[0][0] == (202 if mode == "eventgateway" else 201)


def _no_date(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [header for header in headers if header[0].lower() != b"date"]


async def test_a_body_in_two_reads_is_left_to_the_general_path(node: Node) -> None:
    async def answer(request: Received) -> Reply:
        return 200, [], request.body

    function = await node.backend(answer)
    await node.route("/in", function.url, method="POST", mode="proxy")
    request = _with_body("POST", "text/plain", b"0123456789")
    async with raw_client(node.server.port) as client:
        await client.send(request)  # opens the pooled connection
        assert (await client.response()).body == b"0123456789"
        offered = len(spy(node).taken)
        await client.send(request[:-4])
        await until(lambda: len(spy(node).taken) > offered)  # the first read was offered
        await client.send(request[-4:])
        response = await client.response()
    assert (response.status, response.body) == (200, b"0123456789")
    assert spy(node).taken[offered:] == [False]  # declined: the body was not all in
    assert function.received[-1].body == b"0123456789"


async def test_the_lane_writes_the_general_paths_bytes(node: Node) -> None:
    """Byte for byte (but the Date): header names and values as the general path writes them,
    trailing whitespace in a value included, in the same order."""
    answer_bytes = answer_head(
        "HTTP/1.1 200 Fine",
        "X-Spaced:   v  ",
        "X-MiXeD: Case",
        "Server: fn",
        "Date: Thu, 01 Jan 1970 00:00:00 GMT",
        "Content-Type: text/plain",
        "Content-Length: 5",
        "Connection: keep-alive",
    )

    async def answer(request: RawRequest, index: int) -> RawReply:
        return (WARM if request.target == "/warm" else answer_bytes + b"hello"), False

    backend = await raw_backend(node, answer)
    await node.route("/*rest", backend.url, method="GET", mode="proxy")
    reader, writer = await asyncio.open_connection("127.0.0.1", node.server.port)
    answers = []
    try:
        for lane in (True, False):
            node.server.lane = spy(node).lane if lane else None
            for path in ("/warm", "/bytes"):
                writer.write(get(path, "X-Trailing: t \t"))
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
                body = await reader.readexactly(length)
            if lane:
                assert spy(node).taken[-1] is True
            answers.append(re.sub(rb"Date: [^\r]*\r\n", b"", head) + body)
            assert ("x-trailing", "t \t") in backend.received[-1].headers
    finally:
        writer.close()
    assert answers[0] == answers[1]
    assert b"x-spaced: v  \r\n" in answers[0]
