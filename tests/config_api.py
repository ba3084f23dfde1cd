"""Helpers for config API tests: the app served by uvicorn on a real socket, raw requests."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Serve `app` on a free loopback port for the block; yield a client for it.

    The socket listens before uvicorn starts, so requests simply queue until it accepts them:
    no need to wait for startup. It is made with `IPPROTO_TCP` because asyncio sets TCP_NODELAY
    only on such sockets (without it, every response stalls ~40 ms on delayed ACKs).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def raw_request(client: httpx.AsyncClient, method: str, target: str) -> tuple[int, bytes]:
    """Send `method target` byte for byte (no URL normalization) and return status and body."""
    url = client.base_url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: {url.host}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        async with asyncio.timeout(10):
            response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """Check an error response: its status, the `{"errors":[{"message"}]}` shape, and that the
    message contains every fragment. Returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["errors"] and len(body["errors"]) == 1, body
    message = body["errors"][0]["message"]
    assert isinstance(message, str)
    for fragment in fragments:
        assert fragment in message
    return message
