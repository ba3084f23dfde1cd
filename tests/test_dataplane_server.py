"""The events port's HTTP/1.1 server, driven over raw sockets on 127.0.0.1."""

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from eventgate.dataplane.flow_control import HIGH_WATER
from eventgate.dataplane.server import DataPlaneServer
from eventgate.dataplane.types import BodyIncomplete, BodyTooLarge, Request, Response
from tests.dataplane_helpers import (
    RawClient,
    RawResponse,
    chunked,
    get,
    post,
    raw_client,
    serving,
    until,
)

TEXT = [(b"content-type", b"text/plain")]


class App:
    """A test handler: each path is one behaviour; it records what it saw."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gate = asyncio.Event()
        self.produced = 0
        self.failures: list[Exception] = []
        self.request: Request | None = None

    async def __call__(self, request: Request) -> Response:
        self.started.append(request.path)
        route = getattr(self, request.path.strip("/").replace("-", "_") or "root")
        return await route(request)

    async def root(self, request: Request) -> Response:
        return Response(200, TEXT, b"hello " + request.method.encode())

    async def echo(self, request: Request) -> Response:
        body = await request.body.read()
        return Response(200, [*TEXT, (b"x-query", request.query_string)], body)

    async def slow(self, request: Request) -> Response:
        await self.gate.wait()
        return Response(200, TEXT, b"slow")

    async def ignore_body(self, request: Request) -> Response:
        return Response(200, TEXT, b"not read")

    async def gated_echo(self, request: Request) -> Response:
        self.request = request
        await self.gate.wait()
        return await self.echo(request)

    async def stream_echo(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.body:
                yield chunk

        return Response(200, TEXT, chunks())

    async def count_body(self, request: Request) -> Response:
        """Hold the body until the gate opens, then count it chunk by chunk."""
        self.request = request
        await self.gate.wait()
        total = 0
        async for chunk in request.body:
            total += len(chunk)
        return Response(200, TEXT, b"%d" % total)

    async def stream(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"one", b"two", b"three"):
                yield part

        return Response(200, TEXT, chunks())

    async def stream_length(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"hello "
            yield b"world"

        return Response(200, [*TEXT, (b"content-length", b"11")], chunks())

    async def big_stream(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(256):
                self.produced += 1
                yield b"x" * 65536

        return Response(200, TEXT, chunks())

    async def endless(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                yield b"first"
                await self.gate.wait()
                yield b"never sent"
            finally:
                self.produced = -1  # closed by the server

        return Response(200, TEXT, chunks())

    async def own_length(self, request: Request) -> Response:
        return Response(200, [(b"Content-Length", b"999"), (b"Date", b"yesterday")], b"abc")

    async def crash(self, request: Request) -> Response:
        raise RuntimeError("boom")

    async def crash_streaming(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            raise RuntimeError("boom")
            yield b""

        return Response(200, TEXT, chunks())

    async def bad_header(self, request: Request) -> Response:
        return Response(200, [(b"x-evil", b"a\r\nset-cookie: b")], b"")

    async def raise_too_large(self, request: Request) -> Response:
        raise BodyTooLarge("no")

    async def watch_body(self, request: Request) -> Response:
        try:
            await request.body.read()
        except BodyIncomplete as exc:
            self.failures.append(exc)
            self.gate.set()
            raise
        return Response(200, TEXT, b"complete")


def assert_json_error(response: RawResponse, status: int) -> None:
    assert response.status == status
    assert response.header(b"content-type") == b"application/json"
    assert response.header(b"connection") == b"close"
    message = orjson.loads(response.body)["errors"][0]["message"]
    assert isinstance(message, str) and message


# Keep-alive and connection handling


async def test_keep_alive_serves_requests_on_one_connection() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        for _ in range(3):
            await client.send(get("/"))
            response = await client.response()
            assert (response.status, response.body) == (200, b"hello GET")
            assert response.header(b"connection") is None
            assert response.header(b"content-length") == b"9"
        assert len(server.connections) == 1


async def test_http10_closes_unless_keep_alive_is_asked() -> None:
    async with serving(App()) as server:
        async with raw_client(server.port) as client:
            await client.send(get("/", version="1.0"))
            assert (await client.response()).header(b"connection") == b"close"
            assert await client.closed()
        async with raw_client(server.port) as client:
            for _ in range(2):
                await client.send(get("/", "Connection: keep-alive", version="1.0"))
                response = await client.response()
                assert response.header(b"connection") == b"keep-alive"
                assert response.body == b"hello GET"


async def test_connection_close_is_honoured() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(get("/", "Connection: close"))
        response = await client.response()
        assert response.status == 200
        assert response.header(b"connection") == b"close"
        assert await client.closed()


async def test_pipelined_requests_are_answered_in_order() -> None:
    app = App()
    async with serving(app) as server, raw_client(server.port) as client:
        await client.send(get("/slow") + post("/echo", b"second") + get("/?third"))
        await until(lambda: server.in_flight == 3)
        assert app.started == ["/slow"]  # one at a time, the slow one first
        app.gate.set()
        bodies = [(await client.response()).body for _ in range(3)]
        assert bodies == [b"slow", b"second", b"hello GET"]


async def test_server_and_date_headers_and_one_content_length() -> None:
    async with (
        serving(App(), server_header=b"eventgate") as server,
        raw_client(server.port) as client,
    ):
        await client.send(get("/own-length"))
        response = await client.response()
        assert response.body == b"abc"
        assert response.all(b"content-length") == [b"3"]
        assert response.header(b"server") == b"eventgate"
        assert len(response.all(b"date")) == 1
        assert response.header(b"date").endswith(b" GMT")


# Bodies


async def test_chunked_request_body_is_reassembled() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        head = b"POST /echo?x=1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = chunked(b"hello ", b"chunked ", b"world")
        await client.send(head + body[:9])
        await client.send(body[9:])
        response = await client.response()
        assert response.body == b"hello chunked world"
        assert response.header(b"x-query") == b"x=1"


async def test_streamed_response_is_chunked() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(get("/stream"))
        response = await client.response()
        assert response.header(b"transfer-encoding") == b"chunked"
        assert response.body == b"onetwothree"
        assert response.chunk_sizes == [3, 3, 5]
        await client.send(get("/"))  # the connection stays usable
        assert (await client.response()).body == b"hello GET"


async def test_streamed_body_echoes_a_chunked_request() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        head = b"POST /stream-echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        await client.send(head + chunked(b"a" * 1000, b"b" * 3000))
        response = await client.response()
        assert response.body == b"a" * 1000 + b"b" * 3000


async def test_streamed_response_with_content_length_is_sent_raw() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(get("/stream-length"))
        response = await client.response()
        assert response.header(b"transfer-encoding") is None
        assert response.header(b"content-length") == b"11"
        assert response.body == b"hello world"


async def test_streamed_response_to_http10_ends_with_the_connection() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(get("/stream", "Connection: keep-alive", version="1.0"))
        response = await client.response()
        assert response.header(b"transfer-encoding") is None
        assert response.header(b"connection") == b"close"
        assert response.body == b"onetwothree"  # read to EOF


async def test_expect_100_continue_is_sent_when_the_handler_reads() -> None:
    app = App()
    async with serving(app) as server, raw_client(server.port) as client:
        head = b"POST /gated-echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        await client.send(head + b"Expect: 100-continue\r\n\r\n")
        await until(lambda: app.request is not None)
        app.gate.set()  # now the handler reads
        async with asyncio.timeout(5):
            interim = await client.reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.send(b"hello")
        assert (await client.response()).body == b"hello"


async def test_expect_100_continue_is_not_sent_when_the_handler_does_not_read() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        head = b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        await client.send(head + b"Expect: 100-continue\r\n\r\n")
        response = await client.response()  # the final answer comes first
        assert (response.status, response.body) == (200, b"not read")
        assert await client.closed()  # the unsent body cannot be skipped


async def test_expect_100_continue_with_too_large_length_gets_413_at_once() -> None:
    async with serving(App(), max_body_bytes=100) as server, raw_client(server.port) as client:
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n"
        await client.send(head + b"Expect: 100-continue\r\n\r\n")
        assert_json_error(await client.response(), 413)
        assert await client.closed()


async def test_head_has_the_get_headers_and_no_body() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(get("/", method="HEAD"))
        head = await client.response(head_only=True)
        assert head.status == 200
        assert head.header(b"content-length") == b"10"  # "hello HEAD"
        await client.send(get("/stream", method="HEAD"))
        head = await client.response(head_only=True)
        assert head.header(b"transfer-encoding") == b"chunked"
        await client.send(get("/"))  # no stray body bytes came before this answer
        response = await client.response()
        assert response.body == b"hello GET"


# Limits and errors


async def test_header_block_too_large_is_431() -> None:
    async with serving(App(), max_header_bytes=1024) as server:
        async with raw_client(server.port) as client:
            await client.send(get("/", "X-Big: " + "a" * 2000))
            assert_json_error(await client.response(), 431)
            assert await client.closed()
        async with raw_client(server.port) as client:  # one header line that never ends
            await client.send(b"GET / HTTP/1.1\r\nX-Big: ")
            for _ in range(4):
                await client.send(b"a" * 1024)
            assert_json_error(await client.response(), 431)


async def test_body_too_large_by_content_length_is_413() -> None:
    async with serving(App(), max_body_bytes=100) as server, raw_client(server.port) as client:
        await client.send(post("/echo", b"x" * 101))
        assert_json_error(await client.response(), 413)
        assert await client.closed()


async def test_chunked_body_too_large_is_413() -> None:
    async with serving(App(), max_body_bytes=100) as server, raw_client(server.port) as client:
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        await client.send(head + chunked(b"x" * 60, b"y" * 60))
        assert_json_error(await client.response(), 413)
        assert await client.closed()


async def test_malformed_request_is_400() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n")
        assert_json_error(await client.response(), 400)
        assert await client.closed()


async def test_malformed_chunk_is_400() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        await client.send(head + b"5\r\nhello\r\nzz\r\n")
        assert_json_error(await client.response(), 400)


async def test_handler_exception_is_500_and_the_connection_lives_on() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(get("/crash"))
        response = await client.response()
        assert response.status == 500
        assert response.header(b"content-type") == b"application/json"
        assert orjson.loads(response.body) == {"errors": [{"message": "internal server error"}]}
        await client.send(get("/"))
        assert (await client.response()).body == b"hello GET"


async def test_failing_stream_before_first_chunk_is_500() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(get("/crash-streaming"))
        assert_json_error(await client.response(), 500)


async def test_header_injection_is_refused_with_500() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(get("/bad-header"))
        response = await client.response()
        assert response.status == 500
        assert response.header(b"set-cookie") is None


async def test_handler_raising_body_too_large_is_413() -> None:
    async with serving(App()) as server, raw_client(server.port) as client:
        await client.send(get("/raise-too-large"))
        assert_json_error(await client.response(), 413)


async def test_client_gone_mid_body_fails_the_body_read() -> None:
    app = App()
    async with serving(app) as server:
        client = await RawClient.connect(server.port)
        await client.send(post("/watch-body", b"x" * 100)[:-50])
        await until(lambda: server.in_flight == 1)
        client.close()
        await app.gate.wait()
        assert isinstance(app.failures[0], BodyIncomplete)
        await until(lambda: server.in_flight == 0)


# Timeouts


async def test_stalled_partial_request_gets_408() -> None:
    async with serving(App(), read_timeout=0.2) as server, raw_client(server.port) as client:
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        assert_json_error(await client.response(), 408)
        assert await client.closed()


async def test_stalled_body_gets_408() -> None:
    app = App()
    async with serving(app, read_timeout=0.2) as server, raw_client(server.port) as client:
        await client.send(post("/watch-body", b"x" * 100)[:-50])
        assert_json_error(await client.response(), 408)
        await app.gate.wait()
        assert isinstance(app.failures[0], BodyIncomplete)


async def test_idle_keep_alive_connection_is_closed() -> None:
    async with serving(App(), idle_timeout=0.2) as server, raw_client(server.port) as client:
        await client.send(get("/"))
        assert (await client.response()).status == 200
        assert await client.closed()
        await until(lambda: not server.connections)


# Flow control


async def test_slow_body_consumer_pauses_reading() -> None:
    app = App()
    size = 32 * 1024 * 1024
    async with serving(app, max_body_bytes=size) as server, raw_client(server.port) as client:
        upload = asyncio.create_task(client.send(post("/count-body", b"z" * size)))
        await until(lambda: app.request is not None)
        (conn,) = server.connections
        await until(lambda: conn._flow.read_paused)
        assert app.request is not None
        body = app.request.body
        assert body.buffered < HIGH_WATER + 1024 * 1024  # bounded by one socket read
        assert not upload.done()  # the client is held back by TCP
        app.gate.set()
        await upload
        response = await client.response()
        assert response.body == b"%d" % size


async def test_streamed_response_waits_for_a_slow_client() -> None:
    app = App()
    async with serving(app) as server, raw_client(server.port) as client:
        await client.send(get("/big-stream"))
        (conn,) = server.connections
        await until(lambda: conn._flow.write_paused)
        assert app.produced < 256  # the generator waits for the socket to drain
        response = await client.response()
        assert len(response.body) == 256 * 65536
        assert app.produced == 256


async def test_client_leaving_mid_stream_closes_the_stream_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    async with serving(app) as server:
        async with raw_client(server.port) as client:
            await client.send(get("/endless"))
            async with asyncio.timeout(5):
                await client.reader.readuntil(b"first\r\n")
        await until(lambda: not server.connections)
        app.gate.set()
        await until(lambda: app.produced == -1)
        await until(lambda: server.in_flight == 0)
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


# Draining


async def test_in_flight_and_graceful_stop() -> None:
    app = App()
    async with (
        serving(app) as server,
        raw_client(server.port) as idle,
        raw_client(server.port) as busy,
    ):
        await idle.send(get("/"))
        await idle.response()
        await busy.send(get("/slow"))
        await until(lambda: server.in_flight == 1)
        server.stop_accepting()
        assert await idle.closed()  # idle keep-alive connections close at once
        drained = asyncio.create_task(server.wait_drained())
        app.gate.set()
        response = await busy.response()
        assert response.body == b"slow"
        assert response.header(b"connection") == b"close"  # no more requests here
        await drained
        assert server.in_flight == 0
        assert await busy.closed()


async def test_close_cancels_handlers_still_running() -> None:
    app = App()
    server = DataPlaneServer(
        app, max_header_bytes=1024, max_body_bytes=1024, read_timeout=5, idle_timeout=5
    )
    await server.start("127.0.0.1", 0)
    client = await RawClient.connect(server.port)
    await client.send(get("/slow"))
    await until(lambda: server.in_flight == 1)
    await server.close()
    assert server.in_flight == 0
    assert await client.closed()
    client.close()
