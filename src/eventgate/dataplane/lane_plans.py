"""What the fast lane (`passthrough.py`) sends to a function for a request, worked out from the
request's head bytes alone, the way the general path would send it.

A head is the lane's when it is one HTTP/1.1 request whose headers change nothing about how it
is read or answered: exactly one Host, no Transfer-Encoding, Expect, Upgrade or other
hop-by-hop header but `Connection: keep-alive` (dropped, as the general path drops it), no
`Content-*` but Content-Type and Content-Length, no `Origin`, no `ce-*` (a CloudEvent), no
`X-Forwarded-*` yet. GET, HEAD, DELETE and OPTIONS come without a
body; POST, PUT and PATCH with a Content-Length of 1 byte to `MAX_BODY`, their body in the same
read. Everything else is the general path's.

The plan is what goes to the function, but for what changes per request: in proxy mode the
request head (and the body after it), in the general path's header order; in eventgateway mode
the `http.request` envelope's JSON around its eventID, eventTime and body; in cloudevents mode
the binary-mode head and the event data's JSON around its body.
"""

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from eventgate.dataplane.body import EMPTY_BODY, BufferedBody
from eventgate.dataplane.raw_answer import LINES, content_length, normal_lines
from eventgate.dataplane.types import Request
from eventgate.dataplane.upstream import UpstreamTarget
from eventgate.events.http_event import data_template, envelope_template
from eventgate.providers.http import CLOUDEVENT_HEADERS, ENVELOPE_HEADERS
from eventgate.routing.pathtree import Params
from eventgate.routing.snapshot import HttpTarget, Route, RoutingSnapshot

if TYPE_CHECKING:
    from eventgate.dataplane.connection import Connection

_REQUEST = re.compile(
    rb"(GET|HEAD|DELETE|OPTIONS|POST|PUT|PATCH) (/[\x21\x22\x24-\x7e]*) HTTP/1\.1"
    + LINES
    + rb"\r\n\r\n"
)
"""A request head: method, origin-form target (no fragment), header lines."""
_UNUSUAL = re.compile(
    rb"\r\n(?:content-(?!type:|length:)|transfer-encoding:|expect:|upgrade:|"
    rb"connection:(?![ \t]*keep-alive[ \t]*(?:\r|$))|keep-alive:|te:|trailer:|proxy-|origin:|"
    rb"ce-|x-forwarded-)"
)
"""Request headers (lower-cased) that leave the request to the general path (all but
`Connection: keep-alive` of those about the connection)."""
_KEEP_ALIVE = re.compile(rb"\r\nconnection:[^\r]*", re.IGNORECASE)
"""The `Connection: keep-alive` line of a request the lane takes (not forwarded)."""
BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
MAX_BODY = 64 * 1024
"""Larger request bodies are streamed by the general path."""
METHOD_NAMES = {m.encode(): m for m in ("GET", "HEAD", "DELETE", "OPTIONS", "POST", "PUT", "PATCH")}
_PROTO = b"\r\nx-forwarded-proto: http\r\nx-forwarded-host: "


class LaneRoute:
    """What the lane needs to send requests for one (method, path) to their function."""

    __slots__ = ("head", "host_line", "key", "route", "series", "target", "timeout")

    def __init__(
        self, route: Route, target: HttpTarget, method: bytes, upstream: UpstreamTarget
    ) -> None:
        self.route = route
        self.target = target
        self.key = upstream.key
        self.host_line = b"host: " + upstream.host_header
        post = b"POST %s HTTP/1.1\r\n%s\r\n" % (upstream.request_target, self.host_line)
        if target.mode == "proxy":  # the request line's start; the target follows
            self.head = method + b" " + target.base_path
        elif target.mode == "cloudevents":  # the binary-mode head, up to the ce-id's value
            self.head = post + _header_lines(CLOUDEVENT_HEADERS) + b"ce-id: "
        else:  # the envelope's head, up to its Content-Length's value
            self.head = post + _header_lines(ENVELOPE_HEADERS) + b"content-length: "
        self.timeout = 0.0
        self.series: dict[int, list[float]] = {}
        """The request metrics' series of each status answered."""


