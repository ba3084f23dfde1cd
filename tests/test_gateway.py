"""The events port end to end over real sockets: DataPlaneServer + Gateway + a function backend
(`tests/gateway_backend.py`), fed from a real SQLite store through the routing table."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from eventgate.dataplane.gateway import Gateway
from eventgate.dataplane.server import DataPlaneServer
from eventgate.dataplane.upstream import UpstreamPool
from eventgate.model import Cors, Function, Resource, Subscription, store_key
from eventgate.observability.metrics import Metrics
from eventgate.routing.table import RoutingTable
from eventgate.settings import Settings
from eventgate.store.sqlite import SqliteStore
from tests.gateway_backend import Answer, Backend, Received, Reply

SEED_BODY = b'{"message": "Hello world!"}'


async def echo_function(request: Received) -> Reply:
    """The seed's echo function: the HTTP event's body back, Compute-Type: function."""
    body = request.json()["data"]["body"]
    reply = {"statusCode": 200, "headers": {"Compute-Type": "function"}, "body": body}
    return 200, [("content-type", "application/json")], orjson.dumps(reply)


class Node:
    """The events port of one node, fed from a real SQLite store through a routing table."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.metrics = Metrics()
        self.backends: list[Backend] = []

    async def start(self) -> "Node":
        self.store = await SqliteStore.open(self.tmp_path / "config.db")
        self.routing = RoutingTable(self.store, self.metrics)
        await self.routing.start()
        settings = Settings(function_timeout=5.0)
        self.upstream = UpstreamPool(max_body_bytes=settings.max_body_bytes)
        self.gateway = Gateway(self.routing, self.upstream, self.metrics, settings)
        self.server = DataPlaneServer(
            self.gateway.handle,
            max_header_bytes=settings.max_header_bytes,
            max_body_bytes=settings.max_body_bytes,
            read_timeout=settings.read_timeout,
            idle_timeout=settings.idle_timeout,
        )
        await self.server.start("127.0.0.1", 0)
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.server.port}")
        return self

    async def close(self) -> None:
        await self.client.aclose()
        for backend in self.backends:
            await backend.close()
        self.server.stop_accepting()
        await self.server.close()
        await self.routing.stop()
        await self.upstream.close()
        await self.store.close()

    async def backend(self, answer: Answer) -> Backend:
        backend = await Backend(answer).start()
        self.backends.append(backend)
        return backend

    async def put(self, kind: str, resource_id: str, resource: Resource) -> None:
        """Write a resource to the store and wait until the events port routes it."""
        value = orjson.dumps(resource.to_json())
        entry = await self.store.put(store_key(kind, "default", resource_id), value)
        async with asyncio.timeout(1.0):
            await self.routing.wait_for_revision(entry.revision)

    async def route(self, path: str, url: str, method: str = "POST", **provider: str) -> None:
        """Register function `fn-<n>` at `url` and subscribe it to `method path`."""
        function_id = f"fn-{len(self.routing.snapshot.functions)}"
        function = Function.model_validate(
            {"functionId": function_id, "type": "http", "provider": {"url": url, **provider}}
        )
        await self.put("functions", function_id, function)
        sub = Subscription.model_validate(
            {"functionId": function_id, "path": path, "method": method}
        )
        await self.put("subscriptions", sub.subscription_id or "", sub)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    started = await Node(tmp_path).start()
    yield started
    await started.close()


