"""Helpers for the data plane tests: a server on a free port, a raw HTTP/1.1 client that reads
responses byte for byte (framing checked here, not by httptools), and condition waits."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from eventgate.dataplane.server import DataPlaneServer
from eventgate.dataplane.types import Handler

WAIT = 5.0
"""A safety net for every wait in these tests; none should come near it."""


@contextlib.asynccontextmanager
async def serving(handler: Handler, **options: object) -> AsyncIterator[DataPlaneServer]:
    """A DataPlaneServer on 127.0.0.1, port 0, closed after the block."""
    settings: dict[str, object] = {
        "max_header_bytes": 8 * 1024,
        "max_body_bytes": 1024 * 1024,
        "read_timeout": 5.0,
        "idle_timeout": 5.0,
    }
    settings.update(options)
    server = DataPlaneServer(handler, **settings)  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close()


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until `condition()` holds, checking on every loop turn."""
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - the states polled here have no event
            await asyncio.sleep(0.001)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    chunk_sizes: list[int] = field(default_factory=list)
    """For a chunked body, the size of each chunk as framed on the wire."""

    def header(self, name: bytes) -> bytes | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]


class RawClient:
    """One TCP connection that sends bytes as given and parses responses by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> "RawClient":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, head_only: bool = False) -> RawResponse:
        """Read one response; `head_only` for an answer to HEAD."""
        async with asyncio.timeout(WAIT):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].split(b"\r\n")
            version, status, *_ = lines[0].split(b" ", 2)
            assert version == b"HTTP/1.1", lines[0]
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers.append((name.strip().lower(), value.strip()))
            response = RawResponse(int(status), headers)
            if head_only or response.status in (204, 304) or response.status < 200:
                return response
            length = response.all(b"content-length")
            assert len(length) <= 1, "duplicate content-length"
            if length:
                assert response.header(b"transfer-encoding") is None
                response.body = await self.reader.readexactly(int(length[0]))
            elif response.header(b"transfer-encoding") == b"chunked":
                response.body = await self._chunked(response.chunk_sizes)
            else:
                response.body = await self.reader.read()
            return response

    async def _chunked(self, sizes: list[int]) -> bytes:
        body = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                assert await self.reader.readexactly(2) == b"\r\n"  # no trailers
                return bytes(body)
            sizes.append(size)
            body += await self.reader.readexactly(size)
            assert await self.reader.readexactly(2) == b"\r\n"

    async def closed(self) -> bool:
        """Whether the server closes the connection with nothing more sent (bounded wait)."""
        async with asyncio.timeout(WAIT):
            return await self.reader.read() == b""

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(port)
    try:
        yield client
    finally:
        client.close()


def get(path: str = "/", *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    """A request head with no body."""
    lines = [f"{method} {path} HTTP/{version}", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, body: bytes, *extra: str) -> bytes:
    """A request with a Content-Length body."""
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*chunks: bytes) -> bytes:
    """Chunked framing for `chunks`, with the final zero chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
