"""The events port handler: CORS, sync routing, the function call, and errors in one JSON shape.

Per request it reads the current routing snapshot (never the store): a CORS preflight that
matches a CORS config is answered here; a CloudEvent (structured, binary, batch or the legacy
0.1 headers) goes to the ingress (`ingress.py`: validated, accepted durably, 202), and so does an
HTTP event with async subscribers or an event type rule on its route; otherwise (the plain HTTP
hot path: one header scan and two dict lookups) the sync route for (method, path) is called
through the http provider, a HEAD with no HEAD route falls back to the GET route (the server
drops the body), and any response to an allowed origin gets its CORS headers. Failures map to
the Event Gateway's `{"errors":[{"message":...}]}` with: no route 404, function unreachable or
its reply malformed 502, function too slow 504, draining 503.
"""

import logging
import time
from collections.abc import Awaitable

from eventgate.dataplane.ingress import Ingress
from eventgate.dataplane.types import Request, Response
from eventgate.dataplane.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from eventgate.errors import error_body
from eventgate.events.cloudevents import classify
from eventgate.model import HTTP_EVENT_TYPE
from eventgate.observability.metrics import Metrics
from eventgate.providers.http import (
    FunctionFailed,
    HttpCaller,
    MalformedReply,
    function_reply,
    passthrough,
)
from eventgate.providers.python import PythonCaller
from eventgate.routing.snapshot import (
    CorsPolicy,
    HttpTarget,
    PythonTarget,
    Route,
    RoutingSnapshot,
)
from eventgate.routing.table import RoutingTable
from eventgate.settings import Settings

log = logging.getLogger(__name__)

