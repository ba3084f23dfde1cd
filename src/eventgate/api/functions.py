"""`/v1/spaces/{space}/functions`: register, list, read, replace and delete functions."""

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Response

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
from eventgate.api.resources import EVENT_TYPES, FUNCTIONS, SUBSCRIPTIONS, Resources
from eventgate.errors import ValidationFailed
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
async def create_function(space: Space, body: JsonBody, resources: ResourcesDep) -> Response:
    function = await resources.create(FUNCTIONS, FUNCTIONS.parse_new(space, body))
    return resource_response(function, 201)


@router.get("", summary="List functions, optionally filtered by `metadata.<key>=<value>`")
async def list_functions(
    space: Space, metadata: MetadataFilter, resources: ResourcesDep
) -> Response:
    return list_response(FUNCTIONS.list_key, await resources.list(FUNCTIONS, space, metadata))


@router.get("/{function_id}", response_model=Function, summary="Get a function")
async def get_function(space: Space, function_id: FunctionId, resources: ResourcesDep) -> Response:
    return resource_response(await resources.get(FUNCTIONS, space, function_id))


@router.put(
    "/{function_id}",
    response_model=Function,
    openapi_extra=request_body(Function),
    summary="Replace a function's type, provider and metadata",
)
async def update_function(
    space: Space, function_id: FunctionId, body: JsonBody, resources: ResourcesDep
) -> Response:
    return resource_response(await resources.update(FUNCTIONS, space, function_id, body))


@router.delete(
    "/{function_id}",
    status_code=204,
    summary="Delete a function that no subscription or event type uses",
)
async def delete_function(space: Space, function_id: FunctionId, resources: ResourcesDep) -> None:
    await resources.delete(FUNCTIONS, space, function_id, partial(_check_unused, resources))


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
