"""The python-function resources kept in the config store beside functions: images and secrets.

Both are specs, shared by every node of a cluster: an image record is the requirements text (each
node builds its own virtual environment from it, on first need), a secret record holds its
values (served to functions, never returned by the API).
"""

from typing import Literal

from pydantic import Field, field_validator

from eventgate.model import DEFAULT_SPACE, NAME_PATTERN, Resource

MAX_REQUIREMENTS_CHARS = 64 * 1024
MAX_SECRET_BYTES = 64 * 1024


class ImageSpec(Resource):
    """An image: the runtime (`python3`, the node's own interpreter) plus a requirements.txt."""

    space: str = DEFAULT_SPACE
    name: str = Field(pattern=NAME_PATTERN, min_length=1)
    runtime: Literal["python3"] = "python3"
    requirements: str = Field(
        default="",
        max_length=MAX_REQUIREMENTS_CHARS,
        description="requirements.txt text: what pip/uv installs into the image",
    )
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("requirements")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("requirements: must be text")
        return value


class SecretSpec(Resource):
    """A named set of values. A function that names it finds its keys in
    `context["secrets"]` (the keys of all its secrets merged, as in Dispatch)."""

    space: str = DEFAULT_SPACE
    name: str = Field(pattern=NAME_PATTERN, min_length=1)
    secrets: dict[str, str] = Field(default_factory=dict, description="write-only values")
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("secrets")
    @classmethod
    def _bounded(cls, value: dict[str, str]) -> dict[str, str]:
        size = sum(len(key) + len(text.encode()) for key, text in value.items())
        if size > MAX_SECRET_BYTES:
            raise ValueError(f"secrets: at most {MAX_SECRET_BYTES} bytes of keys and values")
        for key in value:
            if not key or len(key) > 256 or not key.isprintable():
                raise ValueError(f"secrets: {key!r} is not a usable key")
        return value

    def describe(self) -> dict[str, object]:
        """What the API shows: the keys, never the values."""
        return {
            "space": self.space,
            "name": self.name,
            "keys": sorted(self.secrets),
            "metadata": self.metadata,
        }


__all__ = ["ImageSpec", "SecretSpec"]