_JSON = (b"Content-Type", b"application/json")
_PREFLIGHT_VARY = (
    b"Vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)


def error_response(status: int, message: str) -> Response:
    """An error in the Event Gateway's JSON shape."""
    return Response(status, [_JSON], error_body(message))


class Gateway:
    """The events port `Handler`: `await gateway.handle(request)`."""

    def __init__(
        self,
        routing: RoutingTable,
        upstream: UpstreamPool,
        metrics: Metrics,
        settings: Settings,
        ingress: Ingress | None = None,
        python: PythonCaller | None = None,
    ) -> None:
        self.routing = routing
        self.ingress = ingress
        self.python = python
        self.metrics = metrics
        self.caller = HttpCaller(upstream, settings.function_timeout)
        self.draining = False
        self._stats = metrics.requests

    def start_draining(self) -> None:
        """Answer every new request with 503 from now on (requests in flight finish)."""
        self.draining = True

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        if self.draining:
            self._record(request.method, "", "", "", 503, started)
            return error_response(503, "Service Unavailable")
        snapshot = self.routing.snapshot
        origin = request.header(b"origin")
        if origin is not None and request.method == "OPTIONS":
            wanted = request.header(b"access-control-request-method")
            if wanted is not None:
                method = wanted.decode("latin-1").strip().upper()
                policy = snapshot.match_cors(method, request.path)
                if policy is not None:
                    self._record("OPTIONS", policy.config.path, "", "", 204, started)
                    return preflight(policy, request, origin, method)
        ingress = self.ingress
        if ingress is not None:
            mode = classify(request.headers)
            if mode is not None:
                response = await ingress.cloudevents(request, mode, snapshot)
                return self._answer(snapshot, request, origin, response, "", "", "", started)
        found = snapshot.lookup_sync(request.method, request.path)
        if found is None and request.method == "HEAD":
            found = snapshot.lookup_sync("GET", request.path)
        routes = snapshot.match_async(HTTP_EVENT_TYPE, request.method, request.path)
        if ingress is not None and (
            routes
            or (
                found is not None
                and snapshot.policies
                and snapshot.policy(found[0].target.space, HTTP_EVENT_TYPE) is not None
            )
        ):
            answer = await ingress.http_event(request, snapshot, routes, found)
            if answer is not None:
                return self._answer(snapshot, request, origin, answer, "", "", "", started)
        if found is None:
            response = error_response(
                404, f"no function is subscribed to {request.method} {request.path}"
            )
            route_label = function_label = space = ""
        else:
            route, params = found
            response = await self._call(route, request, params)
            route_label, function_label = route.label, route.target.function_id
            space = route.target.space
        return self._answer(
            snapshot, request, origin, response, route_label, function_label, space, started
        )

    def _answer(
        self,
        snapshot: RoutingSnapshot,
        request: Request,
        origin: bytes | None,
        response: Response,
        route_label: str,
        function_label: str,
        space: str,
        started: float,
    ) -> Response:
        """Add CORS headers for an allowed origin, count the request, and return the answer."""
        if origin is not None:
            policy = snapshot.match_cors(request.method, request.path)
            if policy is not None:
                add_cors_headers(policy, request.method, origin, response)
        self._record(request.method, route_label, function_label, space, response.status, started)
        return response

    async def _call(self, route: Route, request: Request, params: dict[str, str]) -> Response:
        target = route.target
        if type(target) is PythonTarget:
            if self.python is None:
                return error_response(502, "python functions are not enabled on this node")
            return await self.python.call(target, request, params)
        try:
            return await self.caller.call(target, request, params)
        except (UpstreamError, FunctionFailed, MalformedReply) as error:
            return self.call_failed(target, error)

    async def finish_lane(
        self,
        route: Route,
        request: Request,
        reply: Awaitable[UpstreamResponse],
        started: float,
    ) -> Response:
        """The answer to a request the fast lane sent to a function (proxy or eventgateway
        mode), once the lane handed the function's reply over: counted as `handle` counts it."""
        target = route.target
        try:
            if target.mode == "proxy":
                response = await passthrough(await reply)
            else:
                response = await function_reply(await reply)
        except (UpstreamError, FunctionFailed, MalformedReply) as error:
            response = self.call_failed(target, error)
        self.record(request.method, route, response.status, started)
        return response

    def record(self, method: str, route: Route, status: int, started: float) -> None:
        """Count a routed request's answer."""
        target = route.target
        self._record(method, route.label, target.function_id, target.space, status, started)

    def call_failed(self, target: HttpTarget | PythonTarget, error: Exception) -> Response:
        """The error answer for a failed function call (logged and counted)."""
        if isinstance(error, UpstreamTimeout):
            reason, status = "timeout", 504
            message = f'Function call failed: function "{target.function_id}" timed out'
        elif isinstance(error, UpstreamConnectError):
            reason, status = "unreachable", 502
            message = f'Function call failed: function "{target.function_id}" is unreachable'
        elif isinstance(error, FunctionFailed):
            reason, status = "failed", 502
            message = f'Function call failed: function "{target.function_id}" {error}'
        elif isinstance(error, MalformedReply):
            reason, status = "malformed", 502
            message = f"HTTP response object malformed: {error}"
        else:
            reason, status = "protocol", 502
            message = (
                f'Function call failed: function "{target.function_id}" '
                "answered with an invalid HTTP response"
            )
        log.warning(
            "function %s/%s (%s, %s mode) failed: %s",
            target.space,
            target.function_id,
            target.url,
            target.mode,
            message,
        )
        self.metrics.function_errors.labels(target.space, target.function_id, reason).inc()
        return error_response(status, message)

    def _record(
        self, method: str, route: str, function: str, space: str, status: int, started: float
    ) -> None:
        """Count the request and its latency."""
        self._stats.record(method, route, function, space, status, time.perf_counter() - started)


def _allow_origin(policy: CorsPolicy, origin: bytes) -> bytes:
    """`*` when any origin may read without credentials, else the origin itself."""
    return b"*" if policy.any_origin and not policy.config.allow_credentials else origin


def preflight(policy: CorsPolicy, request: Request, origin: bytes, method: str) -> Response:
    """The gateway's own answer to a CORS preflight; without Allow headers if it is refused."""
    headers = [_PREFLIGHT_VARY]
    asked = (request.header(b"access-control-request-headers") or b"").decode("latin-1")
    if (
        policy.allows_origin(origin.decode("latin-1"))
        and method in policy.methods
        and policy.allows_headers(asked)
    ):
        headers.append((b"Access-Control-Allow-Origin", _allow_origin(policy, origin)))
        headers.append((b"Access-Control-Allow-Methods", method.encode()))
        if asked.strip():
            headers.append((b"Access-Control-Allow-Headers", asked.strip().encode("latin-1")))
        if policy.config.allow_credentials:
            headers.append((b"Access-Control-Allow-Credentials", b"true"))
    return Response(204, headers)


def add_cors_headers(policy: CorsPolicy, method: str, origin: bytes, response: Response) -> None:
    """Let an allowed origin read an actual (non-preflight) response."""
    response.headers.append((b"Vary", b"Origin"))
    if policy.allows_origin(origin.decode("latin-1")) and method in policy.methods:
        response.headers.append((b"Access-Control-Allow-Origin", _allow_origin(policy, origin)))
        if policy.config.allow_credentials:
            response.headers.append((b"Access-Control-Allow-Credentials", b"true"))
