"""Executions of python functions, in Dispatch's shape.

- `POST /v1/spaces/{space}/functions/{functionId}/invocations` with the payload as the JSON body
  (none: null) runs the function and answers
  `{"context": {"logs": {"stdout": [...], "stderr": [...]}, "error": null | {...}}, "payload": ...}`
  plus the record's fields (`invocationId`, `functionId`, `status`, times, `durationMs`,
  `coldStart`). Status: 200 when the handler returned; 400 InputError (it raised ValueError or
  TypeError, or the input schema failed); 500 FunctionError (any other exception, a result that
  is not JSON or fails the output schema, or a function in status ERROR); 502 SystemError (a
  crash, out of memory), 504 for a timeout; 429 when every worker is busy and the wait queue is
  full. `?blocking=false` answers 202 with the invocation id at once.
- `GET /v1/spaces/{space}/invocations/{invocationId}`: one record (status `RUNNING`, `READY` or
  `ERROR`, as Dispatch's runs); `GET /v1/spaces/{space}/invocations?functionId=&limit=`: the
  newest first. Records are kept on the node that ran the call, for a bounded time and number.
"""

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from eventgate.api.common import ResourcesDep, Space
from eventgate.api.errors import ERROR_RESPONSES
from eventgate.api.python import PythonDep
from eventgate.api.resources import FUNCTIONS
from eventgate.errors import NotFound, ValidationFailed

router = APIRouter(prefix="/v1/spaces/{space}", tags=["invocations"], responses=ERROR_RESPONSES)
FunctionId = Annotated[str, Path(description="The python function's id, e.g. `hello`.")]
InvocationId = Annotated[str, Path(description="The invocation's id (a UUID).")]


def _json(
    content: object, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status_code, headers, media_type="application/json")


async def _payload(request: Request) -> object:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ValidationFailed(f"The request body is not valid JSON: {error}.") from None


@router.post(
    "/functions/{function_id}/invocations",
    summary="Invoke a python function with the JSON body as its payload",
    responses={
        202: {"description": "Started (`?blocking=false`); poll the invocation"},
        400: {"description": "InputError, or the function is not a python function"},
        429: {"description": "The function is busy; retry later"},
        500: {"description": "FunctionError"},
        502: {"description": "SystemError (crash, out of memory)"},
        504: {"description": "SystemError: the call timed out"},
    },
)
async def invoke(
    space: Space,
    function_id: FunctionId,
    request: Request,
    resources: ResourcesDep,
    functions: PythonDep,
    blocking: Annotated[bool, Query(description="false: answer 202 at once")] = True,
) -> Response:
    function = await resources.get(FUNCTIONS, space, function_id)
    if function.type != "python":
        raise ValidationFailed(
            f'Function "{function_id}" is an {function.type} function; only python functions '
            "are invoked here (call an http function through a subscription on the events port)."
        )
    payload = await _payload(request)
    name = function.function_id
    if not blocking:
        await functions.current(space, name)
        invocation_id = functions.submit(space, name, payload)
        location = f"/v1/spaces/{space}/invocations/{invocation_id}"
        body = {"invocationId": invocation_id, "functionId": name, "status": "RUNNING"}
        return _json(body, 202, {"location": location})
    execution = await functions.call(space, name, payload, trigger="api")
    record = await functions.records.get(space, execution.id)
    body = record if record is not None else execution.to_json()
    return _json(body, execution.http_status)


@router.get("/invocations/{invocation_id}", summary="Get an invocation record")
async def get_invocation(
    space: Space, invocation_id: InvocationId, functions: PythonDep
) -> Response:
    record = await functions.records.get(space, invocation_id)
    if record is None:
        raise NotFound(
            f'Invocation "{invocation_id}" not found in space "{space}" (records are kept for a '
            "limited time, on the node that ran the call)."
        )
    return _json(record)


@router.get("/invocations", summary="List invocation records, newest first")
async def list_invocations(
    space: Space,
    functions: PythonDep,
    function_id: Annotated[str | None, Query(alias="functionId")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    records = await functions.records.recent(space, function_id, limit)
    return _json({"invocations": records})
