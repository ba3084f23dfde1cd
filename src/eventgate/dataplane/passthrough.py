"""The events port's fast lane: plain requests to http functions, answered without a Task.

The lane takes a read that holds exactly one whole HTTP/1.1 request that is the lane's
(`lane_plans.py`: no hop-by-hop or framing header but `Connection: keep-alive` and a
Content-Length, no Origin, not a CloudEvent; a body of up to 64 KiB in the same read), routed to
an http function (proxy, eventgateway or cloudevents mode, with no async subscription or event
type rule on that route), when the pool has an idle connection to the function. It sends the
function's request as bytes, worked out once per distinct request head (`lane_plans.py`): in
proxy mode the request rewritten (the function's `Host`, then `X-Forwarded-For`, `-Proto` and
`-Host`), in the other modes the `http.request` event (the envelope, or binary mode) with a new
id, time and body. The answer's bytes come back whole and, when they are the usual answer
(`raw_answer.py`), go to the client in one write: as they are, with the server's `Date` in place
of the function's (proxy and cloudevents modes), or as the reply describes (eventgateway mode).

Everything else goes on through the general path (`gateway.py`, `providers/http.py`), which
gives the same answer: a request the lane does not take is parsed again by the server; an answer
it does not take is handed to the connection's parser (`UpstreamConnection.to_general`) and
finished by `Gateway.finish_lane`; a pooled connection that turns out closed before any byte
came back sends the request once more through the whole handler. The lane only ever skips work:
the general path is the reference for every answer, and the lane's are the same byte for byte
(but for the Date, and the eventID and eventTime of an envelope).
"""

import time
from typing import TYPE_CHECKING

import orjson

from eventgate.dataplane.lane_plans import (
    METHOD_NAMES,
    LaneRoute,
    Plan,
    event_plan,
    lookup,
    parse_head,
    proxy_plan,
    request_of,
    request_path,
)
from eventgate.dataplane.raw_answer import MEMO_BYTES, MEMO_ENTRIES, AnswerHeads
from eventgate.dataplane.response_writer import InvalidResponse, usual_head
from eventgate.dataplane.types import Request, Response
from eventgate.dataplane.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from eventgate.dataplane.upstream_conn import UpstreamConnection
from eventgate.events.http_event import normalize_body, now_rfc3339
from eventgate.events.ids import uuid4_text
from eventgate.model import HTTP_EVENT_TYPE
from eventgate.providers.http import FunctionFailed, MalformedReply, reply_response
from eventgate.routing.snapshot import HttpTarget, RoutingSnapshot

if TYPE_CHECKING:
    from eventgate.dataplane.connection import Connection
    from eventgate.dataplane.gateway import Gateway
    from eventgate.dataplane.server import DataPlaneServer

WHOLE_ANSWER = 64 * 1024
"""Answers with bodies larger than this are streamed by the general path."""
_LANE_MODES = frozenset(("proxy", "eventgateway", "cloudevents"))
_CLOSE = b"Connection: close\r\n\r\n"
_NO_BODY = b'""'
"""An envelope's `data.body` for a request without one."""

Reply = tuple[Response, tuple[bytes, bytes, bytes] | None]
"""An eventgateway-mode reply's response, and its parts around the server's Date when
`ResponseWriter.write` would write it so to a kept-alive GET (`usual_head`)."""


