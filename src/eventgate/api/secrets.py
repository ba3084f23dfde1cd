"""`/v1/spaces/{space}/secrets`: named sets of values for python functions.

Write-only: every answer shows a secret's name and keys, never its values. A function that
names secrets in `provider.secrets` finds their keys merged in `context["secrets"]`; changing a
secret deploys the functions that use it again, with the new values.

The values are kept in the config store as they are (an embedded SQLite file under the data dir,
or etcd): protect that store as you would the secrets themselves.
"""

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Response

from eventgate.api.common import JsonBody, MetadataFilter, ResourcesDep, Space, request_body
from eventgate.api.errors import ERROR_RESPONSES
from eventgate.api.python import SECRETS, function_users
from eventgate.errors import ValidationFailed
from eventgate.functions import SecretSpec

router = APIRouter(prefix="/v1/spaces/{space}/secrets", tags=["secrets"], responses=ERROR_RESPONSES)
Name = Annotated[str, Path(description="The secret's name, e.g. `api-token`.")]


def _json(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code, media_type="application/json")


@router.post(
    "",
    status_code=201,
    openapi_extra=request_body(SecretSpec),
    summary='Create a secret: `{"name": ..., "secrets": {"KEY": "value"}}`',
    responses={409: {"description": "A secret with this name exists"}},
)
async def create_secret(space: Space, body: JsonBody, resources: ResourcesDep) -> Response:
    secret = await resources.create(SECRETS, SECRETS.parse_new(space, body))
    return _json(secret.describe(), 201)


@router.get("", summary="List secrets (names and keys, never values)")
async def list_secrets(space: Space, metadata: MetadataFilter, resources: ResourcesDep) -> Response:
    secrets = await resources.list(SECRETS, space, metadata)
    return _json({"secrets": [secret.describe() for secret in secrets]})


@router.get("/{name}", summary="Get a secret's keys (never its values)")
async def get_secret(space: Space, name: Name, resources: ResourcesDep) -> Response:
    return _json((await resources.get(SECRETS, space, name)).describe())


@router.put(
    "/{name}",
    openapi_extra=request_body(SecretSpec),
    summary="Replace a secret's values",
)
async def update_secret(
    space: Space, name: Name, body: JsonBody, resources: ResourcesDep
) -> Response:
    return _json((await resources.update(SECRETS, space, name, body)).describe())


@router.delete("/{name}", status_code=204, summary="Delete a secret that no function uses")
async def delete_secret(space: Space, name: Name, resources: ResourcesDep) -> None:
    async def check_unused(secret: SecretSpec) -> None:
        users = await function_users(resources, space, lambda p: secret.name in p.secrets)
        if users:
            raise ValidationFailed(
                f'Secret "{secret.name}" cannot be deleted: it is used by function(s) '
                f"{', '.join(users)}. Remove it from their provider.secrets first."
            )

    await resources.delete(SECRETS, space, name, check_unused)
