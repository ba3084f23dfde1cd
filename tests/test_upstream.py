"""The pooled upstream client against real servers on 127.0.0.1: eventgate's own DataPlaneServer
for well-behaved upstreams, raw asyncio servers for scripted misbehaviour."""

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from eventgate.dataplane.types import Request, Response
from eventgate.dataplane.upstream import (
    WHOLE_BODY,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from tests.dataplane_helpers import serving

TIMEOUT = 5.0

# A self-signed certificate for 127.0.0.1 and localhost, valid until 2126 (test only).
CERT = b"""-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUfD+I+gAvuRr90xSrIJzXSEOr2sAwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMTE0MDgwNloYDzIxMjYxMDI4
MTQwODA2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAS2O2Dkwwq0iUKc4OagLJzcZA/rY3LAtoZBMqtwouqJAOOtTKVD29KG
qiAw3Pezs1V4fZII0y46mqyn4iLcmF6zo28wbTAdBgNVHQ4EFgQULor9DkiwyZSF
G0AXnlwwtfm52j8wHwYDVR0jBBgwFoAULor9DkiwyZSFG0AXnlwwtfm52j8wDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwCgYIKoZI
zj0EAwIDSAAwRQIgDiYaRZFk9JOVgTWLv8q6ltHaMA/SavFSXSVLeeyBZ6UCIQCQ
C54uy7d1f1sq7n1SzlbnOwasUPYEGFgK7MX+OMRrVg==
-----END CERTIFICATE-----
"""
KEY = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgD6WdIXf0XOfWrqtE
zZVFU285Ce46j3KFVNyfaacen8mhRANCAAS2O2Dkwwq0iUKc4OagLJzcZA/rY3LA
toZBMqtwouqJAOOtTKVD29KGqiAw3Pezs1V4fZII0y46mqyn4iLcmF6z
-----END PRIVATE KEY-----
"""


async def app(request: Request) -> Response:
    """A well-behaved upstream: each path is one behaviour."""
    if request.path == "/peer":  # which client connection asked
        assert request.client is not None
        return Response(200, [], b"%d" % request.client[1])
    if request.path == "/echo":
        body = await request.body.read()
        framing = request.header(b"transfer-encoding") or request.header(b"content-length")
        return Response(200, [(b"x-framing", framing or b"none")], body)
    if request.path == "/chunks":
        count = int(request.query_string or b"3")

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(count):
                yield b"%d:" % index + b"x" * 65536

        return Response(200, [(b"content-type", b"text/plain")], chunks())
    target = request.raw_path + b"?" + request.query_string
    return Response(200, [(b"x-host", request.header(b"host") or b"")], target)


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Backend:
    """A raw HTTP server: connection number `n` runs `script(reader, writer, n)`."""

    def __init__(self, script: Script, context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.context = context
        self.connections = 0
        self.port = 0
        self.hold = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http{'s' if self.context else ''}://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> "Backend":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.hold.set()
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away mid-script: the test looks at what it got
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request head (the scripts here get no bodies)."""
    return await reader.readuntil(b"\r\n\r\n")


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(line + b"\r\n" for line in extra)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstream = UpstreamPool()
    yield upstream
    await upstream.close()


async def fetch(pool: UpstreamPool, url: str, **options: object) -> tuple[int, bytes]:
    options.setdefault("headers", [])
    options.setdefault("timeout", TIMEOUT)
    response = await pool.request(options.pop("method", "GET"), url, **options)  # type: ignore[arg-type]
    return response.status, await response.read()


# Pooling


async def test_sequential_requests_reuse_one_connection(pool: UpstreamPool) -> None:
    async with serving(app) as server:
        url = f"http://127.0.0.1:{server.port}/peer"
        peers = {(await fetch(pool, url))[1] for _ in range(5)}
        assert len(peers) == 1
        assert len(server.connections) == 1


async def test_stale_idle_connection_is_retried_once_on_a_fresh_one(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(ok(b"conn %d" % n))
        if n == 1:  # the next request finds this connection closed, unanswered
            await read_request(reader)

    async with Backend(script) as backend:
        assert await fetch(pool, backend.url) == (200, b"conn 1")
        assert await fetch(pool, backend.url) == (200, b"conn 2")
        assert backend.connections == 2


async def test_streamed_request_is_not_retried(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(ok(b"first"))
        await read_request(reader)

    async def body() -> AsyncIterator[bytes]:
        yield b"once only"

    async with Backend(script) as backend:
        assert await fetch(pool, backend.url) == (200, b"first")
        with pytest.raises(UpstreamConnectError):
            await fetch(pool, backend.url, method="POST", body=body())
        assert backend.connections == 1


async def test_an_answer_before_the_upload_ends_is_returned(pool: UpstreamPool) -> None:
    answered = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(ok(b"too big", b"Connection: close"))
        await writer.drain()
        answered.set()

    async def body() -> AsyncIterator[bytes]:
        yield b"first part"
        await answered.wait()
        yield b"second part"

    async with Backend(script) as backend:
        status, text = await fetch(pool, backend.url, method="POST", body=body())
        assert (status, text) == (200, b"too big")


async def test_upstream_connection_close_is_not_pooled(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(ok(b"conn %d" % n, b"Connection: close"))
        await backend.hold.wait()  # the client must not wait for this close

    async with Backend(script) as backend:
        assert await fetch(pool, backend.url) == (200, b"conn 1")
        assert await fetch(pool, backend.url) == (200, b"conn 2")


async def test_aclose_of_an_unread_body_drops_the_connection(pool: UpstreamPool) -> None:
    async with serving(app) as server:
        base = f"http://127.0.0.1:{server.port}"
        response = await pool.request("GET", base + "/chunks?50", headers=[], timeout=TIMEOUT)
        assert not response.complete
        await response.__anext__()
        await response.aclose()
        _, first = await fetch(pool, base + "/peer")
        _, second = await fetch(pool, base + "/peer")
        assert first == second  # a new connection, pooled from then on


# Failures


async def test_refused_port_is_a_connect_error(pool: UpstreamPool) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UpstreamConnectError):
        await fetch(pool, f"http://127.0.0.1:{port}/")


async def test_no_answer_in_time_is_a_timeout(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        await backend.hold.wait()

    async with Backend(script) as backend:
        with pytest.raises(UpstreamTimeout):
            await fetch(pool, backend.url, timeout=0.2)


async def test_stalled_body_is_a_timeout(pool: UpstreamPool) -> None:
    length = WHOLE_BODY + 10  # a larger body: the head comes back first, the body streams

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nhalf" % length)
        await backend.hold.wait()

    async with Backend(script) as backend:
        response = await pool.request("GET", backend.url, headers=[], timeout=0.5)
        assert response.status == 200
        with pytest.raises(UpstreamTimeout):
            await response.read()


async def test_small_body_comes_with_its_head_or_times_out(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhalf")
        await writer.drain()
        if n == 1:
            await backend.hold.wait()  # the first connection's answer stalls
        writer.write(b" a body")
        await writer.drain()

    async with Backend(script) as backend:
        with pytest.raises(UpstreamTimeout):
            await pool.request("GET", backend.url, headers=[], timeout=0.5)
        response = await pool.request("GET", backend.url, headers=[], timeout=5)
        assert response.complete  # the body was awaited with the head
        assert await response.read() == b"half a body"


async def test_closed_before_answering_is_a_connect_error(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async with Backend(script) as backend:
        with pytest.raises(UpstreamConnectError):
            await fetch(pool, backend.url)


async def test_malformed_response_is_a_protocol_error(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 abc nonsense\r\n\r\n")
        await backend.hold.wait()

    async with Backend(script) as backend:
        with pytest.raises(UpstreamProtocolError):
            await fetch(pool, backend.url)


async def test_body_past_the_limit_is_a_protocol_error() -> None:
    pool = UpstreamPool(max_body_bytes=100_000)
    async with serving(app) as server:
        with pytest.raises(UpstreamProtocolError):
            await fetch(pool, f"http://127.0.0.1:{server.port}/chunks?3")
    await pool.close()


# Framing


async def test_chunked_response_is_decoded_and_streamed(pool: UpstreamPool) -> None:
    async with serving(app) as server:
        base = f"http://127.0.0.1:{server.port}"
        response = await pool.request("GET", base + "/chunks?4", headers=[], timeout=TIMEOUT)
        assert response.status == 200
        assert (b"transfer-encoding", b"chunked") in response.headers
        body = b"".join([chunk async for chunk in response])
        assert body == b"".join(b"%d:" % i + b"x" * 65536 for i in range(4))
        assert response.complete
        assert await fetch(pool, base + "/chunks?2") == (
            200,
            b"0:" + b"x" * 65536 + b"1:" + b"x" * 65536,
        )
        assert len(server.connections) == 1  # both went over one pooled connection


async def test_streamed_request_body_is_sent_chunked(pool: UpstreamPool) -> None:
    async def body() -> AsyncIterator[bytes]:
        for part in (b"stream", b"ed ", b"", b"body"):
            yield part

    async with serving(app) as server:
        url = f"http://127.0.0.1:{server.port}/echo"
        response = await pool.request("POST", url, headers=[], body=body(), timeout=TIMEOUT)
        assert await response.read() == b"streamed body"
        assert (b"x-framing", b"chunked") in response.headers


async def test_large_bodies_both_ways(pool: UpstreamPool) -> None:
    payload = bytes(range(256)) * (6 * 1024)  # 1.5 MiB

    async def halves() -> AsyncIterator[bytes]:
        yield payload[:700_000]
        yield payload[700_000:]

    async with serving(app, max_body_bytes=4 * 1024 * 1024) as server:
        url = f"http://127.0.0.1:{server.port}/echo"
        assert await fetch(pool, url, method="POST", body=payload) == (200, payload)
        length = [(b"content-length", b"%d" % len(payload))]
        response = await pool.request("PUT", url, headers=length, body=halves(), timeout=TIMEOUT)
        assert (b"x-framing", b"%d" % len(payload)) in response.headers  # sent raw
        assert b"".join([chunk async for chunk in response]) == payload


async def test_head_response_has_no_body(pool: UpstreamPool) -> None:
    async with serving(app) as server:
        url = f"http://127.0.0.1:{server.port}/echo"
        response = await pool.request("HEAD", url, headers=[], timeout=TIMEOUT)
        assert response.complete
        assert (b"content-length", b"0") in response.headers
        assert await response.read() == b""
        assert await fetch(pool, url, method="POST", body=b"after") == (200, b"after")
        assert len(server.connections) == 1


async def test_interim_responses_are_skipped(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n")
        writer.write(ok(b"final"))
        await backend.hold.wait()

    async with Backend(script) as backend:
        response = await pool.request("GET", backend.url, headers=[], timeout=TIMEOUT)
        assert response.status == 200
        assert response.headers == [(b"content-length", b"5")]
        assert await response.read() == b"final"


async def test_close_delimited_body(pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the ")
        await writer.drain()
        writer.write(b"end")

    async with Backend(script) as backend:
        assert await fetch(pool, backend.url) == (200, b"until the end")
        assert await fetch(pool, backend.url) == (200, b"until the end")
        assert backend.connections == 2


async def test_target_and_host(pool: UpstreamPool) -> None:
    async with serving(app) as server:
        url = f"http://127.0.0.1:{server.port}/base?q=1"
        response = await pool.request("GET", url, headers=[], timeout=TIMEOUT)
        assert await response.read() == b"/base?q=1"
        assert (b"x-host", b"127.0.0.1:%d" % server.port) in response.headers
        response = await pool.request(
            "GET", url, headers=[(b"host", b"fn.example")], target=b"/base/x?y=2", timeout=TIMEOUT
        )
        assert await response.read() == b"/base/x?y=2"
        assert (b"x-host", b"fn.example") in response.headers


async def test_https_upstream(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_bytes(CERT)
    (tmp_path / "key.pem").write_bytes(KEY)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(ok(b"secure %d" % n))

    pool = UpstreamPool(ssl_context=ssl.create_default_context(cadata=CERT.decode()))
    async with Backend(script, server_context) as backend:
        assert await fetch(pool, backend.url) == (200, b"secure 1")
        assert await fetch(pool, backend.url) == (200, b"secure 1")
    await pool.close()
    untrusting = UpstreamPool()  # the system's trust store does not know this certificate
    async with Backend(script, server_context) as backend:
        with pytest.raises(UpstreamConnectError):
            await fetch(untrusting, backend.url)
    await untrusting.close()
