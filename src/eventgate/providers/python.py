"""Calling `python` functions: for sync HTTP events (`PythonCaller`, the events port) and for
async events and authorizers (`PythonDeliverer`, the delivery side).

A sync HTTP call gives the handler the request body as its payload (parsed when it is JSON,
whatever the Content-Type, since `curl -d` sends a form type; else text for text and form types,
base64 for other bytes) and the request in `context["httpContext"]` (`method`, `path`, `query`,
`headers`, `host`, `params`). A result shaped `{"statusCode", "headers", "body"}` becomes the
HTTP response as in the Event Gateway; any other result is sent as JSON with 200. Errors answer
in the gateway's JSON error shape with the execution's status: 400 InputError, 500
FunctionError, 502 SystemError (504 for a timeout), 429 when the function is busy.

An async event gives the handler the event's data as payload and its attributes (extensions
included, data left out) in `context["event"]`. The delivery side only needs a status: 200 for a
result, the execution's error status otherwise (so an InputError is not retried, the others are).
Every call answers with an `X-Eventgate-Invocation-Id` / is recorded under its invocation id.
"""

import asyncio
import base64
from urllib.parse import parse_qs

import orjson

from eventgate.dataplane.types import Request, Response
from eventgate.errors import EventgateError, NotFound
from eventgate.events import cloudevents
from eventgate.events.envelope import CloudEvent
from eventgate.events.http_event import flatten_headers, normalize_body
from eventgate.functions.service import PythonFunctions
from eventgate.model import Function, parse_duration
from eventgate.providers.base import CallFailed, Deliverer, Reply
from eventgate.providers.http import MalformedReply, parse_reply
from eventgate.routing.pathtree import Params
from eventgate.routing.snapshot import PythonTarget
from eventgate.runtime import Execution, TooManyRequests

_JSON = (b"Content-Type", b"application/json")
_INVOCATION = b"x-eventgate-invocation-id"
_DELIVERY_GRACE = 0.25  # the runtime's own timeout answers first when both are the same


def http_payload(request: Request, body: bytes) -> object:
    """The request body as a handler's payload."""
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        content_type = request.header(b"content-type")
        return normalize_body(body, content_type.decode("latin-1") if content_type else None)


def http_context(request: Request, params: Params) -> dict[str, object]:
    """`context["httpContext"]`: the request without its body."""
    query = request.query_string.decode("latin-1")
    return {
        "method": request.method,
        "path": request.path,
        "query": parse_qs(query, keep_blank_values=True) if query else {},
        "headers": flatten_headers(request.headers),
        "host": (request.header(b"host") or b"").decode("latin-1"),
        "params": params,
    }


def _error(status: int, message: str, **fields: object) -> Response:
    body = orjson.dumps({"errors": [{"message": message, **fields}]})
    return Response(status, [_JSON], body)


class PythonCaller:
    """The events port's side: one HTTP request, one call."""

    def __init__(self, functions: PythonFunctions) -> None:
        self.functions = functions

    async def call(self, target: PythonTarget, request: Request, params: Params) -> Response:
        body = await request.body.read()
        payload = http_payload(request, body)
        context = {"httpContext": http_context(request, params)}
        name = target.function_id
        try:
            execution = await self.functions.call(
                target.space, name, payload, context, trigger="http"
            )
        except TooManyRequests as error:
            response = _error(429, f'Function call failed: function "{name}" is busy: {error}')
            response.headers.append((b"retry-after", b"1"))
            return response
        except NotFound as error:
            return _error(502, f'Function call failed: function "{name}": {error.message}')
        return self._answer(name, execution)

    def _answer(self, name: str, execution: Execution) -> Response:
        header = (_INVOCATION, execution.id.encode())
        error = execution.error
        if error is not None:
            what = f"{error.exception}: " if error.exception else ""
            response = _error(
                execution.http_status,
                f'Function call failed: function "{name}": {error.type}: {what}{error.message}',
                type=error.type,
                invocationId=execution.id,
            )
        else:
            result = execution.payload
            if isinstance(result, dict) and "statusCode" in result:
                try:
                    response = parse_reply(orjson.dumps(result))
                except MalformedReply as malformed:
                    response = _error(502, f"HTTP response object malformed: {malformed}")
            else:
                response = Response(200, [_JSON], orjson.dumps(result))
        response.headers.append(header)
        return response


class PythonDeliverer(Deliverer):
    """The delivery side: async events and authorizer calls to python functions."""

    def __init__(self, functions: PythonFunctions) -> None:
        self.functions = functions

    def target(self, function: Function) -> str:
        return f"python:{function.space}/{function.function_id}"

    def default_timeout(self, function: Function) -> float | None:
        timeout = function.provider.timeout
        return parse_duration(timeout) if timeout else None

    async def deliver(self, function: Function, event: CloudEvent, timeout: float) -> Reply:  # noqa: ASYNC109
        data = event.data
        payload = base64.b64encode(data).decode("ascii") if isinstance(data, bytes) else data
        attributes = cloudevents.to_dict(event)
        attributes.pop("data", None)
        attributes.pop("data_base64", None)
        context: dict[str, object] = {"event": attributes}
        return await self._call(function, payload, context, timeout, "event", event.id)

    async def call(self, function: Function, payload: object, timeout: float) -> Reply:  # noqa: ASYNC109
        return await self._call(function, payload, {}, timeout, "authorizer", None)

    async def _call(
        self,
        function: Function,
        payload: object,
        context: dict[str, object],
        timeout: float,  # noqa: ASYNC109
        trigger: str,
        event_id: str | None,
    ) -> Reply:
        try:
            async with asyncio.timeout(timeout + _DELIVERY_GRACE):
                execution = await self.functions.call(
                    function.space,
                    function.function_id,
                    payload,
                    context,
                    trigger=trigger,
                    event_id=event_id,
                )
        except TimeoutError:
            raise CallFailed(f"timed out after {timeout:g}s", timed_out=True) from None
        except TooManyRequests as error:
            return Reply(429, orjson.dumps({"error": error.message}), retry_after=1.0)
        except EventgateError as error:
            raise CallFailed(error.message) from None
        if execution.error is not None:
            return Reply(execution.http_status, orjson.dumps(execution.error.to_json()))
        return Reply(200, orjson.dumps(execution.payload))
