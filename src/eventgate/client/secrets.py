"""`eventgate secret create|get|list|delete`: values for functions, never shown again."""

import json
from pathlib import Path

import click

from eventgate.client import ClientOptions
from eventgate.client.http import ConfigApi
from eventgate.client.output import fields, output_option, print_json, table

NOT_FOUND = "List the secrets with `eventgate secret list`."


@click.group()
def secret() -> None:
    """Secrets: named values a function finds in context["secrets"]."""


def _values(pairs: tuple[str, ...], from_file: Path | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if from_file is not None:
        try:
            loaded = json.loads(from_file.read_text())
        except json.JSONDecodeError as error:
            raise click.BadParameter(f"{from_file} is not JSON: {error}") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter(f"{from_file} must hold a JSON object of strings")
        values.update({str(key): str(value) for key, value in loaded.items()})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE")
        values[key] = value
    return values


@secret.command("create")
@click.argument("name")
@click.argument("values", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='A JSON object of values, e.g. {"password": "..."}.',
)
@click.option("--update", is_flag=True, help="Replace the values of an existing secret.")
@output_option
@click.pass_obj
def create(
    options: ClientOptions,
    name: str,
    values: tuple[str, ...],
    from_file: Path | None,
    update: bool,
    output: str,
) -> None:
    """Create secret NAME with KEY=VALUE pairs (or --from-file)."""
    body = {"name": name, "secrets": _values(values, from_file)}
    with ConfigApi(options) as api:
        if update:
            answer = api.put(f"secrets/{name}", body, hints={404: NOT_FOUND})
        else:
            answer = api.post(
                "secrets",
                body,
                hints={409: f"Replace its values with `eventgate secret create {name} --update`."},
            )
    _print(answer, output)


def _print(answer: dict, output: str) -> None:
    if output == "json":
        print_json(answer)
    else:
        fields([("Name", answer["name"]), ("Keys", ", ".join(answer.get("keys", [])))])


@secret.command("get")
@click.argument("name")
@output_option
@click.pass_obj
def get(options: ClientOptions, name: str, output: str) -> None:
    """Show secret NAME's keys (values are never shown)."""
    with ConfigApi(options) as api:
        _print(api.get(f"secrets/{name}", hints={404: NOT_FOUND}), output)


@secret.command("list")
@output_option
@click.pass_obj
def list_secrets(options: ClientOptions, output: str) -> None:
    """List the secrets of the space (names and keys)."""
    with ConfigApi(options) as api:
        answer = api.get("secrets")
    if output == "json":
        print_json(answer)
        return
    table(
        ["NAME", "KEYS"],
        [(each["name"], ", ".join(each.get("keys", []))) for each in answer["secrets"]],
        empty="No secrets. Create one with `eventgate secret create NAME KEY=VALUE`.",
    )


@secret.command("delete")
@click.argument("name")
@click.pass_obj
def delete(options: ClientOptions, name: str) -> None:
    """Delete secret NAME (no function may use it)."""
    with ConfigApi(options) as api:
        api.delete(f"secrets/{name}", hints={404: NOT_FOUND})
    click.echo(f"Deleted secret {name}.")
