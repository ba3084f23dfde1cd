"""`eventgate image create|update|get|list|delete`: images are a runtime plus requirements."""

from pathlib import Path
from typing import Any

import click

from eventgate.client import ClientOptions
from eventgate.client.http import ClientError, ConfigApi
from eventgate.client.output import err, fields, output_option, print_json, table, wait_while

NOT_FOUND = "List the images with `eventgate image list`."


@click.group()
def image() -> None:
    """Images: Python plus the requirements your functions need, built once per node."""


def _requirements(path: Path | None) -> str:
    return path.read_text() if path is not None else ""


def _building(answer: dict[str, Any]) -> bool:
    return answer.get("status") == "CREATING"


def _finish(api: ConfigApi, name: str, answer: dict[str, Any], wait: bool, output: str) -> None:
    if wait:
        answer = wait_while(
            f"Building image {name}...", lambda: api.get(f"images/{name}"), _building
        )
    if output == "json":
        print_json(answer)
    else:
        _show(answer, log=False)
    if answer.get("status") == "ERROR":
        raise ClientError(
            f"image {name} failed to build. Fix the requirements, then run "
            f"`eventgate image update {name} --requirements FILE` (the log: "
            f"`eventgate image get {name} --log`)."
        )


def _show(answer: dict[str, Any], *, log: bool) -> None:
    requirements = [
        line.strip()
        for line in answer.get("requirements", "").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    fields(
        [
            ("Name", answer.get("name")),
            ("Status", answer.get("status")),
            ("Runtime", answer.get("runtime")),
            ("Requirements", ", ".join(requirements) or "none"),
            ("Digest", answer.get("digest")),
        ]
    )
    if answer.get("status") == "ERROR" and answer.get("reason") and not log:
        err().print(f"\n[bold]The installer said:[/bold]\n{answer['reason']}", markup=True)
    if log:
        click.echo("\nBuild log:\n" + (answer.get("log") or "(empty)"))


REQUIREMENTS = click.option(
    "--requirements",
    "-r",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A requirements.txt: what to install into the image (none: the standard library).",
)
NO_WAIT = click.option("--no-wait", is_flag=True, help="Answer at once; do not wait for the build.")


@image.command("create")
@click.argument("name")
@REQUIREMENTS
@NO_WAIT
@output_option
@click.pass_obj
def create(
    options: ClientOptions, name: str, requirements: Path | None, no_wait: bool, output: str
) -> None:
    """Create image NAME from a requirements file and wait for its build."""
    with ConfigApi(options) as api:
        answer = api.post(
            "images",
            {"name": name, "requirements": _requirements(requirements)},
            hints={409: f"Change its requirements with `eventgate image update {name} -r FILE`."},
        )
        _finish(api, name, answer, not no_wait, output)


@image.command("update")
@click.argument("name")
@REQUIREMENTS
@NO_WAIT
@output_option
@click.pass_obj
def update(
    options: ClientOptions, name: str, requirements: Path | None, no_wait: bool, output: str
) -> None:
    """Replace image NAME's requirements (or retry a failed build); its functions follow."""
    with ConfigApi(options) as api:
        answer = api.put(
            f"images/{name}",
            {"requirements": _requirements(requirements)},
            hints={404: NOT_FOUND},
        )
        _finish(api, name, answer, not no_wait, output)


@image.command("get")
@click.argument("name")
@click.option("--log", is_flag=True, help="Also print the build log.")
@output_option
@click.pass_obj
def get(options: ClientOptions, name: str, log: bool, output: str) -> None:
    """Show image NAME: its status on the node, requirements and build log."""
    with ConfigApi(options) as api:
        answer = api.get(f"images/{name}", hints={404: NOT_FOUND})
    if output == "json":
        print_json(answer)
    else:
        _show(answer, log=log)


@image.command("list")
@output_option
@click.pass_obj
def list_images(options: ClientOptions, output: str) -> None:
    """List the images of the space."""
    with ConfigApi(options) as api:
        answer = api.get("images")
    if output == "json":
        print_json(answer)
        return
    rows = [
        (
            each["name"],
            each.get("status"),
            sum(
                1
                for line in each.get("requirements", "").splitlines()
                if line.strip() and not line.strip().startswith("#")
            ),
            each.get("digest"),
        )
        for each in answer["images"]
    ]
    table(
        ["NAME", "STATUS", "REQUIREMENTS", "DIGEST"],
        rows,
        empty="No images. Create one with `eventgate image create NAME -r requirements.txt`.",
    )


@image.command("delete")
@click.argument("name")
@click.pass_obj
def delete(options: ClientOptions, name: str) -> None:
    """Delete image NAME (no function may use it)."""
    with ConfigApi(options) as api:
        api.delete(f"images/{name}", hints={404: NOT_FOUND})
    click.echo(f"Deleted image {name}.")
