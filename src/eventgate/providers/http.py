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
import uuid
from collections.abc import AsyncIterator

import orjson

from eventgate.dataplane.types import Headers, Request, Response
from eventgate.dataplane.upstream import UpstreamPool, UpstreamResponse
from eventgate.events.http_event import SOURCE, http_event_data, http_request_event, now_rfc3339
from eventgate.model import HTTP_EVENT_TYPE
from eventgate.routing.pathtree import Params
from eventgate.routing.snapshot import HttpTarget

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
# Also dropped from forwarded requests: the server already answered `Expect`, and `Host` is the
# function's (the client's goes on as X-Forwarded-Host).
_NOT_FORWARDED = HOP_BY_HOP | {b"expect", b"host"}
_ENVELOPE_HEADERS = [(b"content-type", b"application/cloudevents+json")]
_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")
_JSON = (b"content-type", b"application/json")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Upstream bodies up to this size (with a Content-Length) are read whole: one write, no chunking.
BUFFER_LIMIT = 64 * 1024


class MalformedReply(Exception):
    """An `eventgateway`-mode reply that is not `{"statusCode", "headers", "body"}`."""


class FunctionFailed(Exception):
    """An `eventgateway`-mode function answered with a server error instead of a reply."""


class HttpCaller:
    """Calls http functions through the shared upstream pool."""

    def __init__(self, upstream: UpstreamPool, default_timeout: float) -> None:
        self.upstream = upstream
        self.default_timeout = default_timeout

    async def call(self, target: HttpTarget, request: Request, params: Params) -> Response:
        """The HTTP response for `request`, routed to `target` in the target's mode."""
        if target.mode == "proxy":
            return await self._proxy(target, request)
        body = await request.body.read()
        if target.mode == "cloudevents":
            return await self._cloudevents(target, request, body, params)
        return await self._eventgateway(target, request, body, params)

    async def _eventgateway(
        self, target: HttpTarget, request: Request, body: bytes, params: Params
    ) -> Response:
        payload = orjson.dumps(http_request_event(request, body, params))
        reply = await self.upstream.request(
            "POST",
            target.url,
            headers=_ENVELOPE_HEADERS,
            body=payload,
            timeout=target.timeout or self.default_timeout,
        )
        try:
            raw = await reply.read()
        finally:
            await reply.aclose()
        if reply.status >= 500:
            raise FunctionFailed(f"function answered HTTP {reply.status}")
        return parse_reply(raw)

    async def _cloudevents(
        self, target: HttpTarget, request: Request, body: bytes, params: Params
    ) -> Response:
        headers = [
            (b"content-type", b"application/json"),
            (b"ce-specversion", b"1.0"),
            (b"ce-type", HTTP_EVENT_TYPE.encode()),
            (b"ce-source", SOURCE.encode()),
            (b"ce-id", str(uuid.uuid4()).encode()),
            (b"ce-time", now_rfc3339().encode()),
        ]
        payload = orjson.dumps(http_event_data(request, body, params))
        reply = await self.upstream.request(
            "POST",
            target.url,
            headers=headers,
            body=payload,
            timeout=target.timeout or self.default_timeout,
        )
        return await passthrough(reply)

    async def _proxy(self, target: HttpTarget, request: Request) -> Response:
        path = target.base_path + request.raw_path
        if request.query_string:
            path += b"?" + request.query_string
        reply = await self.upstream.request(
            request.method,
            target.url,
            headers=forwarded_headers(request),
            body=request.body if has_body(request.headers) else b"",
            target=path,
            timeout=target.timeout or self.default_timeout,
        )
        return await passthrough(reply)


def has_body(headers: Headers) -> bool:
    """Whether a request carries a body (a non-zero Content-Length, or any Transfer-Encoding)."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Header names listed in `Connection` (hop-by-hop for this one message)."""
    tokens = [
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    ]
    return frozenset(tokens)


def forwarded_headers(request: Request) -> Headers:
    """The request's end-to-end headers plus `X-Forwarded-*` (the pool sets the function's
    `Host`)."""
    drop = _NOT_FORWARDED
    if request.header(b"connection") is not None:
        drop = drop | _connection_tokens(request.headers)
    headers: Headers = []
    forwarded_for = request.client[0].encode() if request.client else None
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
        headers.append((b"x-forwarded-proto", b"http"))
    if host:
        client_host = request.header(b"host")
        if client_host is not None:
            headers.append((b"x-forwarded-host", client_host))
    return headers


async def passthrough(reply: UpstreamResponse) -> Response:
    """The function's response as it is, minus hop-by-hop headers; a body already arrived or
    small with a known length is read whole, the rest is streamed (the upstream response is
    closed after either way)."""
    drop = HOP_BY_HOP
    length = None
    for name, value in reply.headers:
        if name == b"connection":
            drop = drop | _connection_tokens(reply.headers)
        elif name == b"content-length":
            length = int(value) if value.strip().isdigit() else None
    headers = [(name, value) for name, value in reply.headers if name not in drop]
    if reply.complete or (length is not None and length <= BUFFER_LIMIT):
        try:
            body = await reply.read()
        finally:
            await reply.aclose()
        return Response(reply.status, headers, body)
    return Response(reply.status, headers, _stream(reply))


async def _stream(reply: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in reply:
            yield chunk
    finally:
        await reply.aclose()


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
    for name, value in given.items():
        if not isinstance(value, str):
            raise MalformedReply(f"header {name!r} is not a string")
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise MalformedReply(f"header {name!r} is not a valid HTTP header")
        lower = name.lower().encode()
        if lower in HOP_BY_HOP or lower == b"content-length":
            continue
        has_content_type = has_content_type or lower == b"content-type"
        headers.append((name.encode(), value.encode("latin-1")))
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
