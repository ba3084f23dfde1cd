"""The request and response a data plane handler sees: plain objects, no framework.

A handler is `async def handler(request: Request) -> Response`. The server owns the connection:
keep-alive, pipelining order, chunked framing, HEAD, limits and timeouts.
"""

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from eventgate.dataplane.connection import Connection

Headers = list[tuple[bytes, bytes]]


class Body(Protocol):
    """A request body that arrives from the client. Read it whole, or stream it once."""

    async def read(self) -> bytes:
        """The whole body. Raises BodyTooLarge past the server's limit (the server answers 413)."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; reading resumes as the consumer takes them."""
        ...


class BodyTooLarge(Exception):
    """The request body went past the configured limit."""


class BodyIncomplete(Exception):
    """The request body ended early: the client disconnected, stalled past the read timeout, or
    sent malformed chunked framing. A handler that lets it escape gets a 400 (if the client is
    still there to hear it)."""


@dataclass(slots=True)
class Request:
    """One parsed HTTP request. Header names are lower-case bytes, in arrival order."""

    method: str
    raw_path: bytes
    path: str
    query_string: bytes
    headers: Headers
    body: Body
    http_version: str = "1.1"
    client: tuple[str, int] | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Response:
    """What a handler answers. A bytes body gets Content-Length; an async iterable is streamed
    (chunked, unless the handler set Content-Length itself)."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes | AsyncIterable[bytes] = b""


Handler = Callable[[Request], Awaitable[Response]]


class Lane(Protocol):
    """A fast lane: offered each read that begins a request while none is in progress."""

    def take(self, conn: "Connection", data: bytes) -> bool:
        """Answer the request in `data` (True), or leave it to the general path (False)."""
        ...