class Passthrough:
    """The fast lane of one events port (`DataPlaneServer.lane`).

    What it works out from a request's head (or an answer's head, or a reply) alone is
    remembered by those bytes, for the current routing snapshot: clients and functions repeat
    themselves."""

    def __init__(self, gateway: "Gateway", pool: UpstreamPool, server: "DataPlaneServer") -> None:
        self.gateway = gateway
        self.pool = pool
        self.server = server
        self.stats = gateway.metrics.requests
        self.heads = AnswerHeads(b"server" in server.managed)
        self.replies: dict[bytes, Reply] = {}
        """Eventgateway-mode replies (below HTTP 500): the responses they describe."""
        self._snapshot: RoutingSnapshot | None = None
        self._routes: dict[tuple[bytes, bytes], LaneRoute | None] = {}
        self._plans: dict[bytes, Plan | None] = {}

    def take(self, conn: "Connection", data: bytes) -> bool:
        """Answer the request in `data` (one whole request) if it is the lane's; False to leave
        it to the general path (nothing was done)."""
        if self.gateway.draining:
            return False
        if data.endswith(b"\r\n\r\n"):  # no body (or one that ends so: not the lane's)
            head = data
            body = b""
        else:
            head_end = data.find(b"\r\n\r\n") + 4
            if head_end < 4:
                return False
            head = data[:head_end]
            body = data[head_end:]
        snapshot = self.gateway.routing.snapshot
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._routes = {}
            self._plans = {}
        plan = self._plans.get(head, _UNKNOWN)
        if plan is _UNKNOWN:
            plan = self._plan(snapshot, conn, head)
        if plan is None or len(body) != plan.body_size:  # not all in yet, or more behind it
            return False
        lane = plan.lane
        upstream = self.pool.idle_connection(lane.key)
        if upstream is None:
            return False
        exchange = Exchange(self, conn, plan, head, body)
        conn.lane_begin()
        request = _function_request(plan, conn, body)
        if not upstream.send_raw(
            request, plan.head_only, exchange, upstream.loop.time() + lane.timeout
        ):
            conn.lane_general(exchange.request(), None)  # closed while idle: the general path
        return True

    def _plan(self, snapshot: RoutingSnapshot, conn: "Connection", head: bytes) -> Plan | None:
        """Whether requests with this head are the lane's, and what goes to their function."""
        plan = None
        server = self.server
        parsed = parse_head(head) if len(head) <= server.max_header_bytes else None
        if parsed is not None and parsed[3] <= server.max_body_bytes:  # else 431 or 413
            method, target, lines, size = parsed
            raw_path = target.partition(b"?")[0]
            lane = self._routes.get((method, raw_path), _UNKNOWN_ROUTE)
            if lane is _UNKNOWN_ROUTE:
                lane = self._learn(snapshot, method, raw_path)
            mode = lane.target.mode if lane is not None else ""
            if lane is not None and mode == "proxy":
                plan = proxy_plan(lane, method, target, lines, size)
            elif lane is not None and (mode == "eventgateway" or method != b"HEAD"):
                # (a cloudevents-mode HEAD's answer would lose its body: the general path's)
                found = lookup(snapshot, METHOD_NAMES[method], request_path(raw_path))
                assert found is not None  # as `_learn` found it
                plan = event_plan(lane, head, size, conn, found[1])
        if len(head) <= MEMO_BYTES:
            if len(self._plans) >= MEMO_ENTRIES:
                self._plans = {}
            self._plans[head] = plan
        return plan

    def _learn(self, snapshot: RoutingSnapshot, method: bytes, raw_path: bytes) -> LaneRoute | None:
        """Whether requests for (method, path) are the lane's, worked out as the gateway
        would."""
        name = METHOD_NAMES[method]
        path = request_path(raw_path)
        found = lookup(snapshot, name, path)
        lane = None
        target = found[0].target if found is not None else None
        if (
            found is not None
            and type(target) is HttpTarget
            and target.mode in _LANE_MODES
            and not snapshot.match_async(HTTP_EVENT_TYPE, name, path)
            and snapshot.policy(target.space, HTTP_EVENT_TYPE) is None
        ):
            try:
                lane = LaneRoute(found[0], target, method, self.pool.target(target.url))
                lane.timeout = self.gateway.caller.timeout(target)
            except UpstreamError:
                lane = None  # a URL the pool cannot call: the general path answers 502
        if len(self._routes) >= MEMO_ENTRIES:
            self._routes = {}
        self._routes[method, raw_path] = lane
        return lane

    def reply(self, lane: LaneRoute, status: int, body: bytes) -> Reply:
        """The response an eventgateway-mode reply describes (or the error it makes)."""
        reply = self.replies.get(body) if status < 500 else None
        if reply is None:
            try:
                response = reply_response(status, body)
            except (FunctionFailed, MalformedReply) as error:
                return self.gateway.call_failed(lane.target, error), None
            try:
                reply = (response, usual_head(self.server, response))
            except InvalidResponse:
                reply = (response, None)  # the writer answers 500
            if len(body) <= MEMO_BYTES and status < 500:
                if len(self.replies) >= MEMO_ENTRIES:
                    self.replies = {}
                self.replies[body] = reply
        return reply


def _function_request(plan: Plan, conn: "Connection", body: bytes) -> bytes:
    """What goes to the function for a request: the plan, and what changes per request (the
    client's address; the event's id, time and body)."""
    lane = plan.lane
    envelope = plan.envelope
    event_data = plan.event_data
    if envelope is None and event_data is None:  # proxy mode
        return plan.head_start + conn.forwarded_for + plan.head_end + body
    data_body = orjson.dumps(normalize_body(body, plan.content_type)) if body else _NO_BODY
    if envelope is not None:
        payload = b"".join(
            (
                envelope[0],
                uuid4_text().encode(),
                envelope[1],
                now_rfc3339().encode(),
                envelope[2],
                data_body,
                envelope[3],
            )
        )
        return b"%s%d\r\n\r\n%s" % (lane.head, len(payload), payload)
    assert event_data is not None
    payload = event_data[0] + data_body + event_data[1]
    return b"%s%s\r\nce-time: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        lane.head,
        uuid4_text().encode(),
        now_rfc3339().encode(),
        len(payload),
        payload,
    )


