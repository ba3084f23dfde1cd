"""The pooled HTTP/1.1 client the events port calls functions with.

Keep-alive connections are pooled per (scheme, host, port); https uses the default SSL context.
A request that meets a pooled connection the far side closed while idle is retried once on a
fresh connection, when that is safe: its body was bytes (not a stream already consumed) and no
byte of a response had come back. Timeouts: `timeout` bounds connecting, sending and the
response head for a bytes body (per attempt); for a streamed body the head's wait starts once
the body is sent, and each stall (a write that cannot drain, a gap in the response body) gets
`timeout`. A response body with a Content-Length up to `WHOLE_BODY` comes with its head (within
the same `timeout`): `request` returns once it is all in.
"""

import asyncio
import ssl
from collections.abc import AsyncIterable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from eventgate.dataplane.types import Headers
from eventgate.dataplane.upstream_conn import BYTES, HOP_BY_HOP, WHOLE_BODY, UpstreamConnection
from eventgate.dataplane.upstream_errors import (
    ClosedBeforeResponse,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from eventgate.dataplane.upstream_response import UpstreamResponse

__all__ = [
    "HOP_BY_HOP",
    "WHOLE_BODY",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeout",
]

_MAX_TARGETS = 1024
"""Parsed URLs kept; past that the oldest is forgotten."""
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
"""Methods that carry a Content-Length even when their body is empty."""
_METHOD_BYTES = {
    m: m.encode() for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
}
_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """A parsed upstream URL."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    host_header: bytes
    request_target: bytes
    host_line: bytes


def _parse_target(url: str) -> UpstreamTarget:
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise UpstreamConnectError(f"invalid upstream URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise UpstreamConnectError(f"invalid upstream URL {url!r}: need http(s)://host")
    tls = parts.scheme == "https"
    port = port or (443 if tls else 80)
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PATH_SAFE)
    host_header = parts.netloc.rpartition("@")[2].encode("idna")
    return UpstreamTarget(
        key=(parts.scheme, host, port),
        host=host,
        port=port,
        tls=tls,
        host_header=host_header,
        request_target=target.encode("ascii"),
        host_line=b"host: " + host_header + b"\r\n",
    )


class UpstreamPool:
    """Pooled keep-alive HTTP/1.1 connections to upstreams."""

    def __init__(
        self,
        *,
        max_idle_per_host: int = 64,
        connect_timeout: float = 5.0,
        max_body_bytes: int = 10 * 1024 * 1024,
        idle_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_idle = max_idle_per_host
        self._connect_timeout = connect_timeout
        self.max_body_bytes = max_body_bytes
        self._idle_timeout = idle_timeout
        self._ssl_context = ssl_context
        self._targets: dict[str, UpstreamTarget] = {}
        self._idle: dict[tuple[str, str, int], list[UpstreamConnection]] = {}
        self._conns: set[UpstreamConnection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers,
        body: bytes | AsyncIterable[bytes] = b"",
        target: bytes | None = None,
        timeout: float,  # noqa: ASYNC109 - a deadline the pool keeps itself, cheaper per call
    ) -> UpstreamResponse:
        """Send one request and return once the response head has arrived.

        `target` replaces the URL's path and query as the request-target. Host is set from the
        URL, and Content-Length (bytes body) or Transfer-Encoding: chunked (streamed body)
        unless the headers carry them (a streamed body with a Content-Length is sent raw).
        """
        if self._closed:
            raise UpstreamConnectError("the upstream pool is closed")
        upstream = self._targets.get(url) or self._remember(url)
        size = len(body) if isinstance(body, BYTES) else None
        head, chunked = _request_head(method, upstream, target, headers, size)
        head_only = method == "HEAD"
        conn = self.idle_connection(upstream.key)
        while True:
            reused = conn is not None
            if conn is None:
                conn, deadline = await self._connect(upstream, timeout)
            else:
                deadline = conn.loop.time() + timeout
            try:
                return await conn.exchange(
                    head, body, chunked, head_only, deadline, timeout, self.max_body_bytes
                )
            except ClosedBeforeResponse:
                if not reused or size is None:  # a streamed body may be half sent: no replay
                    raise
                conn = None  # once more, on a fresh connection

    def target(self, url: str) -> UpstreamTarget:
        """What the pool knows of `url` (UpstreamConnectError if it is not http(s)://host)."""
        return self._targets.get(url) or self._remember(url)

    async def close(self) -> None:
        """Close every connection, idle or busy; later requests fail."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._conns):
            conn.close()
        self._idle.clear()

    # ConnectionOwner

    def release(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        if self._closed or len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self._idle_timeout / 2, self._sweep)

    def forget(self, conn: UpstreamConnection) -> None:
        self._conns.discard(conn)

    # Internals

    def _remember(self, url: str) -> UpstreamTarget:
        upstream = _parse_target(url)
        if len(self._targets) >= _MAX_TARGETS:
            del self._targets[next(iter(self._targets))]
        self._targets[url] = upstream
        return upstream

    def idle_connection(self, key: tuple[str, str, int]) -> UpstreamConnection | None:
        """The most recently used idle connection to `key` (a target's) that is still open,
        taken from the pool, if any (none once the pool is closed)."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.alive and conn.loop.time() - conn.idle_since < self._idle_timeout:
                return conn
            conn.close()
        return None

    async def _connect(
        self, upstream: UpstreamTarget, budget: float
    ) -> tuple[UpstreamConnection, float]:
        """A new connection, and the deadline (`budget` from now) for the exchange on it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        context = None
        if upstream.tls:
            context = self._ssl_context
            if context is None:
                context = self._ssl_context = ssl.create_default_context()
        try:
            async with asyncio.timeout(min(self._connect_timeout, budget)):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, upstream.key),
                    upstream.host,
                    upstream.port,
                    ssl=context,
                    server_hostname=upstream.host if context is not None else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"connecting to {upstream.host}:{upstream.port} timed out"
            ) from None
        except OSError as exc:
            raise UpstreamConnectError(
                f"cannot connect to {upstream.host}:{upstream.port}: {exc}"
            ) from exc
        self._conns.add(conn)
        return conn, deadline

    def _sweep(self) -> None:
        """Close connections idle longer than `idle_timeout`; run while any are idle."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        expired = loop.time() - self._idle_timeout
        for key, idle in list(self._idle.items()):
            stale = 0  # oldest first: the list is in the order connections went idle
            while stale < len(idle) and idle[stale].idle_since <= expired:
                idle[stale].close()
                stale += 1
            del idle[:stale]
            if not idle:
                del self._idle[key]
        if self._idle:
            self._sweeper = loop.call_later(self._idle_timeout / 2, self._sweep)


class _Special(Exception):
    """A request header the general head builder handles (Host, framing)."""


_FRAMED = frozenset((b"host", b"content-length", b"transfer-encoding"))
_LINES: dict[tuple[bytes, bytes], bytes] = {}
"""Request header lines, checked and serialized once per (name, value)."""
_MAX_LINES = 4096


def _line(header: tuple[bytes, bytes]) -> bytes:
    """`name: value\\r\\n`, remembered. ValueError if it would smuggle in a line of its own."""
    name, value = header
    if b"\n" in name or b"\n" in value:  # a bare LF may end a line for the upstream
        raise ValueError("a request header name or value contains LF")
    if name.lower() in _FRAMED:
        raise _Special
    if len(_LINES) >= _MAX_LINES:
        _LINES.clear()
    line = _LINES[header] = b"%s: %s\r\n" % header
    return line


def _request_head(
    method: str,
    upstream: UpstreamTarget,
    target: bytes | None,
    headers: Headers,
    size: int | None,
) -> tuple[bytes, bool]:
    """The request line and headers for a body of `size` bytes (None: streamed); and whether
    the body goes chunked. ValueError if a header would smuggle in a line of its own."""
    parts = [
        _METHOD_BYTES.get(method) or method.encode("ascii"),
        b" ",
        target or upstream.request_target,
        b" HTTP/1.1\r\n",
        upstream.host_line,
    ]
    try:
        lines = [*map(_LINES.get, headers)]
        if None in lines:  # a header seen for the first time (or lately forgotten)
            lines = [_LINES.get(header) or _line(header) for header in headers]
    except (_Special, TypeError):  # Host or framing given, or a header that is not bytes
        return _general_head(method, upstream, target, headers, size)
    parts += lines
    if size is None:
        parts.append(b"transfer-encoding: chunked\r\n\r\n")
        return b"".join(parts), True
    if size or method in _BODY_METHODS:
        parts.append(b"content-length: %d\r\n\r\n" % size)
    else:
        parts.append(b"\r\n")
    return b"".join(parts), False


def _general_head(
    method: str,
    upstream: UpstreamTarget,
    target: bytes | None,
    headers: Headers,
    size: int | None,
) -> tuple[bytes, bool]:
    """`_request_head` where the caller set Host, Content-Length or Transfer-Encoding."""
    streamed = size is None
    method_bytes = _METHOD_BYTES.get(method) or method.encode("ascii")
    parts = [method_bytes, b" ", target or upstream.request_target, b" HTTP/1.1\r\n"]
    has_host = False
    length = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"host":
            has_host = True
        elif lower == b"content-length":
            if not streamed:
                continue
            length = value
        elif lower == b"transfer-encoding":
            continue
        parts += (name, b": ", value, b"\r\n")
    lines = 2 + ((len(parts) - 4) >> 2)  # the request line, each header, the blank line
    if not has_host:
        parts += (b"host: ", upstream.host_header, b"\r\n")
        lines += 1
    chunked = streamed and length is None
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
        lines += 1
    elif size is not None and (size or method in _BODY_METHODS):
        parts.append(b"content-length: %d\r\n" % size)
        lines += 1
    parts.append(b"\r\n")
    head = b"".join(parts)
    if head.count(b"\n") != lines:  # a bare LF may end a line for the upstream (RFC 9112 2.2)
        raise ValueError("a request header name or value contains LF")
    return head, chunked
