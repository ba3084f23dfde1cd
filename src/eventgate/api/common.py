"""What the resource routers share: path and body parameters, raw ids, JSON responses."""

from collections.abc import Iterable
from typing import Annotated, Any

import orjson
from fastapi import Depends, Path, Request, Response
from pydantic import BaseModel

from eventgate.api.resources import Resources
from eventgate.errors import ValidationFailed
from eventgate.model import NAME_PATTERN, Resource

Space = Annotated[
    str, Path(pattern=NAME_PATTERN, description="The space; a `space` in a body is ignored.")
]


async def _json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, whatever its content type (as in the Event Gateway, so that
    `curl -d '{...}'` works without a content-type header)."""
    raw = await request.body()
    if not raw.strip():
        raise ValidationFailed("The request body is empty; send the resource as a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    return data


JsonBody = Annotated[dict[str, Any], Depends(_json_object)]


def _metadata_filter(request: Request) -> list[tuple[str, str]]:
    """`?metadata.team=a&metadata.env=prod` as `[("team", "a"), ("env", "prod")]`, all to match."""
    return [
        (name.removeprefix("metadata."), value)
        for name, value in request.query_params.multi_items()
        if name.startswith("metadata.")
    ]


MetadataFilter = Annotated[list[tuple[str, str]], Depends(_metadata_filter)]


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(_resources)]


def raw_id(request: Request, decoded: str) -> str:
    """The id at the end of `/v1/spaces/<space>/<kind>/<id>` exactly as the client sent it.

    Starlette percent-decodes the path before routing, which would turn the seed's
    `DELETE .../subscriptions/http,POST,%2F` into the id `http,POST,/`; the raw path keeps `%2F`.
    `decoded` (the routed parameter) is the answer only when the server gives no raw path.
    """
    raw_path: bytes | None = request.scope.get("raw_path")
    if not raw_path:
        return decoded
    parts = raw_path.split(b"?", 1)[0].decode("utf-8", "replace").split("/", 5)
    return parts[5] if len(parts) == 6 else decoded


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body read by `JsonBody`: the model's schema (registered by the route's
    `response_model`)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def resource_response(resource: Resource, status_code: int = 200) -> Response:
    return _json(resource.to_json(), status_code)


def list_response(key: str, resources: Iterable[Resource]) -> Response:
    return _json({key: [resource.to_json() for resource in resources]})


def _json(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code, media_type="application/json")
