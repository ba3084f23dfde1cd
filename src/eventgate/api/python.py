"""What the config API shares about python functions: the node's `PythonFunctions`, the kinds of
images and secrets in the store, the checks a python function passes before it is stored, and
the status shown beside it.
"""

from typing import Annotated, Any

from fastapi import Depends, Request

from eventgate.api.resources import FUNCTIONS, Kind, Resources
from eventgate.errors import Unavailable, ValidationFailed
from eventgate.functions import ImageSpec, PythonFunctions, SecretSpec
from eventgate.model import Function, PythonProvider
from eventgate.runtime import BundleTooLarge

IMAGES: Kind[Any] = Kind(
    collection="images", label="Image", model=ImageSpec, id_attr="name", list_key="images"
)
SECRETS: Kind[Any] = Kind(
    collection="secrets", label="Secret", model=SecretSpec, id_attr="name", list_key="secrets"
)
DEPLOY_WAIT = 30.0
"""How long a create or update of a python function waits for its deploy before answering
(with status CREATING if the image is still building)."""


def _python(request: Request) -> PythonFunctions:
    functions: PythonFunctions | None = getattr(request.app.state, "python", None)
    if functions is None:
        raise Unavailable("Python functions are not enabled on this node.")
    return functions


PythonDep = Annotated[PythonFunctions, Depends(_python)]


def python_of(request: Request) -> PythonFunctions | None:
    """The node's python functions, or None when it runs none (http functions still work)."""
    return getattr(request.app.state, "python", None)


async def check_python_function(
    resources: Resources, functions: PythonFunctions, function: Function
) -> None:
    """Before a python function is stored: its source fits and unpacks (413, 400), its image and
    secrets exist (400, saying how to create them)."""
    provider: PythonProvider = function.provider  # type: ignore[assignment]
    space, name = function.space, function.function_id
    size = len(provider.source) * 3 // 4
    limit = functions.max_source_bytes
    if size > limit:
        raise BundleTooLarge(
            f"The source is {size} bytes of .tar.gz; at most {limit} are accepted. Leave large "
            "files out of the folder, and put dependencies in the image's requirements."
        )
    if not await resources.exists(IMAGES, space, provider.image):
        raise ValidationFailed(
            f'Image "{provider.image}" not found in space "{space}". Create it first: '
            f"eventgate image create {provider.image} --requirements requirements.txt"
        )
    for secret in provider.secrets:
        if not await resources.exists(SECRETS, space, secret):
            raise ValidationFailed(
                f'Secret "{secret}" not found in space "{space}". Create it first: '
                f"eventgate secret create {secret} KEY=VALUE"
            )
    await functions.runtime.unpack(space, name, provider.source)


async def function_json(
    functions: PythonFunctions | None, function: Function, wait: float
) -> dict[str, object]:
    """A function as the API shows it: a python one with its status on this node."""
    found = function.to_json()
    if function.type == "python" and functions is not None:
        found.update(await functions.describe(function.space, function.function_id, wait))
    return found


async def function_users(resources: Resources, space: str, uses: Any) -> list[str]:
    """The python functions of a space for which `uses(provider)` holds."""
    return [
        function.function_id
        for function in await resources.list(FUNCTIONS, space)
        if function.type == "python" and uses(function.provider)
    ]
