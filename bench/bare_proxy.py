"""The `proxy` scenario's floor: the least a Python proxy on uvloop and httptools can do.

`python bench/bare_proxy.py PORT BACKEND_PORT` forwards every request to the backend as a
bodyless GET on pooled keep-alive connections and answers with the backend's body: no routing,
no header forwarding, no errors, no timeouts, no metrics. It is what DESIGN.md measured as "the
protocol layer itself"; eventgate's figure beside it says what the gateway's own work costs.
Not for use outside the benchmark.
"""

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """One pooled connection to the backend."""

    def __init__(self, pool: list["Upstream"]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.client: Client | None = None
        self.transport: asyncio.Transport
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        body = b"".join(self.body)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
        assert client is not None
        client.transport.write(head % len(body) + body)
        self.pool.append(self)


class Client(asyncio.Protocol):
    """One client connection."""

    def __init__(self, pool: list[Upstream], backend: int) -> None:
        self.pool = pool
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport
        self.url = b""
        self.connecting: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        request = b"GET " + self.url + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        if self.pool:
            upstream = self.pool.pop()
            upstream.client = self
            upstream.transport.write(request)
        else:
            task = asyncio.ensure_future(self._connect(request))
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)

    async def _connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(
            lambda: Upstream(self.pool), "127.0.0.1", self.backend
        )
        upstream.client = self
        upstream.transport.write(request)


async def serve(port: int, backend: int) -> None:
    pool: list[Upstream] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool, backend), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
