"""`/v1/spaces/{space}/images`: a runtime plus a requirements.txt, built into a virtual
environment.

The record (name, requirements) lives in the config store, so every node of a cluster knows it;
each node builds its own environment from it, on first need (here: at once on the node that
took the request). A create or a replace answers 202 while the build runs; `GET` shows `status`
(`CREATING`, `READY`, `ERROR`) and the installer's log. Writing an image again (PUT) retries a
failed build. Images with identical requirements share one build.
"""

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Response

from eventgate.api.common import JsonBody, MetadataFilter, ResourcesDep, Space, request_body
from eventgate.api.errors import ERROR_RESPONSES
from eventgate.api.python import IMAGES, PythonDep, function_users
from eventgate.errors import ValidationFailed
from eventgate.functions import ImageSpec, PythonFunctions
from eventgate.runtime import ImageStatus

router = APIRouter(prefix="/v1/spaces/{space}/images", tags=["images"], responses=ERROR_RESPONSES)
Name = Annotated[str, Path(description="The image's name, e.g. `python3`.")]
_REASON_LINES = 15


def _json(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code, media_type="application/json")


def image_json(
    functions: PythonFunctions, spec: ImageSpec, *, log: bool, rebuild: bool = False
) -> dict[str, Any]:
    """The record with this node's build: status, digest, and the log (or the reason it
    failed)."""
    found: dict[str, Any] = spec.to_json()
    image = functions.image(spec.space, spec.name, rebuild=rebuild)
    if image is None:  # not followed yet: the write just happened
        functions.note_image(spec)
        image = functions.image(spec.space, spec.name, rebuild=rebuild)
    assert image is not None
    found["status"] = str(image.status)
    found["digest"] = image.digest
    if image.status is ImageStatus.ERROR:
        found["reason"] = "\n".join(image.log.strip().splitlines()[-_REASON_LINES:])
    if log:
        found["log"] = image.log
    return found


@router.post(
    "",
    status_code=202,
    response_model=ImageSpec,
    openapi_extra=request_body(ImageSpec),
    summary="Create an image; it builds in the background (poll its status)",
    responses={409: {"description": "An image with this name exists"}},
)
async def create_image(
    space: Space, body: JsonBody, resources: ResourcesDep, functions: PythonDep
) -> Response:
    spec = await resources.create(IMAGES, IMAGES.parse_new(space, body))
    functions.note_image(spec)
    return _json(image_json(functions, spec, log=True, rebuild=True), 202)


@router.get("", summary="List images with their build status on this node")
async def list_images(
    space: Space, metadata: MetadataFilter, resources: ResourcesDep, functions: PythonDep
) -> Response:
    specs = await resources.list(IMAGES, space, metadata)
    return _json({"images": [image_json(functions, spec, log=False) for spec in specs]})


@router.get("/{name}", response_model=ImageSpec, summary="Get an image, its status and build log")
async def get_image(
    space: Space, name: Name, resources: ResourcesDep, functions: PythonDep
) -> Response:
    spec = await resources.get(IMAGES, space, name)
    return _json(image_json(functions, spec, log=True))


@router.put(
    "/{name}",
    status_code=202,
    response_model=ImageSpec,
    openapi_extra=request_body(ImageSpec),
    summary="Replace an image's requirements (or retry a failed build); functions using it "
    "are deployed again on the new build",
)
async def update_image(
    space: Space, name: Name, body: JsonBody, resources: ResourcesDep, functions: PythonDep
) -> Response:
    spec = await resources.update(IMAGES, space, name, body)
    functions.note_image(spec)
    return _json(image_json(functions, spec, log=True, rebuild=True), 202)


@router.delete("/{name}", status_code=204, summary="Delete an image that no function uses")
async def delete_image(
    space: Space, name: Name, resources: ResourcesDep, functions: PythonDep
) -> None:
    async def check_unused(spec: ImageSpec) -> None:
        users = await function_users(resources, space, lambda p: p.image == spec.name)
        if users:
            raise ValidationFailed(
                f'Image "{spec.name}" cannot be deleted: it is used by function(s) '
                f"{', '.join(users)}. Delete those first (eventgate function delete NAME)."
            )

    await resources.delete(IMAGES, space, name, check_unused)
    await functions.forget_image(space, name)
