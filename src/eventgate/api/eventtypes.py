"""`/v1/spaces/{space}/eventtypes`: named event types, optionally with an authorizer function and
a JSON Schema (`schema`) for their events' data; both are enforced at the events port.

Registering an event type is optional here (the Event Gateway 0.9 required it before subscribing;
the seed tutorial predates that and never registers `http.request`).
"""

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
from eventgate.model import EventType

router = APIRouter(
    prefix="/v1/spaces/{space}/eventtypes", tags=["event types"], responses=ERROR_RESPONSES
)
Name = Annotated[str, Path(description="The event type's name, e.g. `user.created`.")]


@router.post(
    "",
    status_code=201,
    response_model=EventType,
    openapi_extra=request_body(EventType),
    summary="Create an event type",
    responses={409: {"description": "An event type with this name exists"}},
)
async def create_event_type(space: Space, body: JsonBody, resources: ResourcesDep) -> Response:
    event_type = EVENT_TYPES.parse_new(space, body)
    created = await resources.create(EVENT_TYPES, event_type, partial(_check_authorizer, resources))
    return resource_response(created, 201)


@router.get("", summary="List event types, optionally filtered by `metadata.<key>=<value>`")
async def list_event_types(
    space: Space, metadata: MetadataFilter, resources: ResourcesDep
) -> Response:
    event_types = await resources.list(EVENT_TYPES, space, metadata)
    return list_response(EVENT_TYPES.list_key, event_types)


@router.get("/{name}", response_model=EventType, summary="Get an event type")
async def get_event_type(space: Space, name: Name, resources: ResourcesDep) -> Response:
    return resource_response(await resources.get(EVENT_TYPES, space, name))


@router.put(
    "/{name}",
    response_model=EventType,
    openapi_extra=request_body(EventType),
    summary="Replace an event type's authorizer, schema and metadata",
)
async def update_event_type(
    space: Space, name: Name, body: JsonBody, resources: ResourcesDep
) -> Response:
    check = partial(_check_authorizer, resources)
    return resource_response(await resources.update(EVENT_TYPES, space, name, body, check))


@router.delete("/{name}", status_code=204, summary="Delete an event type that no subscription uses")
async def delete_event_type(space: Space, name: Name, resources: ResourcesDep) -> None:
    await resources.delete(EVENT_TYPES, space, name, partial(_check_unused, resources))


async def _check_authorizer(resources: Resources, event_type: EventType) -> None:
    authorizer = event_type.authorizer_id
    if authorizer is not None and not await resources.exists(
        FUNCTIONS, event_type.space, authorizer
    ):
        raise ValidationFailed(
            f'Authorizer function "{authorizer}" not found in space "{event_type.space}".'
        )


async def _check_unused(resources: Resources, event_type: EventType) -> None:
    users = [
        f'"{subscription.subscription_id}"'
        for subscription in await resources.list(SUBSCRIPTIONS, event_type.space)
        if subscription.event_type == event_type.name
    ]
    if users:
        raise ValidationFailed(
            f'Event Type "{event_type.name}" cannot be deleted: it is used by subscription(s) '
            f"{', '.join(users)}. Delete those first."
        )
