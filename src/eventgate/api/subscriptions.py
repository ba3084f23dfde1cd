"""`/v1/spaces/{space}/subscriptions`: bind events to functions.

Both body shapes are accepted: the Event Gateway 0.9 one (`type`, `eventType`) and the seed
tutorial's (`event: "http"`, id `http,POST,%2F`). A space has at most one sync subscription per
event type, method and path, whatever the id format, and its sync paths must fit in one path tree
(the same `PathTree` the router builds), so that every accepted subscription can be routed.
"""

from contextlib import suppress
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from eventgate.api.common import (
    JsonBody,
    MetadataFilter,
    ResourcesDep,
    Space,
    list_response,
    raw_id,
    request_body,
    resource_response,
)
from eventgate.api.errors import ERROR_RESPONSES
from eventgate.api.resources import FUNCTIONS, SUBSCRIPTIONS, Resources
from eventgate.errors import Conflict, ValidationFailed
from eventgate.model import Subscription
from eventgate.routing.pathtree import PathConflict, PathTree

router = APIRouter(
    prefix="/v1/spaces/{space}/subscriptions", tags=["subscriptions"], responses=ERROR_RESPONSES
)
SubscriptionId = Annotated[
    str,
    Path(description="The id as the API returned it, e.g. `http,POST,%2F` (send `%2F` as is)."),
]


@router.post(
    "",
    status_code=201,
    response_model=Subscription,
    openapi_extra=request_body(Subscription),
    summary="Create a subscription",
    responses={409: {"description": "The route already has a sync subscription"}},
)
async def create_subscription(space: Space, body: JsonBody, resources: ResourcesDep) -> Response:
    subscription = SUBSCRIPTIONS.parse_new(space, body)
    created = await resources.create(SUBSCRIPTIONS, subscription, partial(_check_new, resources))
    return resource_response(created, 201)


@router.get("", summary="List subscriptions, optionally filtered by `metadata.<key>=<value>`")
async def list_subscriptions(
    space: Space, metadata: MetadataFilter, resources: ResourcesDep
) -> Response:
    subscriptions = await resources.list(SUBSCRIPTIONS, space, metadata)
    return list_response(SUBSCRIPTIONS.list_key, subscriptions)


@router.get("/{subscription_id:path}", response_model=Subscription, summary="Get a subscription")
async def get_subscription(
    request: Request, space: Space, subscription_id: SubscriptionId, resources: ResourcesDep
) -> Response:
    subscription_id = raw_id(request, subscription_id)
    return resource_response(await resources.get(SUBSCRIPTIONS, space, subscription_id))


@router.put(
    "/{subscription_id:path}",
    response_model=Subscription,
    openapi_extra=request_body(Subscription),
    summary="Update a subscription's metadata (nothing else may change)",
)
async def update_subscription(
    request: Request,
    space: Space,
    subscription_id: SubscriptionId,
    body: JsonBody,
    resources: ResourcesDep,
) -> Response:
    subscription_id = raw_id(request, subscription_id)
    updated = await resources.update(SUBSCRIPTIONS, space, subscription_id, body)
    return resource_response(updated)


@router.delete("/{subscription_id:path}", status_code=204, summary="Delete a subscription")
async def delete_subscription(
    request: Request, space: Space, subscription_id: SubscriptionId, resources: ResourcesDep
) -> None:
    await resources.delete(SUBSCRIPTIONS, space, raw_id(request, subscription_id))


async def _check_new(resources: Resources, subscription: Subscription) -> None:
    space = subscription.space
    if not await resources.exists(FUNCTIONS, space, subscription.function_id):
        raise ValidationFailed(
            f'Function "{subscription.function_id}" not found in space "{space}"; '
            "register it before subscribing it to events."
        )
    if subscription.type == "sync":
        _check_route(subscription, await resources.list(SUBSCRIPTIONS, space))


def _check_route(new: Subscription, existing: list[Subscription]) -> None:
    """One sync subscription per route, and a path that fits with the others on its route."""
    tree: PathTree[Subscription] = PathTree()
    for other in existing:
        if other.type != "sync" or (other.event_type, other.method) != (new.event_type, new.method):
            continue
        if other.route_key == new.route_key:
            raise Conflict(
                f"{new.method} {new.path} ({new.event_type}) already has a sync subscription, "
                f'"{other.subscription_id}" (function "{other.function_id}"); '
                "delete it first: there can be only one per event type, method and path."
            )
        with suppress(PathConflict):  # stored earlier; not this request's problem
            tree.add(other.path, other)
    try:
        tree.add(new.path, new)
    except PathConflict as exc:
        raise ValidationFailed(f"Subscription path conflict: {exc}.") from None
