"""Writing HTTP/1.1 responses for the events port: heads, framing, streamed bodies.

A bytes body goes out in one write with its Content-Length. A streamed body is chunked, unless
the handler set Content-Length (then written raw and held to that length) or the client speaks
HTTP/1.0 (then the body ends with the connection); its head goes out with its first chunk.
HEAD, 204 and 304 answers carry no body bytes. The server's own headers (Date, Server,
Content-Length, Transfer-Encoding, Connection) replace the handler's.
"""

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator
from http import HTTPStatus
from typing import Protocol

from eventgate.dataplane.flow_control import FlowControl
from eventgate.dataplane.types import BodyIncomplete, BodyTooLarge, Headers, Request, Response
from eventgate.errors import error_body

log = logging.getLogger(__name__)

STATUS_LINES = {
    status: f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
    for status in range(200, 600)
    if status in HTTPStatus._value2member_map_
}
ERROR_MESSAGES = {
    400: "malformed HTTP request",
    408: "timed out reading the request",
    413: "request body too large",
    431: "request header fields too large",
    500: "internal server error",
}
MANAGED = frozenset(
    (b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"date")
)
"""Response headers the server writes itself; a handler's are dropped (or read for framing)."""
_JSON = [(b"Content-Type", b"application/json")]
_CACHED_LENGTHS = 4096
_LENGTHS = [b"Content-Length: %d\r\n" % size for size in range(_CACHED_LENGTHS)]
"""Content-Length lines for small bodies, built once."""
_KEEP_LENGTHS = [line + b"\r\n" for line in _LENGTHS]
"""The same, ending the head of a kept-alive HTTP/1.1 response."""
_KNOWN_LINES = 4096
"""Header lines `HeaderLines` remembers before it starts over."""
_LARGE_BODY = 64 * 1024
"""Bytes bodies from this size on are written beside the head instead of copied into it."""

_PLAIN_STATUS = {status: line for status, line in STATUS_LINES.items() if status not in (204, 304)}
"""Status lines of the statuses whose answers carry a body."""
BYTES = (bytes, bytearray, memoryview)
"""Body types written whole (anything else is an async iterable, streamed)."""


class InvalidResponse(ValueError):
    """A handler's response cannot be written (bad status, LF in a header, bad length)."""


class Unusual(Exception):
    """A header `HeaderLines` leaves to the general path (Connection)."""


class HeaderLines:
    """Response header lines, checked and serialized once per (name, value): handlers and
    upstreams repeat the same headers, so most responses only look them up."""

    __slots__ = ("known", "managed")

    def __init__(self, managed: frozenset[bytes]) -> None:
        self.managed = managed
        self.known: dict[tuple[bytes, bytes], bytes] = {}
        """`b"name: value\\r\\n"`, or `b""` for a header the server writes itself."""

    def lines(self, headers: Headers) -> list[bytes]:
        """The line of each header (see `line`)."""
        known = self.known
        lines = []
        for header in headers:
            line = known.get(header)
            lines.append(self.line(header) if line is None else line)
        return lines

    def line(self, header: tuple[bytes, bytes]) -> bytes:
        """The line for `header`, remembered. InvalidResponse for LF in it or a bad length;
        Unusual for Connection (it may end the connection)."""
        name, value = header
        if b"\n" in name or b"\n" in value:  # a bare LF may end a line (RFC 9112 2.2)
            raise InvalidResponse("a header name or value contains LF")
        lower = name.lower()
        if lower in self.managed:
            if lower == b"content-length" and not value.isdigit():
                raise InvalidResponse(f"content-length {value!r}")
            if lower == b"connection":
                raise Unusual
            line = b""
        else:
            line = b"%s: %s\r\n" % header
        if len(self.known) >= _KNOWN_LINES:  # values that never repeat (ids, dates): start over
            self.known.clear()
        self.known[header] = line
        return line


class ServerHeaders(Protocol):
    """What the writer reads from the server on each response."""

    default_headers: bytes
    """The `Date` (and `Server`) lines."""
    managed: frozenset[bytes]
    header_lines: HeaderLines
    draining: bool


def usual_head(server: ServerHeaders, response: Response) -> tuple[bytes, bytes, bytes] | None:
    """A response with a bytes body as `ResponseWriter.write` writes it to a kept-alive HTTP/1.1
    request other than a HEAD: its status line, the header lines and framing that follow the
    server's own, its body; None if it writes that response otherwise. InvalidResponse for a
    head that cannot be written."""
    line = _PLAIN_STATUS.get(response.status)
    body = response.body
    if line is None or not isinstance(body, bytes):
        return None
    try:
        lines = server.header_lines.lines(response.headers)
    except (Unusual, TypeError):
        return None
    size = len(body)
    framing = (
        _KEEP_LENGTHS[size] if size < _CACHED_LENGTHS else b"Content-Length: %d\r\n\r\n" % size
    )
    return line, b"".join((*lines, framing)), body


