"""One client connection on the events port: an asyncio.Protocol driving httptools.

It parses requests and answers them one at a time, in order (pipelined requests wait in a
queue); streams request bodies with back-pressure; answers `Expect: 100-continue` when the
handler first reads; enforces the header and body limits (431/413), malformed input (400), the
read timeout (408) and the idle timeout (close). Every error path ends in a response or a close.

A read that begins a request while none is in progress is first offered to the server's fast
lane (`passthrough.py`), which takes one whole plain request and answers it without a Task
(`lane_answer`, `lane_response`) or hands it back to the general path (`lane_general`), or
leaves the read to the parser; requests pipelined behind one it took wait in the queue.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

import httptools

from eventgate.dataplane.body import EMPTY_BODY, RequestBody
from eventgate.dataplane.flow_control import HIGH_WATER, LOW_WATER, FlowControl
from eventgate.dataplane.response_writer import (
    BYTES,
    ERROR_MESSAGES,
    InvalidResponse,
    ResponseWriter,
    discard,
    error_response,
    failure_response,
)
from eventgate.dataplane.types import BodyIncomplete, BodyTooLarge, Headers, Request, Response

if TYPE_CHECKING:
    from eventgate.dataplane.server import DataPlaneServer

log = logging.getLogger(__name__)

_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SPECIAL = frozenset(
    (b"content-length", b"transfer-encoding", b"expect", b"connection", b"upgrade")
)
"""Headers that change how a request is read or kept alive (or tell its HTTP version apart)."""


class Connection(asyncio.Protocol):
    """One client connection: parse, dispatch in order, write, time out."""

    def __init__(self, server: "DataPlaneServer") -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._transport: asyncio.Transport
        self._flow: FlowControl
        self._writer: ResponseWriter
        self._client: tuple[str, int] | None = None
        self.forwarded_for = b""
        """The client's `X-Forwarded-For` line (after its CRLF), for the fast lane's heads."""
        # The request being parsed.
        self._in_head = False
        self._url = b""
        self._headers: Headers = []
        self._head_raw = 0
        """Bytes read since the head began (0 for the read it began in, unless it began that
        read): bounds a head whose lines never end."""
        self._head_reads = 0
        """Bytes of every read the head spans: past the limit, the head is measured exactly."""
        self._read_size = 0
        self._data_size = 0
        self._special: list[tuple[bytes, bytes]] | None = None
        """The head's headers that change how it is read (see `_SPECIAL`), if it has any."""
        self._body: RequestBody | None = None
        """The body the parser is feeding, until its message completes."""
        # The requests being answered.
        self._queue: deque[tuple[Request, RequestBody | None, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._lane_busy = False
        """The fast lane is answering a request (no Task)."""
        self._active_body: RequestBody | None = None
        self._started = False
        self._continue_pending: RequestBody | None = None
        self._stopped = False
        """No more requests on this connection: answer those parsed, then close."""
        self._error_status = 0
        """An error to answer once the requests before it are answered."""
        self._last_activity = 0.0
        self._tick = min(server.read_timeout, server.idle_timeout)
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        self._flow = FlowControl(transport)
        self._writer = ResponseWriter(transport, self._flow, self._server)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._client = (peer[0], peer[1])
            self.forwarded_for = b"\r\nx-forwarded-for: " + peer[0].encode()
        self._server.connections.add(self)
        self._last_activity = self._loop.time()
        self._timer = self._loop.call_at(self._last_activity + self._tick, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._body is not None:
            self._body.fail(BodyIncomplete("the client disconnected"))
            self._body = None
        if self._queue:
            self._server.in_flight_count -= len(self._queue)
            self._queue.clear()
            if not self._server.in_flight_count:
                self._server.notify_drained()
        self._flow.resume_writing()

    def pause_writing(self) -> None:
        self._flow.pause_writing()

    def resume_writing(self) -> None:
        self._flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        if self._stopped:
            return
        if (
            self._task is None
            and not self._lane_busy
            and not self._in_head
            and self._body is None
            and self._server.lane is not None
            and self._server.lane.take(self, data)
        ):
            return
        size = self._data_size = len(data)
        if self._in_head:
            self._head_raw += size
            self._head_reads += size
            self._read_size = 0
        else:  # between messages, a head beginning in this read begins with it
            self._read_size = size if self._body is None else 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop()  # upgrades are not offered: answer the request, then close
        except httptools.HttpParserError:
            if not self._stopped:
                self._fail(self._error_status or 400)
            return
        if self._in_head and self._head_raw > self._server.max_header_bytes:
            self._fail(431)  # a head still unfinished past the limit

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        if self._in_head:  # the target came in pieces
            self._url += url
            return
        # A message begins (a callback of its own would cost more than this check).
        self._in_head = True
        self._url = url
        self._headers = []
        self._head_reads = self._data_size
        self._head_raw = self._read_size  # 0 if it began after another message in this read
        self._read_size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        header = (name, value)
        self._headers.append(header)
        if name in _SPECIAL:
            if self._special is None:
                self._special = [header]
            else:
                self._special.append(header)

    def on_headers_complete(self) -> None:
        self._in_head = False
        server = self._server
        parser = self._parser
        if (
            self._head_reads > server.max_header_bytes
            and self._head_size() > server.max_header_bytes
        ):
            self._reject(431)
        keep_alive = parser.should_keep_alive()
        body = None
        if self._special is None:
            # No Connection header: HTTP/1.1 keeps the connection, HTTP/1.0 does not (and
            # asking the parser for the version costs more than the rest of this callback).
            version = "1.1" if keep_alive else "1.0"
        else:
            version, body = self._special_head(keep_alive)
            keep_alive = keep_alive and not parser.should_upgrade()
        url = self._url
        if url[0] == 47:  # b"/": origin-form
            raw_path, _, query = url.partition(b"?")
        else:  # absolute-form or `*`
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        method = parser.get_method()
        request = Request(
            _METHODS.get(method) or method.decode("ascii"),
            raw_path,
            path,
            query,
            self._headers,
            EMPTY_BODY if body is None else body,
            version,
            self._client,
        )
        server.in_flight_count += 1
        if self._task is None and not self._lane_busy:
            self._start(request, body, keep_alive)
        else:
            self._queue.append((request, body, keep_alive))
            self._flow.pause_reading()

    def _special_head(self, keep_alive: bool) -> tuple[str, RequestBody | None]:
        """The HTTP version and the body of a head with framing, Expect or Connection headers;
        413 (by raising from the parser callback) past the body limit."""
        special, self._special = self._special, None
        server = self._server
        has_body = expect = connection = False
        for name, value in special or ():
            if name == b"content-length":
                length = int(value)
                if length > server.max_body_bytes:
                    self._reject(413)
                has_body = length > 0
            elif name == b"transfer-encoding":
                has_body = True
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
            elif name == b"connection":
                connection = True
        version = "1.1" if keep_alive else "1.0"  # see on_headers_complete
        if connection:
            version = self._parser.get_http_version()
        body = RequestBody(self, server.max_body_bytes, self._loop) if has_body else None
        self._body = body
        if expect and body is not None and version == "1.1":
            self._continue_pending = body
        return version, body

    def on_body(self, data: bytes) -> None:
        body = self._body
        assert body is not None
        body.feed(data)
        if body.failed:  # too large: stop reading; its handler answers 413 (or already did)
            self._body = None
            self._stop()
            if body.discarding:
                self._transport.close()
            raise BodyTooLarge
        if body.buffered > HIGH_WATER and not body.read_all:
            self._flow.pause_reading()

    def on_message_complete(self) -> None:
        body = self._body
        if body is not None:
            self._body = None
            body.finish()
            if self._continue_pending is body:
                self._continue_pending = None

    # BodySource

    def want_body(self, body: RequestBody) -> None:
        if body is not self._body:
            return
        if self._continue_pending is body:
            self._continue_pending = None
            self._transport.write(_CONTINUE)
            self._last_activity = self._loop.time()
        self._resume_reading()

    # Answering

    def _start(
        self,
        request: Request,
        body: RequestBody | None,
        keep_alive: bool,
        answer: Awaitable[Response] | None = None,
    ) -> None:
        self._active_body = body
        self._started = False
        self._task = self._loop.create_task(self._run(request, body, keep_alive, answer))

    async def _run(
        self,
        request: Request,
        body: RequestBody | None,
        keep_alive: bool,
        answer: Awaitable[Response] | None,
    ) -> None:
        try:
            try:
                if answer is None:
                    answer = self._server.handler(request)
                response = await answer
            except Exception as exc:
                response, keep_alive = failure_response(request, exc, keep_alive)
            if self._transport.is_closing():
                await discard(response.body)
            elif isinstance(response.body, BYTES):
                self._started = True
                try:
                    keep_alive = self._writer.write(request, response, keep_alive)
                except InvalidResponse as exc:  # raised before anything was written
                    keep_alive = self._invalid(request, exc, keep_alive)
            else:
                self._started = True
                try:
                    keep_alive = await self._writer.write_stream(request, response, keep_alive)
                except InvalidResponse as exc:
                    await discard(response.body)
                    keep_alive = self._invalid(request, exc, keep_alive)
        except Exception:
            log.exception("writing the response to %s %s failed", request.method, request.path)
            keep_alive = False
        finally:
            self._response_done(body, keep_alive)

    def _invalid(self, request: Request, exc: InvalidResponse, keep_alive: bool) -> bool:
        """The handler's response could not be written: answer 500 instead."""
        log.error("handler answered %s %s badly: %s", request.method, request.path, exc)
        if self._transport.is_closing():
            return False
        return self._writer.write(request, error_response(500), keep_alive)

    # The fast lane

    def lane_begin(self) -> None:
        """The fast lane took the request just read: it answers with `lane_answer` or
        `lane_general`."""
        self._lane_busy = True
        self._server.in_flight_count += 1

    def lane_answer(self, response: bytes, keep_alive: bool) -> None:
        """Write the fast lane's whole answer (head and body), then go on with the next."""
        self._lane_busy = False
        transport = self._transport
        if not transport.is_closing():
            transport.write(response)
        self._response_done(None, keep_alive)

    def lane_response(self, request: Request, response: Response) -> None:
        """Write a response the fast lane made (a bytes body) as the general path would."""
        self._lane_busy = False
        keep_alive = False
        if not self._transport.is_closing():
            try:
                keep_alive = self._writer.write(request, response, True)
            except InvalidResponse as exc:  # raised before anything was written
                keep_alive = self._invalid(request, exc, True)
        self._response_done(None, keep_alive)

    def lane_general(
        self, request: Request, answer: Coroutine[object, object, Response] | None
    ) -> None:
        """Answer the fast lane's request on the general path: `answer`, or the handler's."""
        self._lane_busy = False
        self._start(request, None, True, answer)

    @property
    def client(self) -> tuple[str, int] | None:
        """The client's address and port."""
        return self._client

    def _response_done(self, body: RequestBody | None, keep_alive: bool) -> None:
        server = self._server
        server.in_flight_count -= 1
        if not server.in_flight_count and server.drain_waiters:
            server.notify_drained()
        self._task = None
        self._active_body = None
        transport = self._transport
        if transport.is_closing():
            return
        self._last_activity = self._loop.time()
        if body is not None and not body.complete:
            if not keep_alive or body.failed or self._continue_pending is body:
                transport.close()  # the rest of the body cannot be skipped: give up
                return
            body.discard()
        if not keep_alive:
            transport.close()
        elif self._queue:
            self._start(*self._queue.popleft())
            if self._flow.read_paused:
                self._resume_reading()
        elif self._stopped:
            if self._error_status:
                self._write_error(self._error_status)
            else:
                transport.close()
        elif self._flow.read_paused:
            self._resume_reading()

    # Errors, flow and time

    def _head_size(self) -> int:
        """The head's size as parsed (only worth computing when its reads were large)."""
        return len(self._url) + sum(len(name) + len(value) + 4 for name, value in self._headers)

    def _reject(self, status: int) -> None:
        """Stop the parser from a callback; `data_received` answers `status`."""
        self._error_status = status
        raise ValueError(ERROR_MESSAGES[status])

    def _stop(self) -> None:
        self._stopped = True
        self._flow.pause_reading()

    def _fail(self, status: int) -> None:
        """The request being parsed is bad: answer `status` in its turn, then close."""
        self._stop()
        body = self._body
        if body is not None:  # its request is already dispatched: its handler hears of it
            self._body = None
            body.fail(BodyIncomplete(ERROR_MESSAGES[status]))
            if body is self._active_body and not self._started:
                self._write_error(status)
        elif self._task is None and not self._lane_busy:
            self._write_error(status)
        else:
            self._error_status = status

    def _write_error(self, status: int) -> None:
        self._started = True
        self._writer.write_error(status)

    def _resume_reading(self) -> None:
        if self._flow.read_paused and not self._queue and not self._stopped:
            body = self._body
            if body is None or body.read_all or body.buffered <= LOW_WATER:
                self._last_activity = self._loop.time()
                self._flow.resume_reading()

    def _on_timer(self) -> None:
        self._timer = None
        if self._transport.is_closing():
            return
        server = self._server
        body = self._body
        status = 0
        if self._task is None and not self._lane_busy and not self._queue:
            if self._in_head:
                timeout, status = server.read_timeout, 408
            elif body is not None:  # the rest of a body whose answer went out already
                timeout = server.read_timeout
            else:
                timeout = server.idle_timeout
        elif (
            body is not None
            and body is self._active_body
            and not self._flow.read_paused
            and self._continue_pending is not body
        ):
            timeout = server.read_timeout
            status = 0 if self._started else 408
        else:  # busy answering: check again later
            timeout = float("inf")
        now = self._loop.time()
        deadline = self._last_activity + timeout
        if now < deadline:
            self._timer = self._loop.call_at(min(deadline, now + self._tick), self._on_timer)
            return
        if body is not None:
            self._body = None
            body.fail(BodyIncomplete(ERROR_MESSAGES[408]))
        if status:
            self._write_error(status)
        else:
            self._transport.close()

    # Shutdown

    def close_if_idle(self) -> None:
        if self._task is None and not self._lane_busy and not self._in_head and self._body is None:
            self._transport.close()

    def abort(self) -> asyncio.Task[None] | None:
        """Drop the connection now; return its handler's task for the caller to cancel."""
        self._transport.abort()
        return self._task