class Plan:
    """A request head the lane takes: what goes to its function."""

    __slots__ = (
        "body_size",
        "content_type",
        "envelope",
        "event_data",
        "head_end",
        "head_only",
        "head_start",
        "lane",
        "request",
    )

    def __init__(self, lane: LaneRoute, head_only: bool, body_size: int) -> None:
        self.lane = lane
        self.head_only = head_only
        """A HEAD sent on as a HEAD (proxy mode): its answer has no body."""
        self.body_size = body_size
        """The request body's Content-Length (0: none)."""
        self.head_start = self.head_end = b""
        """Proxy mode: the function's request head before and after X-Forwarded-For."""
        self.envelope: tuple[bytes, bytes, bytes, bytes] | None = None
        """Eventgateway mode: the envelope's JSON around its eventID, eventTime and body."""
        self.event_data: tuple[bytes, bytes] | None = None
        """Cloudevents mode: the event data's JSON around its body."""
        self.content_type: str | None = None
        """Both: the request's Content-Type, which decides how its body goes."""
        self.request: Request | None = None
        """Eventgateway mode: the request (without its body), for writing the response."""


def _header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Header lines as the upstream pool writes them."""
    return b"".join(b"%s: %s\r\n" % header for header in headers)


def parse_head(head: bytes) -> tuple[bytes, bytes, bytes, int] | None:
    """Method, target, header lines and body size of a head that may be the lane's."""
    match = _REQUEST.fullmatch(head)
    if match is None:
        return None
    method, target, lines = match.groups()
    lowered = lines.lower()
    host_at = lowered.find(b"\r\nhost:")
    if (
        host_at < 0
        or lowered.find(b"\r\nhost:", host_at + 7) >= 0
        or _UNUSUAL.search(lowered) is not None
    ):
        return None
    length = content_length(lowered)
    if length == -1 and method not in BODY_METHODS:
        return method, target, lines, 0
    if length is None or method not in BODY_METHODS or not 0 < length <= MAX_BODY:
        return None
    return method, target, lines, length


def proxy_plan(lane: LaneRoute, method: bytes, target: bytes, lines: bytes, size: int) -> Plan:
    """The function's request head for a proxy-mode request, as `providers/http.py` sends it:
    the function's Host, X-Forwarded-For, -Proto and -Host; with a body, the client's headers
    first and Host last."""
    plan = Plan(lane, method == b"HEAD", size)
    if target.endswith(b"?") and target.find(b"?") == len(target) - 1:
        target = target[:-1]  # an empty query goes as none, as on the general path
    host_at = lines.lower().find(b"\r\nhost:")
    host_end = lines.find(b"\r\n", host_at + 7)
    if host_end < 0:
        host_end = len(lines)
    host = lines[host_at + 7 : host_end].lstrip(b" \t")
    forwarded = normal_lines(_KEEP_ALIVE.sub(b"", lines[:host_at] + lines[host_end:]))
    if size:
        plan.head_start = b"".join((lane.head, target, b" HTTP/1.1", forwarded))
        plan.head_end = b"".join((_PROTO, host, b"\r\n", lane.host_line, b"\r\n\r\n"))
    else:
        plan.head_start = b"".join((lane.head, target, b" HTTP/1.1\r\n", lane.host_line, forwarded))
        plan.head_end = _PROTO + host + b"\r\n\r\n"
    return plan


def event_plan(
    lane: LaneRoute,
    head: bytes,
    size: int,
    conn: "Connection",
    params: Params,
) -> Plan:
    """The `http.request` event for an eventgateway-mode request (the envelope) or a
    cloudevents-mode one (the data, in binary mode), but for what changes."""
    plan = Plan(lane, False, size)
    request = request_of(head, conn, b"")
    if lane.target.mode == "eventgateway":
        plan.request = request  # the reply describes the response: the writer needs it
        plan.envelope = envelope_template(request, params)
    else:
        plan.event_data = data_template(request, params)
    content_type = request.header(b"content-type")
    plan.content_type = content_type.decode("latin-1") if content_type is not None else None
    return plan


def request_of(head: bytes, conn: "Connection", body: bytes) -> Request:
    """The request of a head `parse_head` took, as the server's parser would have made it."""
    match = _REQUEST.fullmatch(head)
    assert match is not None  # parse_head took it
    method, target, lines = match.groups()
    raw_path, _, query = target.partition(b"?")
    headers = []
    for line in lines.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.lower(), value.lstrip(b" \t")))
    return Request(
        METHOD_NAMES[method],
        raw_path,
        request_path(raw_path),
        query,
        headers,
        BufferedBody(body) if body else EMPTY_BODY,
        "1.1",
        conn.client,
    )


def lookup(snapshot: RoutingSnapshot, method: str, path: str) -> tuple[Route, Params] | None:
    """The sync route as the gateway finds it (a HEAD falls back to the GET route)."""
    found = snapshot.lookup_sync(method, path)
    if found is None and method == "HEAD":
        found = snapshot.lookup_sync("GET", path)
    return found


def request_path(raw_path: bytes) -> str:
    """A request path as the server decodes it."""
    path = raw_path.decode("ascii")
    return unquote(path) if "%" in path else path
