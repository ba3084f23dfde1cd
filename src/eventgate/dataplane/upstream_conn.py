"""One upstream HTTP/1.1 connection: an asyncio.Protocol that writes one request at a time and
parses the answer with `httptools.HttpResponseParser`, handing it over as an `UpstreamResponse`
(`upstream_response.py`).

A raw exchange (`send_raw`, the events port's fast lane) skips the parser: the bytes that come
back go to a `RawReceiver` as they are, which either takes a whole response from them or hands
the exchange over to the parser (`to_general`) and awaits it like any other (`response_head`).
"""

import asyncio
from collections import deque
from collections.abc import AsyncIterable
from typing import Protocol, cast

import httptools

from eventgate.dataplane.flow_control import HIGH_WATER, LOW_WATER, FlowControl
from eventgate.dataplane.types import Headers
from eventgate.dataplane.upstream_errors import (
    ClosedBeforeResponse,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from eventgate.dataplane.upstream_response import UpstreamResponse

BYTES = (bytes, bytearray, memoryview)
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    )
)
"""Headers about one connection, not the message (RFC 9110 7.6.1)."""
_FRAMING = (b"content-length", b"transfer-encoding")
_LISTED: dict[bytes, frozenset[bytes]] = {}
"""What each `Connection` value lists beyond HOP_BY_HOP (memoized: upstreams repeat it)."""
_NOTHING: frozenset[bytes] = frozenset()
_NOTED = HOP_BY_HOP | {b"content-length"}
WHOLE_BODY = 64 * 1024
"""A response body of a known length up to this is awaited with its head (one wake-up, not
two): callers read such bodies whole."""
_SMALL_BODY = 64 * 1024
"""Bytes bodies below this size are copied into the head's buffer: one write, one syscall."""


class ConnectionOwner(Protocol):
    """The pool a connection returns to."""

    def release(self, conn: "UpstreamConnection") -> None: ...

    def forget(self, conn: "UpstreamConnection") -> None: ...


