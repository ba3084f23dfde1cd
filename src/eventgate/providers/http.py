"""Calling an `http` function for a sync HTTP event, in its provider's mode.

- `eventgateway`: POST the Event Gateway's CloudEvents 0.1 envelope; the function answers
  `{"statusCode", "headers", "body"}`, which becomes the HTTP response.
- `cloudevents`: CloudEvents 1.0 binary mode (`ce-*` headers, the `http.request` data as a JSON
  body); the function's response is passed back as it is.
- `proxy`: the request is forwarded as it came, body streamed, and the response streamed back.

Upstream failures surface as the pool's `UpstreamError`s; a reply that breaks the contract raises
`MalformedReply` or `FunctionFailed`. The gateway turns all of them into status codes.
"""

import re
from collections.abc import AsyncIterator, Awaitable
from operator import itemgetter

import orjson

from eventgate.dataplane.body import EMPTY_BODY
from eventgate.dataplane.types import Headers, Request, Response
from eventgate.dataplane.upstream import HOP_BY_HOP, WHOLE_BODY, UpstreamPool, UpstreamResponse
from eventgate.events.http_event import SOURCE, http_event_data, http_request_event, now_rfc3339
from eventgate.events.ids import uuid4_text
from eventgate.model import HTTP_EVENT_TYPE
from eventgate.routing.pathtree import Params
from eventgate.routing.snapshot import HttpTarget