def length_line(size: int) -> bytes:
    """The Content-Length line for a body of `size` bytes."""
    return _LENGTHS[size] if size < _CACHED_LENGTHS else b"Content-Length: %d\r\n" % size


def status_line(status: int) -> bytes:
    return STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def error_response(status: int) -> Response:
    """The JSON error answer for one of the server's own error statuses."""
    return Response(status, _JSON, error_body(ERROR_MESSAGES[status]))


def failure_response(request: Request, exc: Exception, keep_alive: bool) -> tuple[Response, bool]:
    """The answer when the handler raised `exc`, and whether the connection can go on."""
    if isinstance(exc, BodyTooLarge):
        return error_response(413), False
    if isinstance(exc, BodyIncomplete):
        return error_response(400), False
    log.error("handler failed on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500), keep_alive


def _connection_tail(keep_alive: bool, http10: bool) -> bytes:
    """The Connection line (if one is needed) and the blank line that ends a head."""
    if not keep_alive:
        return b"Connection: close\r\n\r\n"
    return b"Connection: keep-alive\r\n\r\n" if http10 else b"\r\n"


async def discard(body: bytes | AsyncIterable[bytes]) -> None:
    """Release a streamed body that will not be sent (its upstream connection, its generator)."""
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing an unsent response body failed", exc_info=True)


class ResponseWriter:
    """Writes one connection's responses."""

    __slots__ = ("_flow", "_server", "_transport")

    def __init__(
        self, transport: asyncio.Transport, flow: FlowControl, server: ServerHeaders
    ) -> None:
        self._transport = transport
        self._flow = flow
        self._server = server

    def _head(self, response: Response, keep_alive: bool) -> tuple[list[bytes], bytes | None, bool]:
        """The status line, the server's and the handler's header lines (unjoined), the
        handler's Content-Length, and whether to keep alive."""
        status = response.status
        if not 200 <= status <= 599:
            raise InvalidResponse(f"status {status}")
        server = self._server
        managed = server.managed
        length = None
        parts = [STATUS_LINES.get(status) or status_line(status), server.default_headers]
        for name, value in response.headers:
            lower = name.lower()
            if lower in managed:
                if lower == b"content-length":
                    if not value.isdigit():
                        raise InvalidResponse(f"content-length {value!r}")
                    length = value
                elif lower == b"connection" and b"close" in value.lower():
                    keep_alive = False
                continue
            parts += (name, b": ", value, b"\r\n")
        return parts, length, keep_alive and not server.draining

    def write(self, request: Request, response: Response, keep_alive: bool) -> bool:
        """Write a response with a bytes body in one write; return whether to keep alive.
        InvalidResponse, with nothing written, if the handler's head is not valid."""
        line = _PLAIN_STATUS.get(response.status)
        if line is None or request.method == "HEAD" or request.http_version != "1.1":
            return self._write_other(request, response, keep_alive)
        # The usual answer, inline: a status with a body, HTTP/1.1, not HEAD.
        server = self._server
        try:
            lines = [*map(server.header_lines.known.get, response.headers)]
            if None in lines:  # a header seen for the first time (or lately forgotten)
                lines = server.header_lines.lines(response.headers)
        except (Unusual, TypeError):  # a Connection header, or one that is not bytes
            return self._write_other(request, response, keep_alive)
        body = response.body
        size = len(body)
        if keep_alive and not server.draining:
            framing = (
                _KEEP_LENGTHS[size]
                if size < _CACHED_LENGTHS
                else b"Content-Length: %d\r\n\r\n" % size
            )
        else:
            keep_alive = False
            framing = b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size
        if size < _LARGE_BODY:
            self._transport.write(b"".join((line, server.default_headers, *lines, framing, body)))
        else:
            self._transport.writelines(
                (b"".join((line, server.default_headers, *lines, framing)), body)
            )
        return keep_alive

    def _write_other(self, request: Request, response: Response, keep_alive: bool) -> bool:
        """`write` for HEAD, HTTP/1.0, bodiless and unusual statuses."""
        parts, length, keep_alive = self._head(response, keep_alive)
        status = response.status
        body = response.body
        assert isinstance(body, BYTES)
        if status == 204 or status == 304:
            framing, body = b"", b""
        elif request.method == "HEAD":
            if length is None or body:
                length = b"%d" % len(body)
            framing, body = b"Content-Length: " + length + b"\r\n", b""
        else:
            framing = length_line(len(body))
        framing += _connection_tail(keep_alive, request.http_version == "1.0")
        count = (len(parts) - 2) >> 2
        start = len(parts[0]) + len(parts[1])
        parts.append(framing)
        large = len(body) >= _LARGE_BODY
        if not large:
            parts.append(body)
        data = b"".join(parts)
        stop = len(data) - len(framing) - (0 if large else len(body))
        if data.count(b"\n", start, stop) != count:  # a bare LF may end a line (RFC 9112 2.2)
            raise InvalidResponse("a header name or value contains LF")
        if large:
            self._transport.writelines((data, body))
        else:
            self._transport.write(data)
        return keep_alive

    def write_error(self, status: int) -> None:
        """Answer one of the server's own errors and close the connection."""
        message = error_body(ERROR_MESSAGES[status])
        self._transport.write(
            b"".join(
                (
                    status_line(status),
                    self._server.default_headers,
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(message),
                    b"Connection: close\r\n\r\n",
                    message,
                )
            )
        )
        self._transport.close()

    async def write_stream(self, request: Request, response: Response, keep_alive: bool) -> bool:
        """Write a response with a streamed body; return whether to keep alive.
        InvalidResponse, with nothing written, if the handler's head is not valid."""
        parts, length, keep_alive = self._head(response, keep_alive)
        count = (len(parts) - 2) >> 2
        if b"".join(parts[2:]).count(b"\n") != count:
            raise InvalidResponse("a header name or value contains LF")
        status = response.status
        source = response.body
        assert not isinstance(source, BYTES)
        http10 = request.http_version == "1.0"
        if request.method == "HEAD" or status == 204 or status == 304:
            if status != 204 and status != 304:
                if length is not None:
                    parts.append(b"Content-Length: " + length + b"\r\n")
                elif not http10:
                    parts.append(b"Transfer-Encoding: chunked\r\n")
            parts.append(_connection_tail(keep_alive, http10))
            self._transport.write(b"".join(parts))
            await discard(source)
            return keep_alive
        iterator = source.__aiter__()
        try:
            chunk = await iterator.__anext__()
        except StopAsyncIteration:  # nothing to stream: the length is known now
            if self._transport.is_closing():
                return False
            keep_alive = keep_alive and length in (None, b"0")
            parts += (b"Content-Length: 0\r\n", _connection_tail(keep_alive, http10))
            self._transport.write(b"".join(parts))
            return keep_alive
        except Exception:
            log.exception("response body failed on %s %s", request.method, request.path)
            await discard(source)
            if self._transport.is_closing():
                return False
            return self.write(request, error_response(500), False)
        if length is not None:
            parts.append(b"Content-Length: " + length + b"\r\n")
        elif not http10:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:  # HTTP/1.0 without a length: the body ends when the connection does
            keep_alive = False
        parts.append(_connection_tail(keep_alive, http10))
        expected = -1 if length is None else int(length)
        complete = False
        try:
            complete = await self._stream(
                parts, chunk, iterator, length is None and not http10, expected
            )
        finally:
            if not complete:
                await discard(source)
        return keep_alive and complete

    async def _stream(
        self,
        parts: list[bytes],
        chunk: bytes,
        iterator: AsyncIterator[bytes],
        chunked: bool,
        expected: int,
    ) -> bool:
        """Write the head with the first chunk, then the rest as it comes, minding back-pressure.
        True if the body ended as framed: all of it, and exactly `expected` bytes if set."""
        transport, flow = self._transport, self._flow
        sent = 0
        while True:
            if transport.is_closing():  # the client left while the chunk was coming
                return False
            if 0 <= expected < sent + len(chunk):  # longer than the handler said: cut
                transport.write(b"".join((*parts, chunk[: expected - sent])))
                return False
            size = len(chunk)
            sent += size
            if not chunked:
                parts.append(chunk)
            elif chunk:
                parts += (b"%x\r\n" % size, chunk, b"\r\n")
            if size < _LARGE_BODY:
                transport.write(b"".join(parts))
            else:  # not copied into a joined buffer
                transport.writelines(parts)
            parts.clear()
            if flow.write_paused:
                await flow.drain()
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                if transport.is_closing():
                    return False
                if chunked:
                    transport.write(b"0\r\n\r\n")
                return expected < 0 or sent == expected