class RawReceiver(Protocol):
    """Who a raw exchange reports to (`passthrough.py`)."""

    def raw_data(self, conn: "UpstreamConnection", received: bytes) -> None:
        """Every byte of the answer so far: end the exchange (`raw_done`), hand it over
        (`to_general`), or return to wait for more."""
        ...

    def raw_failed(self, conn: "UpstreamConnection", error: UpstreamError) -> None:
        """The exchange failed (timed out, or closed before any byte came back); the
        connection is closed."""
        ...

    def raw_general(self, conn: "UpstreamConnection") -> None:
        """The connection closed after some bytes: the exchange is the parser's now."""
        ...


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to one (scheme, host, port), one exchange at a time."""

    def __init__(self, owner: ConnectionOwner, key: tuple[str, str, int]) -> None:
        self.key = key
        self._owner = owner
        self.loop = asyncio.get_running_loop()
        """The loop it runs on (the pool reads its clock here: `get_running_loop` costs a
        getpid() system call each time)."""
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._flow: FlowControl
        self.alive = False
        self.idle_since = 0.0
        self.deadline = 0.0
        """When the current wait times out (`loop.time()` clock)."""
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # The current exchange.
        self._active = False
        self._head_only = False
        self._fresh_parser = False
        self._got_bytes = False
        self._interim = False
        self._spoilt = False
        """The request was not sent whole: the connection cannot carry another."""
        self.status = 0
        self.headers: Headers = []
        self.listed: frozenset[bytes] = frozenset()
        self.length = -1
        """The response's Content-Length, -1 without one."""
        self._wake_at_end = False
        self.headers_done = False
        self.done = False
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.read_all = False
        # The current raw exchange, if any.
        self._receiver: RawReceiver | None = None
        self._received = b""

    # Driving an exchange (the pool and the response)

    async def exchange(
        self,
        head: bytes,
        body: bytes | AsyncIterable[bytes],
        chunked: bool,
        head_only: bool,
        deadline: float,
        gap: float,
        max_body: int,
    ) -> "UpstreamResponse":
        """Send one request on this (idle or new) connection; return once its head is in."""
        self._begin(head_only, deadline)
        transport = self._transport
        assert transport is not None
        try:
            if transport.is_closing():  # closed by the far side, its end not processed yet
                raise ClosedBeforeResponse("the upstream closed the connection")
            if isinstance(body, BYTES):
                if len(body) < _SMALL_BODY:
                    transport.write(head + body if body else head)
                else:
                    transport.writelines((head, body))
            else:
                await self._send_stream(head, body, chunked, gap)
                self.deadline = self.loop.time() + gap
        except BaseException:
            self.close()
            raise
        return await self.response_head(gap, max_body)

    def _begin(self, head_only: bool, deadline: float) -> None:
        """Set up for the next exchange's answer."""
        if self._fresh_parser:  # a HEAD answer may have left the parser expecting a body
            self._parser = httptools.HttpResponseParser(self)
            self._fresh_parser = False
        # Only a connection whose last exchange ended cleanly is reused: `error`, `_spoilt`,
        # `_interim` and `keep_alive` are as a new connection has them.
        self._active = True
        self._head_only = head_only
        self._got_bytes = self.headers_done = self.done = self.read_all = False
        self.headers = []
        self.listed = _NOTHING
        self.length = -1
        self.deadline = deadline

    async def response_head(self, gap: float, max_body: int) -> "UpstreamResponse":
        """The answer to the request sent, once its head is in (by `deadline`)."""
        try:
            while not self.headers_done:
                if self.error is not None:
                    raise self.error
                await self._waiting()
        except BaseException:
            self.close()
            raise
        return UpstreamResponse(self, gap, max_body)

    def send_raw(
        self, head: bytes, head_only: bool, receiver: RawReceiver, deadline: float
    ) -> bool:
        """Send a whole request (its head and any body, as bytes) on this idle connection
        (`head_only`: a HEAD); what comes back goes to `receiver`. False, with nothing sent, if
        the far side has closed it already."""
        transport = self._transport
        if transport is None or transport.is_closing():
            self.close()
            return False
        self._active = True
        self._head_only = head_only
        self._receiver = receiver
        self.deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer)
        transport.write(head)
        return True

    def raw_done(self) -> None:
        """The receiver took the whole answer: back to the pool (or closed, if it closed)."""
        self._receiver = None
        self._received = b""
        self._active = False
        if self.alive:
            self._owner.release(self)
        else:
            self.close()

    def to_general(self) -> None:
        """Parse the raw exchange's bytes, and the rest, as `exchange` does; the caller then
        awaits `response_head`."""
        received = self._received
        self._receiver = None
        self._received = b""
        self._begin(self._head_only, self.deadline)
        if received:
            self.data_received(received)

    async def _send_stream(
        self, head: bytes, body: AsyncIterable[bytes], chunked: bool, gap: float
    ) -> None:
        """Send the head, then the body as it comes, waiting whenever the socket is full; stop
        early if the upstream answers (or leaves) first. An error raised by the body itself
        (the client's upload failing) propagates as it is."""
        transport = self._transport
        assert transport is not None
        transport.write(head)
        self._spoilt = True  # until the whole body is out
        async for chunk in body:
            if self.headers_done or transport.is_closing():
                break
            if chunk:
                transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                await self._drain(gap)
        else:
            if not transport.is_closing():
                if chunked:
                    transport.write(b"0\r\n\r\n")
                self._spoilt = False
        await self._drain(gap)

    async def _drain(self, gap: float) -> None:
        """Wait while the transport's write buffer is full (and no answer came early); raise if
        the connection failed."""
        while self._flow.write_paused and self.alive and not self.headers_done:
            self.deadline = self.loop.time() + gap
            await self._waiting()
        if not self.alive and not self.headers_done:
            raise self.error or ClosedBeforeResponse("the upstream closed the connection")

    async def wait_gap(self, seconds: float) -> None:
        """Wait up to `seconds` for more of the response; raise the connection's error."""
        if self.error is not None:
            raise self.error
        self.deadline = self.loop.time() + seconds
        await self._waiting()

    def _waiting(self) -> asyncio.Future[None]:
        """A future the connection resolves on progress, failed with UpstreamTimeout at
        `deadline`. One timer per connection, re-armed lazily rather than per wait."""
        waiter = self._waiter = self.loop.create_future()
        timer = self._timer
        if timer is None or timer.when() > self.deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(self.deadline, self._on_timer)
        return waiter

    def take(self) -> bytes:
        """One buffered body chunk (the caller checked there is one)."""
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self._flow.read_paused and self.buffered <= LOW_WATER:
            self._flow.resume_reading()
        return chunk

    def want_all(self) -> None:
        """The reader wants the whole body: buffer it without pausing the socket."""
        self.read_all = True
        self._flow.resume_reading()

    def finish(self) -> None:
        """The exchange is over and its body consumed: back to the pool, or closed."""
        self._active = False
        if self.keep_alive and self.alive and self.done and not self._spoilt:
            self._flow.resume_reading()  # a large answer read whole may have paused it
            self._owner.release(self)
        else:
            self.close()

    def close(self) -> None:
        self._active = False
        self.alive = False
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        self._flow = FlowControl(transport)
        self.alive = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._owner.forget(self)
        receiver = self._receiver
        if receiver is not None:
            if not self._received:
                self._receiver = None
                receiver.raw_failed(self, ClosedBeforeResponse("the upstream closed"))
                return
            self.to_general()  # the end may be what ends the body: the parser decides
            receiver.raw_general(self)
        if self._active and not self.done and self.error is None:
            if self.headers_done and self._ends_at_eof():
                self.done = True
            elif not self._got_bytes:
                self.error = ClosedBeforeResponse("the upstream closed the connection")
            else:
                self.error = UpstreamProtocolError("the upstream closed mid-response")
        self._wake()

    def _ends_at_eof(self) -> bool:
        """Whether the response's body is delimited by the end of the connection."""
        if self.status == 204 or self.status == 304:
            return False
        return all(name not in _FRAMING for name, _ in self.headers)

    def eof_received(self) -> bool | None:
        self.alive = False
        return None  # close; connection_lost decides what the end meant

    def pause_writing(self) -> None:
        self._flow.pause_writing()

    def resume_writing(self) -> None:
        self._flow.resume_writing()
        self._wake()

    def data_received(self, data: bytes) -> None:
        receiver = self._receiver
        if receiver is not None:
            received = self._received = self._received + data if self._received else data
            receiver.raw_data(self, received)
            return
        if not self._active or self.done:  # bytes nobody asked for: this connection is spoilt
            self.close()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.done:
                self.error = UpstreamProtocolError(f"malformed upstream response: {exc}")
                self._wake()
            self.close()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _NOTED and self._noted(name, value):
            return
        self.headers.append((name, value))

    def _noted(self, name: bytes, value: bytes) -> bool:
        """Note a header about the framing or the connection; True to keep it out of
        `headers` (the connection's own)."""
        if name == b"content-length":
            self.length = int(value)  # the parser checked it is digits
            return False
        if name == b"transfer-encoding":
            return False
        if name == b"connection":
            self._connection_header(value)
        return True

    def _connection_header(self, value: bytes) -> None:
        listed = _LISTED.get(value)
        if listed is None:
            if len(_LISTED) >= 256:
                _LISTED.clear()
            tokens = frozenset(token.strip().lower() for token in value.split(b","))
            listed = _LISTED[value] = tokens - HOP_BY_HOP
        if listed:
            self.listed = self.listed | listed

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): skip it
            self._interim = True
            self.headers = []
            self.listed = _NOTHING
            return
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        self.headers_done = True
        if self._head_only:
            self.done = True
            self._fresh_parser = True
        elif 0 < self.length <= WHOLE_BODY:  # wake the caller once the body is in too
            self._wake_at_end = True
            return
        self._wake_at_end = False
        self._wake()

    def on_body(self, data: bytes) -> None:
        if self.done:
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.read_all:
            self._flow.pause_reading()
        if self._waiter is not None and not self._wake_at_end:
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif not self.done:
            self.done = True
            if self._waiter is not None:
                self._wake()

    # Waking

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        receiver = self._receiver
        if receiver is not None:
            if self.loop.time() < self.deadline:
                self._timer = self.loop.call_at(self.deadline, self._on_timer)
                return
            self._receiver = None
            self.close()
            receiver.raw_failed(self, UpstreamTimeout("the upstream did not answer in time"))
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self.loop.time() >= self.deadline:
            self._waiter = None
            waiter.set_exception(UpstreamTimeout("the upstream did not answer in time"))
        else:
            self._timer = self.loop.call_at(self.deadline, self._on_timer)