# Dropped from forwarded requests: the server already answered `Expect`, and `Host` is the
# function's (the client's goes on as X-Forwarded-Host).
_NOT_FORWARDED = HOP_BY_HOP | {b"expect", b"host"}
_SPECIAL = _NOT_FORWARDED | {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
"""Request headers `forwarded_headers` looks at; the rest pass as they are."""
_HOST_ONLY = frozenset((b"host",))
_NAME = itemgetter(0)
_PROTO = (b"x-forwarded-proto", b"http")
_ADDRESSES: dict[str, tuple[bytes, bytes]] = {}
ENVELOPE_HEADERS: Headers = [(b"Content-Type", b"application/cloudevents+json")]
"""An eventgateway-mode call's headers (the pool adds Host and Content-Length)."""
CLOUDEVENT_HEADERS = (
    (b"content-type", b"application/json"),
    (b"ce-specversion", b"1.0"),
    (b"ce-type", HTTP_EVENT_TYPE.encode()),
    (b"ce-source", SOURCE.encode()),
)
"""A cloudevents-mode call's headers before its `ce-id` and `ce-time`."""
_TEXT_PLAIN = (b"Content-Type", b"text/plain; charset=utf-8")
_JSON = (b"Content-Type", b"application/json")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
BUFFER_LIMIT = WHOLE_BODY
"""Upstream bodies up to this size (with a Content-Length) are read whole: one write, no
chunking (and the pool hands them over whole already)."""


class MalformedReply(Exception):
    """An `eventgateway`-mode reply that is not `{"statusCode", "headers", "body"}`."""


class FunctionFailed(Exception):
    """An `eventgateway`-mode function answered with a server error instead of a reply."""


class HttpCaller:
    """Calls http functions through the shared upstream pool."""

    def __init__(self, upstream: UpstreamPool, default_timeout: float) -> None:
        self.upstream = upstream
        self.default_timeout = default_timeout

    def call(self, target: HttpTarget, request: Request, params: Params) -> Awaitable[Response]:
        """The HTTP response for `request`, routed to `target` in the target's mode (the mode's
        own coroutine, returned to be awaited: one frame less on every resumption)."""
        mode = target.mode
        if mode == "proxy":
            return self._proxy(target, request)
        if mode == "cloudevents":
            return self._cloudevents(target, request, params)
        return self._eventgateway(target, request, params)

    async def _eventgateway(self, target: HttpTarget, request: Request, params: Params) -> Response:
        body = await request.body.read()
        payload = orjson.dumps(http_request_event(request, body, params))
        reply = await self.upstream.request(
            "POST",
            target.url,
            headers=ENVELOPE_HEADERS,
            body=payload,
            timeout=self.timeout(target),
        )
        return await function_reply(reply)

    async def _cloudevents(self, target: HttpTarget, request: Request, params: Params) -> Response:
        body = await request.body.read()
        headers = [
            *CLOUDEVENT_HEADERS,
            (b"ce-id", uuid4_text().encode()),
            (b"ce-time", now_rfc3339().encode()),
        ]
        payload = orjson.dumps(http_event_data(request, body, params))
        reply = await self.upstream.request(
            "POST",
            target.url,
            headers=headers,
            body=payload,
            timeout=self.timeout(target),
        )
        return await passthrough(reply)

    async def _proxy(self, target: HttpTarget, request: Request) -> Response:
        path = target.base_path + request.raw_path
        if request.query_string:
            path += b"?" + request.query_string
        body = request.body
        reply = await self.upstream.request(
            request.method,
            target.url,
            headers=forwarded_headers(request),
            body=b"" if body is EMPTY_BODY or not has_body(request.headers) else body,
            target=path,
            timeout=self.timeout(target),
        )
        if reply.complete and not reply.listed:  # the usual small answer, as it is
            return Response(reply.status, reply.headers, reply.take_body())
        return await passthrough(reply)

    def timeout(self, target: HttpTarget) -> float:
        """How long a call to `target` may take."""
        return target.timeout or self.default_timeout


def has_body(headers: Headers) -> bool:
    """Whether a request carries a body (a non-zero Content-Length, or any Transfer-Encoding)."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _tokens(value: bytes) -> frozenset[bytes]:
    """The header names one `Connection` value lists (hop-by-hop for this one message)."""
    return frozenset(token.strip().lower() for token in value.split(b","))


def _connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Header names listed in every `Connection` header."""
    tokens: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name == b"connection":
            tokens = tokens | _tokens(value)
    return tokens


def forwarded_headers(request: Request) -> Headers:
    """The request's end-to-end headers plus `X-Forwarded-*` (the pool sets the function's
    `Host`). The header tuples are reused, not copied."""
    headers = request.headers
    names = [*map(_NAME, headers)]
    special = _SPECIAL.intersection(names)
    forwarded_for = _client_address(request.client)
    if special == _HOST_ONLY and names.count(b"host") == 1:  # the usual request: no loop
        index = names.index(b"host")
        forwarded = headers[:index]
        forwarded += headers[index + 1 :]
        if forwarded_for is not None:
            forwarded.append(forwarded_for)
        forwarded.append(_PROTO)
        forwarded.append((b"x-forwarded-host", headers[index][1]))
        return forwarded
    return _forwarded_headers_listed(request, forwarded_for and forwarded_for[1])


def _forwarded_headers_listed(request: Request, forwarded_for: bytes | None) -> Headers:
    """`forwarded_headers` for a request with X-Forwarded-* or hop-by-hop headers already, or
    without one Host."""
    drop = _NOT_FORWARDED
    if request.header(b"connection") is not None:
        drop = drop | _connection_tokens(request.headers)
    headers: Headers = []
    proto = host = True
    for name, value in request.headers:
        if name in drop:
            continue
        if name == b"x-forwarded-for" and forwarded_for is not None:
            value, forwarded_for = value + b", " + forwarded_for, None
        elif name == b"x-forwarded-proto":
            proto = False
        elif name == b"x-forwarded-host":
            host = False
        headers.append((name, value))
    if forwarded_for is not None:
        headers.append((b"x-forwarded-for", forwarded_for))
    if proto:
        headers.append(_PROTO)
    if host:
        client_host = request.header(b"host")
        if client_host is not None:
            headers.append((b"x-forwarded-host", client_host))
    return headers


def _client_address(client: tuple[str, int] | None) -> tuple[bytes, bytes] | None:
    """The `X-Forwarded-For` header naming the client alone (memoized: clients come back)."""
    if client is None:
        return None
    header = _ADDRESSES.get(client[0])
    if header is None:
        if len(_ADDRESSES) >= 4096:
            _ADDRESSES.clear()
        header = _ADDRESSES[client[0]] = (b"x-forwarded-for", client[0].encode())
    return header


def end_to_end(reply: UpstreamResponse) -> Headers:
    """The function's response headers to pass on: the pool kept the connection's own apart;
    drop any further ones its `Connection` header listed."""
    if not reply.listed:
        return reply.headers
    return [item for item in reply.headers if item[0] not in reply.listed]


async def function_reply(reply: UpstreamResponse) -> Response:
    """The HTTP response an `eventgateway`-mode function's reply describes; FunctionFailed
    for a server error, MalformedReply for a reply that breaks the contract."""
    raw = reply.take_body() if reply.complete else await _read(reply)
    return reply_response(reply.status, raw)


def reply_response(status: int, raw: bytes) -> Response:
    """`function_reply` for a reply already read: its status and body."""
    if status >= 500:
        raise FunctionFailed(f"function answered HTTP {status}")
    return parse_reply(raw)


async def passthrough(reply: UpstreamResponse) -> Response:
    """The function's response as it is, minus hop-by-hop headers; a body already arrived or
    small with a known length is read whole, the rest is streamed (the upstream response is
    closed after either way). Transfer-Encoding and Content-Length are left to the server,
    which frames the body itself."""
    headers = end_to_end(reply)
    if reply.complete:
        return Response(reply.status, headers, reply.take_body())
    length = None
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            length = int(value)
    if length is not None and length <= BUFFER_LIMIT:
        return Response(reply.status, headers, await _read(reply))
    return Response(reply.status, headers, _stream(reply))


async def _read(reply: UpstreamResponse) -> bytes:
    """The whole body of a response still arriving; the response is closed either way."""
    try:
        return await reply.read()
    finally:
        await reply.aclose()


async def _stream(reply: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in reply:
            yield chunk
    finally:
        await reply.aclose()


_REPLY_HEADERS: dict[tuple[str, str], tuple[bytes, bytes]] = {}
"""Reply headers already checked, by (name, value): functions answer with the same ones."""
_DROPPED = (b"", b"")
_CONTENT_TYPE_NAMES: set[bytes] = set()
"""The spellings of Content-Type seen in replies (`Content-Type`, `content-type`...)."""


def _reply_header(name: str, value: object) -> tuple[bytes, bytes]:
    """One reply header as bytes (remembered), or _DROPPED for one the gateway sets itself;
    MalformedReply if it is not a valid HTTP header."""
    if not isinstance(value, str):
        raise MalformedReply(f"header {name!r} is not a string")
    if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
        raise MalformedReply(f"header {name!r} is not a valid HTTP header")
    lower = name.lower().encode()
    if lower in HOP_BY_HOP or lower == b"content-length":
        header = _DROPPED
    else:
        header = (name.encode(), value.encode("latin-1"))
        if lower == b"content-type":
            _CONTENT_TYPE_NAMES.add(header[0])
    if len(_REPLY_HEADERS) >= 4096:
        _REPLY_HEADERS.clear()
    _REPLY_HEADERS[name, value] = header
    return header


def parse_reply(raw: bytes) -> Response:
    """An `eventgateway`-mode reply as the HTTP response it describes (reference section 2.6)."""
    try:
        reply = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedReply("the reply is not JSON") from None
    if not isinstance(reply, dict):
        raise MalformedReply("the reply is not a JSON object")
    status = reply.get("statusCode", 200)
    if status is None:
        status = 200
    if type(status) is not int or not 100 <= status <= 599:
        raise MalformedReply(f"statusCode {status!r} is not an HTTP status code")
    given = reply.get("headers") or {}
    if not isinstance(given, dict):
        raise MalformedReply("headers is not an object")
    headers: Headers = []
    has_content_type = False
    for item in given.items():
        header = _REPLY_HEADERS.get(item) if type(item[1]) is str else None
        if header is None:
            header = _reply_header(*item)
        if header is not _DROPPED:
            headers.append(header)
            has_content_type = has_content_type or header[0] in _CONTENT_TYPE_NAMES
    body = reply.get("body")
    if body is None:
        data = b""
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = orjson.dumps(body)
    if not has_content_type:
        headers.append(_TEXT_PLAIN if body is None or isinstance(body, str) else _JSON)
    return Response(status, headers, data)
