"""A tiny HTTP/1.1 function server for gateway tests: each test decides what it answers.

httptools-parsed, keep-alive, chunked request bodies; replies are sent with a Content-Length,
or chunked when the reply's headers ask for it.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import httptools
import orjson


@dataclass
class Received:
    """One request as the function saw it (header names lower-case)."""

    method: str = ""
    target: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> Any:
        return orjson.loads(self.body)


Reply = tuple[int, list[tuple[str, str]], bytes]
Answer = Callable[[Received], Awaitable[Reply]]


class LoopbackServer:
    """A server on a free loopback port that closes its connections when it closes; subclasses
    serve each connection in `_serve` (and add the writer to `_writers`)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()  # set at close: frees answers that wait forever
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        self.release.set()
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Backend(LoopbackServer):
    """A function on a free loopback port; `answer` decides each reply."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer
        self.received: list[Received] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        done: list[Received] = []
        current = Received()

        class Callbacks:
            def on_url(self, url: bytes) -> None:
                current.target += url.decode()

            def on_header(self, name: bytes, value: bytes) -> None:
                current.headers.append((name.decode().lower(), value.decode("latin-1")))

            def on_body(self, body: bytes) -> None:
                current.body += body

            def on_message_complete(self) -> None:
                nonlocal current
                current.method = parser.get_method().decode()
                done.append(current)
                current = Received()

        parser = httptools.HttpRequestParser(Callbacks())
        try:
            while data := await reader.read(65536):
                parser.feed_data(data)
                while done:
                    request = done.pop(0)
                    self.received.append(request)
                    writer.write(encode_reply(*await self.answer(request)))
                    await writer.drain()
        except (httptools.HttpParserError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def encode_reply(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 response; chunked when the headers ask for it, else with Content-Length."""
    chunked = ("transfer-encoding", "chunked") in [(k.lower(), v) for k, v in headers]
    head = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers)]
    if not chunked:
        head.append(f"content-length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body
    chunks = [body[i : i + 16384] for i in range(0, len(body), 16384)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + framed + b"0\r\n\r\n"
