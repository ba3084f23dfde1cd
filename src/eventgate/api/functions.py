"""`/v1/spaces/{space}/functions`: register, list, read, replace and delete functions."""

from functools import partial
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request, Response

from eventgate.api.common import (
    JsonBody,
    MetadataFilter,
    ResourcesDep,
    Space,
    list_response,
    request_body,
    resource_response,
)
from eventgate.api.errors import ERROR_RESPONSES
from eventgate.api.python import DEPLOY_WAIT, check_python_function, function_json, python_of
from eventgate.api.resources import EVENT_TYPES, FUNCTIONS, SUBSCRIPTIONS, Check, Resources
from eventgate.errors import Unavailable, ValidationFailed
from eventgate.model import Function

router = APIRouter(
    prefix="/v1/spaces/{space}/functions", tags=["functions"], responses=ERROR_RESPONSES
)
FunctionId = Annotated[str, Path(description="The function's id, e.g. `echo`.")]


@router.post(
    "",
    status_code=201,
    response_model=Function,
    openapi_extra=request_body(Function),
    summary="Register a function",
    responses={409: {"description": "A function with this id is already registered"}},
)
async def create_function(
    space: Space, body: JsonBody, resources: ResourcesDep, request: Request
) -> Response:
    function = FUNCTIONS.parse_new(space, body)
    function = await resources.create(FUNCTIONS, function, _python_check(request, function))
    return await _function_response(request, function, 201)


@router.get("", summary="List functions, optionally filtered by `metadata.<key>=<value>`")
async def list_functions(
    space: Space, metadata: MetadataFilter, resources: ResourcesDep, request: Request
) -> Response:
    functions = await resources.list(FUNCTIONS, space, metadata)
    if python_of(request) is None or all(f.type != "python" for f in functions):
        return list_response(FUNCTIONS.list_key, functions)
    found = [await function_json(python_of(request), f, 0.0) for f in functions]
    return Response(orjson.dumps({FUNCTIONS.list_key: found}), media_type="application/json")


@router.get("/{function_id}", response_model=Function, summary="Get a function")
async def get_function(
    space: Space, function_id: FunctionId, resources: ResourcesDep, request: Request
) -> Response:
    return await _function_response(request, await resources.get(FUNCTIONS, space, function_id))


@router.put(
    "/{function_id}",
    response_model=Function,
    openapi_extra=request_body(Function),
    summary="Replace a function's type, provider and metadata",
)
async def update_function(
    space: Space, function_id: FunctionId, body: JsonBody, resources: ResourcesDep, request: Request
) -> Response:
    check = partial(_check_python, request)
    function = await resources.update(FUNCTIONS, space, function_id, body, check)
    return await _function_response(request, function)


@router.delete(
    "/{function_id}",
    status_code=204,
    summary="Delete a function that no subscription or event type uses",
)
async def delete_function(
    space: Space, function_id: FunctionId, resources: ResourcesDep, request: Request
) -> None:
    await resources.delete(FUNCTIONS, space, function_id, partial(_check_unused, resources))
    python = python_of(request)
    if python is not None:
        await python.forget(space, function_id)


def _python_check(request: Request, function: Function) -> Check[Function] | None:
    return partial(_check_python, request) if function.type == "python" else None


async def _check_python(request: Request, function: Function) -> None:
    """Python functions: the node runs them, their source fits, their image and secrets exist."""
    if function.type != "python":
        return
    python = python_of(request)
    if python is None:
        raise Unavailable("Python functions are not enabled on this node.")
    await check_python_function(request.app.state.resources, python, function)


async def _function_response(request: Request, function: Function, status: int = 200) -> Response:
    """The function, and for a python one its status here (once deployed, or after a while)."""
    if function.type != "python":
        return resource_response(function, status)
    python = python_of(request)
    if python is not None:
        await python.catch_up()
    found = await function_json(python, function, DEPLOY_WAIT)
    return Response(orjson.dumps(found), status, media_type="application/json")


async def _check_unused(resources: Resources, function: Function) -> None:
    users = [
        f'subscription "{subscription.subscription_id}"'
        for subscription in await resources.list(SUBSCRIPTIONS, function.space)
        if subscription.function_id == function.function_id
    ] + [
        f'event type "{event_type.name}" (as its authorizer)'
        for event_type in await resources.list(EVENT_TYPES, function.space)
        if event_type.authorizer_id == function.function_id
    ]
    if users:
        raise ValidationFailed(
            f'Function "{function.function_id}" cannot be deleted: it is used by '
            f"{', '.join(users)}. Delete or change those first."
        )