_UNKNOWN_ROUTE = LaneRoute.__new__(LaneRoute)
"""Not yet worked out (`_routes.get` default)."""
_UNKNOWN = Plan.__new__(Plan)
"""Not yet worked out (`_plans.get` and `heads.known.get` default)."""


class Exchange:
    """One request in the lane: it hears from the function's connection (`RawReceiver`)."""

    __slots__ = ("_body", "_conn", "_head", "_passthrough", "_plan", "_started")

    def __init__(
        self, passthrough: Passthrough, conn: "Connection", plan: Plan, head: bytes, body: bytes
    ) -> None:
        self._passthrough = passthrough
        self._conn = conn
        self._plan = plan
        self._head = head
        self._body = body
        self._started = time.perf_counter()

    def raw_data(self, upstream: UpstreamConnection, received: bytes) -> None:
        head_end = received.find(b"\r\n\r\n") + 4
        if head_end < 4:
            if len(received) > WHOLE_ANSWER:
                self._to_general(upstream)
            return  # more to come
        passthrough = self._passthrough
        head = received[:head_end]
        answer = passthrough.heads.known.get(head, _UNKNOWN)
        if answer is _UNKNOWN:
            answer = passthrough.heads.learn(head)
        if answer is None:
            self._to_general(upstream)
            return
        status_line, lines, length, status = answer
        plan = self._plan
        if length < 0 or length > WHOLE_ANSWER:  # no Content-Length (or a large body)
            self._to_general(upstream)
            return
        if plan.head_only:  # the function's Content-Length, for a body not sent
            length = 0
        size = head_end + length
        if len(received) != size:
            if len(received) > size:  # bytes after the answer: the parser's to judge
                self._to_general(upstream)
            return
        upstream.raw_done()
        server = passthrough.server
        request = plan.request
        if request is not None:  # eventgateway mode: the reply describes the response
            response, usual = passthrough.reply(plan.lane, status, received[head_end:])
            if usual is None or request.method == "HEAD" or server.draining:
                self._conn.lane_response(request, response)
            else:
                line, rest, body = usual
                self._conn.lane_answer(b"".join((line, server.default_headers, rest, body)), True)
            self._count(response.status)
            return
        draining = server.draining
        self._conn.lane_answer(
            b"".join(
                (
                    status_line,
                    server.default_headers,
                    lines,
                    _CLOSE if draining else b"\r\n",
                    received[head_end:],
                )
            ),
            not draining,
        )
        self._count(status)

    def _count(self, status: int) -> None:
        """Count the answer in the request metrics (in its route's series for `status`, made
        the first time)."""
        lane = self._plan.lane
        series = lane.series.get(status)
        if series is None:
            target = lane.target
            series = lane.series[status] = self._passthrough.stats.series_of(
                METHOD_NAMES[self._head[: self._head.find(b" ")]],
                lane.route.label,
                target.function_id,
                target.space,
                status,
            )
        self._passthrough.stats.count(series, time.perf_counter() - self._started)

    def raw_failed(self, upstream: UpstreamConnection, error: UpstreamError) -> None:
        request = self.request()
        if not isinstance(error, UpstreamTimeout):  # closed while idle: send it again
            self._conn.lane_general(request, None)
            return
        lane = self._plan.lane
        gateway = self._passthrough.gateway
        response = gateway.call_failed(lane.target, error)
        gateway.record(request.method, lane.route, response.status, self._started)
        self._conn.lane_response(request, response)

    def _to_general(self, upstream: UpstreamConnection) -> None:
        upstream.to_general()
        self.raw_general(upstream)

    def raw_general(self, upstream: UpstreamConnection) -> None:
        passthrough = self._passthrough
        lane = self._plan.lane
        request = self.request()
        reply = upstream.response_head(lane.timeout, passthrough.pool.max_body_bytes)
        finished = passthrough.gateway.finish_lane(lane.route, request, reply, self._started)
        self._conn.lane_general(request, finished)

    def request(self) -> Request:
        """The request as the server's parser would have made it (for the general path)."""
        return request_of(self._head, self._conn, self._body)
