"""`/v1/spaces/{space}/cors`: CORS settings for one method and path of the events port.

A CORS id is `<METHOD><escaped path>`, e.g. `GET%2Fusers`, and is sent in the URL as is.
"""

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
from eventgate.api.resources import CORS
from eventgate.model import Cors

router = APIRouter(prefix="/v1/spaces/{space}/cors", tags=["cors"], responses=ERROR_RESPONSES)
CorsId = Annotated[str, Path(description="`<METHOD><escaped path>`, e.g. `GET%2Fusers` (as is).")]


@router.post(
    "",
    status_code=201,
    response_model=Cors,
    openapi_extra=request_body(Cors),
    summary="Create a CORS configuration",
    responses={409: {"description": "This method and path already have one"}},
)
async def create_cors(space: Space, body: JsonBody, resources: ResourcesDep) -> Response:
    return resource_response(await resources.create(CORS, CORS.parse_new(space, body)), 201)


@router.get("", summary="List CORS configurations, optionally filtered by metadata")
async def list_cors(space: Space, metadata: MetadataFilter, resources: ResourcesDep) -> Response:
    return list_response(CORS.list_key, await resources.list(CORS, space, metadata))


@router.get("/{cors_id:path}", response_model=Cors, summary="Get a CORS configuration")
async def get_cors(
    request: Request, space: Space, cors_id: CorsId, resources: ResourcesDep
) -> Response:
    return resource_response(await resources.get(CORS, space, raw_id(request, cors_id)))


@router.put(
    "/{cors_id:path}",
    response_model=Cors,
    openapi_extra=request_body(Cors),
    summary="Replace a CORS configuration (its method and path cannot change)",
)
async def update_cors(
    request: Request, space: Space, cors_id: CorsId, body: JsonBody, resources: ResourcesDep
) -> Response:
    updated = await resources.update(CORS, space, raw_id(request, cors_id), body)
    return resource_response(updated)


@router.delete("/{cors_id:path}", status_code=204, summary="Delete a CORS configuration")
async def delete_cors(
    request: Request, space: Space, cors_id: CorsId, resources: ResourcesDep
) -> None:
    await resources.delete(CORS, space, raw_id(request, cors_id))
