"""The events port's fast lane (`dataplane/passthrough.py`) end to end over real sockets: the
lane answers plain requests to proxy-mode functions, keeps pipelined answers in order, resends
what met a closed pooled connection, times out, survives clients leaving, and leaves other
requests to the general path. `test_passthrough_parity.py` checks every answer against the
general path's.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from eventgate.model import Cors, Function, Subscription, store_key
from eventgate.settings import Settings
from tests.dataplane_helpers import RawClient, get, raw_client, until
from tests.gateway_backend import Received, Reply
from tests.passthrough_helpers import (
    BIG,
    WARM,
    RawReply,
    RawRequest,
    answer_head,
    gated,
    lane_node,
    raw_backend,
    requests_total,
    spy,
)
from tests.test_gateway import Node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with lane_node(tmp_path) as started:
        yield started


async def test_the_lane_answers_plain_requests_to_a_proxy_function(node: Node) -> None:
    async def answer(request: Received) -> Reply:
        headers = [("X-Backend", "yes"), ("Content-Type", "text/plain")]
        return 200, headers, f"{request.method} {request.target}".encode()

    function = await node.backend(answer)
    await node.route("/api/*rest", function.url + "/base/", method="GET", mode="proxy")

    paths = ["/api/items/1?q=1&q=2", "/api/items/2?x=%2F", "/api/a%20b/c?q=3", "/api/d?e=f"]
    for path in paths:
        response = await node.client.get(path, headers={"x-custom": "kept"})
        assert response.status_code == 200
        assert response.content == f"GET /base{path}".encode()
        assert response.headers["x-backend"] == "yes"
        assert response.headers["content-type"] == "text/plain"
        assert len(response.headers.get_list("date")) == 1
        assert "connection" not in response.headers
        assert response.http_version == "HTTP/1.1"

    assert len(function.received) == len(paths)
    for call, path in zip(function.received, paths, strict=True):
        assert (call.method, call.target) == ("GET", f"/base{path}")
        assert call.header("x-custom") == "kept"
        assert call.header("host") == f"127.0.0.1:{function.port}"
        assert call.header("x-forwarded-for") == "127.0.0.1"
        assert call.header("x-forwarded-proto") == "http"
        assert call.header("x-forwarded-host") == f"127.0.0.1:{node.server.port}"
        assert [name for name, _ in call.headers].count("host") == 1

    # The first request opened the function's connection through the general path; the rest
    # met it idle in the pool and took the lane: the handler never saw them.
    assert spy(node).handled == [("GET", "/api/items/1")]
    assert spy(node).taken == [False, True, True, True]
    assert requests_total(node, "GET", "/api/*rest", 200, "fn-0") == len(paths)
    assert "/api/items" not in node.metrics.render().decode()


async def test_the_lane_answers_head_on_the_get_route_and_keeps_date_single(node: Node) -> None:
    async def answer(request: Received) -> Reply:
        headers = [("Date", "Mon, 01 Jan 2001 00:00:00 GMT"), ("Server", "fn"), ("ETag", '"1"')]
        return 200, headers, b"hello"

    function = await node.backend(answer)
    await node.route("/page", function.url, method="GET", mode="proxy")
    await node.client.get("/page")  # opens the connection
    for _ in range(2):
        response = await node.client.head("/page")
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-length"] == "5"
        assert response.headers.get_list("date") != ["Mon, 01 Jan 2001 00:00:00 GMT"]
        assert len(response.headers.get_list("date")) == 1
        assert response.headers["server"] == "fn"
        assert response.headers["etag"] == '"1"'
    assert [call.method for call in function.received] == ["GET", "HEAD", "HEAD"]
    assert spy(node).taken == [False, True, True]
    assert requests_total(node, "HEAD", "/page", 200, "fn-0") == 2


# 2. The same answers on the lane and on the general path


@pytest.mark.parametrize("one_write", [False, True], ids=["two-writes", "one-write"])
async def test_pipelined_requests_are_answered_in_order(node: Node, one_write: bool) -> None:
    gate = asyncio.Event()
    function = await node.backend(gated(gate))
    await node.route("/*rest", function.url, method="GET", mode="proxy")
    assert (await node.client.get("/warm")).status_code == 200  # an idle pooled connection
    async with raw_client(node.server.port) as client:
        first, second = get("/slow"), get("/fast")
        if one_write:
            await client.send(first + second)
        else:
            await client.send(first)
            await until(lambda: any(r.target == "/slow" for r in function.received))
            assert spy(node).taken[-1] is True  # the lane is waiting for the function
            await client.send(second)
        await until(lambda: node.server.in_flight == 2)
        assert not any(r.target == "/fast" for r in function.received)  # waits its turn
        gate.set()
        one = await client.response()
        two = await client.response()
        assert (one.status, one.body) == (200, b"slow answer")
        assert (two.status, two.body) == (200, b"fast")
        await until(lambda: node.server.in_flight == 0)
        await client.send(get("/fast"))  # the connection still serves, on the lane
        three = await client.response()
        assert (three.status, three.body) == (200, b"fast")
        assert spy(node).taken[-1] is True


# 4. A pooled connection the function closed while idle


@pytest.mark.parametrize("when", ["after-answer", "on-next-request"])
async def test_a_connection_the_function_closed_is_resent_on_the_general_path(
    node: Node, when: str
) -> None:
    body = b"still here"

    async def answer(request: RawRequest, index: int) -> RawReply:
        if when == "on-next-request" and index > 0:
            return None  # the connection's close crossed the request: no answer
        reply = answer_head("HTTP/1.1 200 OK", f"Content-Length: {len(body)}") + body
        return reply, when == "after-answer"  # no Connection: close header either way

    backend = await raw_backend(node, answer)
    await node.route("/*rest", backend.url, method="GET", mode="proxy")
    requests = 6
    for number in range(requests):
        response = await node.client.get(f"/r{number}")
        assert (response.status_code, response.content) == (200, body), number
    assert requests_total(node, "GET", "/*rest", 200, "fn-0") == requests
    assert requests_total(node, "GET", "/*rest", 502, "fn-0") == 0
    if when == "on-next-request":  # deterministic: the lane met the dead connection each time
        assert spy(node).taken == [False] + [True] * (requests - 1)
        assert len(spy(node).handled) == requests  # each resent through the whole handler
        assert backend.connections == requests


# 5. A function slower than its timeout


async def test_a_slow_function_is_a_504_on_the_lane_and_the_connection_keeps_serving(
    node: Node,
) -> None:
    async def answer(request: Received) -> Reply:
        if request.target.startswith("/slow"):
            await slow.release.wait()
        return 200, [], b"fast"

    slow = await node.backend(answer)
    await node.route("/*rest", slow.url, method="GET", mode="proxy", timeout="PT0.2S")
    answers = []
    async with raw_client(node.server.port) as client:
        for lane in (True, False):
            node.server.lane = spy(node).lane if lane else None
            await client.send(get("/warm"))
            assert (await client.response()).body == b"fast"
            taken = len(spy(node).taken)
            await client.send(get("/slow"))
            response = await client.response()
            if lane:
                assert spy(node).taken[taken:] == [True]
            assert response.status == 504
            assert response.all(b"content-type") == [b"application/json"]
            message = orjson.loads(response.body)["errors"][0]["message"]
            assert "timed out" in message
            assert response.all(b"connection") == []
            answers.append((response.status, response.body))
            await client.send(get("/next"))  # the same client connection goes on
            after = await client.response()
            assert (after.status, after.body) == (200, b"fast")
    assert answers[0] == answers[1]
    assert requests_total(node, "GET", "/*rest", 504, "fn-0") == 2
    errors = node.metrics.registry.get_sample_value(
        "eventgate_function_errors_total",
        {"space": "default", "function": "fn-0", "reason": "timeout"},
    )
    assert errors == 2


# 6. The client leaves while the lane waits


async def test_a_client_leaving_while_the_lane_waits_does_not_stop_the_server(
    node: Node,
) -> None:
    gate = asyncio.Event()
    function = await node.backend(gated(gate))
    await node.route("/*rest", function.url, method="GET", mode="proxy")
    port = node.server.port
    assert (await node.client.get("/warm")).status_code == 200
    leaving = await RawClient.connect(port)
    await leaving.send(get("/slow"))
    await until(lambda: any(r.target == "/slow" for r in function.received))
    assert spy(node).taken[-1] is True
    assert node.server.in_flight == 1
    leaving.close()
    await leaving.writer.wait_closed()
    await until(lambda: len(node.server.connections) == 1)  # the httpx client's

    # Other clients are served meanwhile.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as other:
        del other.headers["connection"]
        for _ in range(3):
            response = await other.get("/other")
            assert (response.status_code, response.content) == (200, b"fast")
    assert node.server.in_flight == 1  # the lane's request still waits for the function

    gate.set()
    await until(lambda: node.server.in_flight == 0)
    # The function's connection went back to the pool and carries the next request.
    response = await node.client.get("/after")
    assert (response.status_code, response.content) == (200, b"fast")
    assert spy(node).taken[-1] is True


# More: what the lane leaves alone, routing changes, draining, large and stalled answers


_DECLINED = {
    "Origin on a CORS route": ("GET", "/cors", ["Origin: http://a.example"]),
    "Connection: keep-alive, x-drop": ("GET", "/p", ["Connection: keep-alive, x-drop"]),
    "Content-Length: 0": ("GET", "/p", ["Content-Length: 0"]),
    "X-Forwarded-Host": ("GET", "/p", ["X-Forwarded-Host: elsewhere"]),
    "a CloudEvents header": ("GET", "/p", ["Ce-Id: 1"]),
    "two Host headers": ("GET", "/p", ["Host: other"]),
    "no route": ("GET", "/nowhere", []),
    "POST": ("POST", "/p", []),
}


@pytest.mark.parametrize("name", list(_DECLINED))
async def test_the_lane_leaves_other_requests_to_the_general_path(node: Node, name: str) -> None:
    method, path, headers = _DECLINED[name]

    async def answer(request: Received) -> Reply:
        reply = {"statusCode": 200, "body": "event"}  # what an event-mode function answers
        return 200, [("x-path", request.target)], orjson.dumps(reply)

    function = await node.backend(answer)
    await node.route("/p", function.url, method=method, mode="proxy")
    await node.route("/cors", function.url, method="GET", mode="proxy")
    cors = Cors.model_validate({"method": "GET", "path": "/cors"})
    await node.put("cors", cors.cors_id or "", cors)

    answers = []
    async with raw_client(node.server.port) as client:
        for lane in (True, False):
            node.server.lane = spy(node).lane if lane else None
            for _ in range(2):  # the second meets an idle pooled connection
                handled = len(spy(node).handled)
                await client.send(get(path, *headers, method=method))
                response = await client.response()
                assert len(spy(node).handled) == handled + 1, "the general path answered"
            answers.append(response)
    assert spy(node).taken == [False, False]  # offered, and declined
    on_lane, general = answers
    assert on_lane.status == general.status
    assert on_lane.body == general.body
    assert [h for h in on_lane.headers if h[0] != b"date"] == [
        h for h in general.headers if h[0] != b"date"
    ]


async def test_a_routing_change_reaches_the_lane_at_once(node: Node) -> None:
    async def first(request: Received) -> Reply:
        return 200, [], b"first"

    async def second(request: Received) -> Reply:
        return 200, [], b"second"

    one, two = await node.backend(first), await node.backend(second)
    await node.route("/r", one.url, method="GET", mode="proxy")
    async with raw_client(node.server.port) as client:
        for _ in range(3):
            await client.send(get("/r"))
            assert (await client.response()).body == b"first"
        assert spy(node).taken == [False, True, True]
        # The same function now at another URL: the same request bytes go there.
        function = Function.model_validate(
            {"functionId": "fn-0", "type": "http", "provider": {"url": two.url, "mode": "proxy"}}
        )
        await node.put("functions", "fn-0", function)
        for _ in range(2):
            await client.send(get("/r"))
            assert (await client.response()).body == b"second"
        assert spy(node).taken[-1] is True
        assert len(one.received) == 3
        # And a route that is gone is a 404, not the remembered route.
        sub = Subscription.model_validate({"functionId": "fn-0", "path": "/r", "method": "GET"})
        await node.store.delete(store_key("subscriptions", "default", sub.subscription_id or ""))
        await until(lambda: node.routing.snapshot.lookup_sync("GET", "/r") is None)
        await client.send(get("/r"))
        assert (await client.response()).status == 404
        assert len(two.received) == 2


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "general"])
async def test_an_answer_while_the_port_drains_closes_the_connection_alike(
    node: Node, lane: bool
) -> None:
    gate = asyncio.Event()

    async def answer(request: Received) -> Reply:
        if request.target == "/slow":
            await gate.wait()
        return 200, [("x-function", "yes")], b"answer"

    function = await node.backend(answer)
    await node.route("/*rest", function.url, method="GET", mode="proxy")
    node.server.lane = spy(node).lane if lane else None
    async with raw_client(node.server.port) as client:
        await client.send(get("/warm"))
        assert (await client.response()).status == 200
        await client.send(get("/slow"))
        await until(lambda: any(r.target == "/slow" for r in function.received))
        assert spy(node).taken[-1:] == ([True] if lane else [])
        node.server.stop_accepting()  # busy connections close after their answer
        gate.set()
        response = await client.response()
        assert (response.status, response.body) == (200, b"answer")
        assert response.all(b"connection") == [b"close"]
        assert len(response.all(b"date")) == 1
        assert response.header(b"x-function") == b"yes"
        assert await client.closed()
    await until(lambda: node.server.in_flight == 0)


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "general"])
async def test_a_large_answer_leaves_the_function_connection_usable(node: Node, lane: bool) -> None:
    """Answers over 64 KiB, arriving whole in one read, then small ones on the same pooled
    connection (the lane hands large answers to the general path)."""

    async def answer(request: RawRequest, index: int) -> RawReply:
        if request.target == "/big":
            return answer_head("HTTP/1.1 200 OK", f"Content-Length: {len(BIG)}") + BIG, False
        return WARM, False

    backend = await raw_backend(node, answer)
    await node.route("/*rest", backend.url, method="GET", mode="proxy", timeout="PT2S")
    node.server.lane = spy(node).lane if lane else None
    async with raw_client(node.server.port) as client:
        for number in range(10):
            await client.send(get("/warm"))
            assert (await client.response()).status == 200, number
            await client.send(get("/big"))
            response = await client.response()
            assert (response.status, response.body) == (200, BIG), number
    assert backend.connections == 1


async def test_a_function_stalling_mid_answer_times_out_alike(node: Node) -> None:
    async def answer(request: RawRequest, index: int) -> RawReply:
        if request.target == "/stall":  # half the body, then nothing (the connection open)
            return answer_head("HTTP/1.1 200 OK", "Content-Length: 10") + b"01234", False
        return WARM, False

    backend = await raw_backend(node, answer)
    await node.route("/*rest", backend.url, method="GET", mode="proxy", timeout="PT0.2S")
    answers = []
    async with raw_client(node.server.port) as client:
        for lane in (True, False):
            node.server.lane = spy(node).lane if lane else None
            await client.send(get("/warm"))
            assert (await client.response()).status == 200
            await client.send(get("/stall"))
            response = await client.response()
            if lane:
                assert spy(node).taken[-1] is True
            answers.append((response.status, response.body))
            await client.send(get("/next"))  # the client's connection goes on
            assert (await client.response()).body == b"warm"
    assert answers[0] == answers[1]
    assert answers[0][0] == 504


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, True),
        (["--no-fast-lane"], {}, False),
        ([], {"EVENTGATE_FAST_LANE": "false"}, False),
        (["--fast-lane"], {"EVENTGATE_FAST_LANE": "false"}, True),
    ],
)
def test_the_fast_lane_flag_sets_the_setting(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], expected: bool
) -> None:
    import uvloop

    import eventgate.app
    import eventgate.observability.logs
    from eventgate.cli import main

    seen: list[Settings] = []

    def serve(settings: Settings) -> None:  # stands in for `app.serve`'s coroutine
        seen.append(settings)

    def run(coroutine: None) -> None:  # nothing to run
        assert coroutine is None

    monkeypatch.setattr(eventgate.app, "serve", serve)
    monkeypatch.setattr(uvloop, "run", run)
    monkeypatch.setattr(eventgate.observability.logs, "configure_logging", lambda *a: None)
    result = CliRunner().invoke(main, ["serve", *args], env=env)
    assert result.exit_code == 0, result.output
    assert [s.fast_lane for s in seen] == [expected]


async def test_a_head_past_the_limit_is_a_431_on_either_path(node: Node) -> None:
    """The lane declines a head the server would refuse: the general path answers 431."""

    async def answer(request: Received) -> Reply:
        return 200, [], b"ok"

    function = await node.backend(answer)
    await node.route("/p", function.url, method="GET", mode="proxy")
    async with raw_client(node.server.port) as client:
        await client.send(get("/p"))  # opens the pooled connection
        assert (await client.response()).status == 200
    limit = node.server.max_header_bytes
    for lane in (True, False):
        node.server.lane = spy(node).lane if lane else None
        async with raw_client(node.server.port) as client:
            await client.send(get("/p", "X-Big: " + "b" * limit))
            response = await client.response()
        assert response.status == 431, lane
    assert True not in spy(node).taken[1:]
    assert len(function.received) == 1


async def test_a_head_to_a_cloudevents_function_is_left_to_the_general_path(node: Node) -> None:
    """Its answer (to the POST of the event) has a body the client must not get: the general
    path drops it and says how long it was."""

    async def answer(request: Received) -> Reply:
        return 200, [("content-type", "text/plain")], b"event seen"

    function = await node.backend(answer)
    await node.route("/ce", function.url, method="GET", mode="cloudevents")
    async with raw_client(node.server.port) as client:
        await client.send(get("/ce"))  # opens the pooled connection
        assert (await client.response()).body == b"event seen"
        offered = len(spy(node).taken)
        await client.send(get("/ce", method="HEAD"))
        response = await client.response(head_only=True)
    assert spy(node).taken[offered:] == [False]
    assert (response.status, response.body) == (200, b"")
    assert response.header(b"content-length") == b"10"
    assert function.received[-1].method == "POST"