def error_message(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json"
    return response.json()["errors"][0]["message"]


async def test_the_seed_request_through_an_eventgateway_function(node: Node) -> None:
    function = await node.backend(echo_function)
    await node.route("/", function.url)

    # curl --data sends the body as a form, which the event carries as the exact string.
    response = await node.client.post(
        "/", content=SEED_BODY, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200
    assert response.content == SEED_BODY
    assert response.headers["compute-type"] == "function"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-length"] == "27"

    call = function.received[0]
    assert (call.method, call.target) == ("POST", "/")
    assert call.header("content-type") == "application/cloudevents+json"
    event = call.json()
    assert event["eventType"] == "http.request"
    assert event["cloudEventsVersion"] == "0.1"
    assert event["data"]["body"] == SEED_BODY.decode()


async def test_eventgateway_reply_sets_status_headers_and_body(node: Node) -> None:
    async def answer(request: Received) -> Reply:
        data = request.json()["data"]
        reply = {"statusCode": 201, "headers": {"X-Seen": "yes"}, "body": data}
        return 200, [], orjson.dumps(reply)

    function = await node.backend(answer)
    await node.route("/users/:id", function.url, method="PUT")
    response = await node.client.put("/users/42?x=1&x=2", json={"name": "Ann"})
    assert response.status_code == 201
    assert response.headers["x-seen"] == "yes"
    assert response.headers["content-type"] == "application/json"  # a non-string body
    data = response.json()
    assert data["params"] == {"id": "42"}
    assert data["body"] == {"name": "Ann"}
    assert data["query"] == {"x": ["1", "2"]}
    assert (data["method"], data["path"]) == ("PUT", "/users/42")


@pytest.mark.parametrize(
    "reply", [b"not json", b"[1, 2]", b'{"statusCode": "200"}', b'{"headers": {"a": 1}}']
)
async def test_a_malformed_reply_is_a_502(node: Node, reply: bytes) -> None:
    async def answer(request: Received) -> Reply:
        return 200, [], reply

    await node.route("/", (await node.backend(answer)).url)
    response = await node.client.post("/")
    assert response.status_code == 502
    assert error_message(response).startswith("HTTP response object malformed")


async def test_a_function_answering_a_server_error_is_a_502(node: Node) -> None:
    async def crash(request: Received) -> Reply:
        return 500, [], b"Internal Server Error"

    await node.route("/", (await node.backend(crash)).url)
    response = await node.client.post("/")
    assert response.status_code == 502
    assert "HTTP 500" in error_message(response)


async def test_cloudevents_mode_sends_binary_mode_and_passes_the_reply_back(node: Node) -> None:
    async def answer(request: Received) -> Reply:
        return 202, [("x-function", "ce"), ("content-type", "text/csv")], b"a,b\n1,2\n"

    function = await node.backend(answer)
    await node.route("/ce", function.url, mode="cloudevents")
    response = await node.client.post(
        "/ce", content=b"hello", headers={"content-type": "text/plain"}
    )
    assert (response.status_code, response.content) == (202, b"a,b\n1,2\n")
    assert response.headers["x-function"] == "ce"
    assert response.headers["content-type"] == "text/csv"

    call = function.received[0]
    assert call.header("ce-specversion") == "1.0"
    assert call.header("ce-type") == "http.request"
    assert call.header("ce-source") and call.header("ce-id") and call.header("ce-time")
    assert call.header("content-type") == "application/json"
    assert call.json()["body"] == "hello"


async def test_proxy_mode_forwards_the_request_and_streams_both_ways(node: Node) -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: more than is buffered, so it streams

    async def answer(request: Received) -> Reply:
        headers = [("x-got", str(len(request.body))), ("transfer-encoding", "chunked")]
        return 200, headers, big

    function = await node.backend(answer)
    await node.route("/api/*rest", function.url + "/base/", mode="proxy")

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 1024

    response = await node.client.post(
        "/api/a%20b/c?q=1&q=2",
        content=upload(),
        headers={"x-custom": "kept", "connection": "keep-alive, x-drop", "x-drop": "gone"},
    )
    assert response.status_code == 200
    assert response.content == big
    assert response.headers["x-got"] == str(64 * 1024)

    call = function.received[0]
    assert (call.method, call.target) == ("POST", "/base/api/a%20b/c?q=1&q=2")
    assert call.body == b"x" * 64 * 1024
    assert call.header("x-custom") == "kept"
    assert call.header("x-drop") is None
    assert call.header("host") == f"127.0.0.1:{function.port}"
    assert call.header("x-forwarded-host") == f"127.0.0.1:{node.server.port}"
    assert call.header("x-forwarded-for") == "127.0.0.1"
    assert call.header("x-forwarded-proto") == "http"


async def test_no_route_is_a_404_naming_method_and_path(node: Node) -> None:
    response = await node.client.get("/nowhere")
    assert response.status_code == 404
    assert "GET /nowhere" in error_message(response)


async def test_an_unreachable_function_is_a_502(node: Node) -> None:
    closed = await node.backend(echo_function)
    await closed.close()
    await node.route("/", closed.url)
    response = await node.client.post("/")
    assert response.status_code == 502
    assert "unreachable" in error_message(response)
    errors = node.metrics.registry.get_sample_value(
        "eventgate_function_errors_total",
        {"space": "default", "function": "fn-0", "reason": "unreachable"},
    )
    assert errors == 1


async def test_a_slow_function_is_a_504(node: Node) -> None:
    async def never(request: Received) -> Reply:
        await slow.release.wait()
        return 200, [], b"{}"

    slow = await node.backend(never)
    await node.route("/", slow.url, timeout="PT0.2S")
    response = await node.client.post("/")
    assert response.status_code == 504
    assert "timed out" in error_message(response)


async def test_head_falls_back_to_the_get_route(node: Node) -> None:
    function = await node.backend(echo_function)
    await node.route("/page", function.url, method="GET")
    response = await node.client.head("/page")
    assert response.status_code == 200
    assert response.content == b""
    assert function.received[0].json()["data"]["method"] == "HEAD"


async def test_cors_preflight_and_actual_request(node: Node) -> None:
    function = await node.backend(echo_function)
    await node.route("/items/:id", function.url)
    cors = Cors.model_validate(
        {
            "method": "POST",
            "path": "/items/:id",
            "allowedOrigins": ["http://*.domain.com"],
            "allowedMethods": ["POST"],
            "allowedHeaders": ["Content-Type", "X-Key"],
            "allowCredentials": True,
        }
    )
    await node.put("cors", cors.cors_id or "", cors)
    preflight = {
        "origin": "http://app.domain.com",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, x-key",
    }
    response = await node.client.options("/items/1", headers=preflight)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "http://app.domain.com"
    assert response.headers["access-control-allow-methods"] == "POST"
    assert response.headers["access-control-allow-headers"] == "content-type, x-key"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert function.received == []  # the gateway answered the preflight itself

    refused = await node.client.options(
        "/items/1", headers={**preflight, "origin": "http://evil.example"}
    )
    assert refused.status_code == 204
    assert "access-control-allow-origin" not in refused.headers

    actual = await node.client.post(
        "/items/1", content=b"x", headers={"origin": "http://app.domain.com"}
    )
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-origin"] == "http://app.domain.com"
    assert actual.headers["access-control-allow-credentials"] == "true"
    plain = await node.client.post("/items/1", content=b"x")
    assert "access-control-allow-origin" not in plain.headers


async def test_default_cors_lets_any_origin_read_without_credentials(node: Node) -> None:
    await node.route("/open", (await node.backend(echo_function)).url, method="GET")
    cors = Cors.model_validate({"method": "GET", "path": "/open"})
    await node.put("cors", cors.cors_id or "", cors)
    preflight = await node.client.options(
        "/open", headers={"origin": "http://a.example", "access-control-request-method": "GET"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers
    actual = await node.client.get("/open", headers={"origin": "http://a.example"})
    assert actual.headers["access-control-allow-origin"] == "*"
    assert actual.headers["vary"] == "Origin"


async def test_draining_answers_503(node: Node) -> None:
    await node.route("/", (await node.backend(echo_function)).url)
    node.gateway.start_draining()
    response = await node.client.post("/")
    assert response.status_code == 503
    assert json.loads(response.content) == {"errors": [{"message": "Service Unavailable"}]}


async def test_metrics_use_the_route_pattern_not_the_raw_path(node: Node) -> None:
    await node.route("/users/:id", (await node.backend(echo_function)).url, method="GET")
    for user in ("1", "2", "3"):
        assert (await node.client.get(f"/users/{user}")).status_code == 200
    labels = {"method": "GET", "route": "/users/:id", "function": "fn-0", "status": "200"}
    requests = node.metrics.registry.get_sample_value("eventgate_events_requests_total", labels)
    assert requests == 3
    rendered = node.metrics.render().decode()
    assert "/users/1" not in rendered
