"""A request body as the handler sees it: fed by the connection, read whole or streamed once."""

import asyncio
from collections import deque
from typing import Protocol

from eventgate.dataplane.flow_control import LOW_WATER
from eventgate.dataplane.types import BodyTooLarge


class BodySource(Protocol):
    """The connection a body arrives on."""

    def want_body(self, body: "RequestBody") -> None:
        """The consumer is ready for more: send `100 Continue` if the client waits for it, and
        resume reading if the connection paused."""


class RequestBody:
    """The chunks of one request body, buffered between the connection and the handler.

    The connection calls `feed`, `finish` and `fail`; the handler calls `read` or iterates.
    """

    __slots__ = (
        "_chunks",
        "_error",
        "_limit",
        "_loop",
        "_source",
        "_waiter",
        "buffered",
        "complete",
        "discarding",
        "read_all",
        "received",
    )

    def __init__(self, source: BodySource, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._loop = loop
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.buffered = 0
        self.received = 0
        self.complete = False
        self.read_all = False
        """The consumer wants the whole body (`read`): buffer it without pausing the socket."""
        self.discarding = False
        """The response went out before the body ended: drop what still arrives."""

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes) -> None:
        """Buffer one chunk from the connection; past the limit the body fails with BodyTooLarge."""
        self.received += len(data)
        if self.received > self._limit:
            self.fail(BodyTooLarge(f"request body is larger than {self._limit} bytes"))
        elif not self.discarding:
            self._chunks.append(data)
            self.buffered += len(data)
            self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, exc: Exception) -> None:
        """The body cannot complete; the consumer's next read raises `exc`."""
        if self._error is None and not self.complete:
            self._error = exc
            self._chunks.clear()
            self.buffered = 0
            self._wake()

    def discard(self) -> None:
        self.discarding = True
        self._chunks.clear()
        self.buffered = 0

    async def read(self) -> bytes:
        self.read_all = True
        while not self.complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        return data

    def __aiter__(self) -> "RequestBody":
        return self

    async def __anext__(self) -> bytes:
        chunks = self._chunks
        while not chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                raise StopAsyncIteration
            await self._wait()
        chunk = chunks.popleft()
        self.buffered -= len(chunk)
        if self.buffered <= LOW_WATER and not self.complete:
            self._source.want_body(self)
        return chunk

    async def _wait(self) -> None:
        self._source.want_body(self)
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class EmptyBody:
    """The body of a request that has none: shared, allocation-free."""

    __slots__ = ()

    async def read(self) -> bytes:
        return b""

    def __aiter__(self) -> "EmptyBody":
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


EMPTY_BODY = EmptyBody()


class BufferedBody:
    """A request body already read, readable again (whole or streamed)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self) -> bytes:
        return self._data

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        if self._data:
            yield self._data
