"""The client commands of `eventgate` (images, functions, invocations, secrets): they talk to a
node's config API at `--config-url` (also `EVENTGATE_CONFIG_URL`, default
`http://127.0.0.1:4001`), in the style of the Dispatch CLI and knctl: tables for people,
`--output json` for scripts."""

from dataclasses import dataclass

import click

DEFAULT_CONFIG_URL = "http://127.0.0.1:4001"


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The global options the client commands share (set on the `eventgate` group)."""

    config_url: str = DEFAULT_CONFIG_URL
    space: str = "default"


def register(group: click.Group) -> None:
    """Add the client command groups to the `eventgate` command."""
    from eventgate.client import functions, images, invocations, secrets

    for command in (images.image, functions.function, invocations.invocation, secrets.secret):
        group.add_command(command)
