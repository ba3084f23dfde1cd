"""`eventgate function create|update|get|list|delete|invoke`: python functions from a folder."""

import base64
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from eventgate.client import ClientOptions
from eventgate.client.http import ClientError, ConfigApi
from eventgate.client.invocations import show_invocation
from eventgate.client.output import err, fields, output_option, print_json, table, wait_while

NOT_FOUND = "List the functions with `eventgate function list`."


@click.group()
def function() -> None:
    """Functions: Python source folders run with a handler, `handle(context, payload)`."""


def pack(source: Path) -> str:
    """The base64 `.tar.gz` of a folder (or of one file) for `provider.source`."""
    from eventgate.runtime.bundles import pack_directory

    if source.is_dir():
        return base64.b64encode(pack_directory(source)).decode("ascii")
    with tempfile.TemporaryDirectory(prefix="eventgate-source-") as folder:
        shutil.copy2(source, Path(folder) / source.name)
        return base64.b64encode(pack_directory(Path(folder))).decode("ascii")


def default_handler(source: Path) -> str:
    """`<module>.handle` when the source is one .py file or a folder with exactly one."""
    modules = [source] if source.is_file() else sorted(source.glob("*.py"))
    if len(modules) == 1 and modules[0].suffix == ".py":
        return f"{modules[0].stem}.handle"
    raise click.UsageError(
        f"{source} has {len(modules)} Python modules at its top: say which function handles "
        "calls with --handler MODULE.FUNCTION (e.g. --handler hello.handle)."
    )


def _duration(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return value  # ISO-8601 already; the API checks it
    return f"PT{seconds:g}S"


def _schema(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"{path} is not JSON: {error}") from None


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    return env


def _body(
    name: str,
    source: Path,
    image: str,
    handler: str | None,
    timeout: str | None,
    memory: int | None,
    concurrency: int | None,
    env: tuple[str, ...],
    secret: tuple[str, ...],
    schema_in: Path | None,
    schema_out: Path | None,
) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "image": image,
        "handler": handler or default_handler(source),
        "source": pack(source),
        "env": _env(env),
        "secrets": list(secret),
    }
    if timeout is not None:
        provider["timeout"] = _duration(timeout)
    if memory is not None:
        provider["memoryMB"] = memory
    if concurrency is not None:
        provider["concurrency"] = concurrency
    schemas = {"in": _schema(schema_in), "out": _schema(schema_out)}
    if any(value is not None for value in schemas.values()):
        provider["schema"] = {key: value for key, value in schemas.items() if value is not None}
    return {"functionId": name, "type": "python", "provider": provider}


def _deploying(answer: dict[str, Any]) -> bool:
    return answer.get("status") == "CREATING"


def _finish(api: ConfigApi, name: str, answer: dict[str, Any], output: str) -> None:
    answer = wait_while(
        f"Deploying function {name}...", lambda: api.get(f"functions/{name}"), _deploying
    )
    if output == "json":
        print_json(answer)
    else:
        _show(answer)
    if answer.get("status") == "ERROR":
        raise ClientError(
            f"function {name} is not ready: {answer.get('reason')}. Fix it, then run "
            f"`eventgate function update {name} DIR ...`."
        )


def _show(answer: dict[str, Any]) -> None:
    provider = answer.get("provider", {})
    if answer.get("type") != "python":
        fields(
            [
                ("Name", answer.get("functionId")),
                ("Type", answer.get("type")),
                ("URL", provider.get("url")),
                ("Mode", provider.get("mode")),
            ]
        )
        return
    instances = answer.get("instances") or {}
    schema = provider.get("schema") or {}
    fields(
        [
            ("Name", answer.get("functionId")),
            ("Status", answer.get("status")),
            ("Image", provider.get("image")),
            ("Handler", provider.get("handler")),
            ("Timeout", provider.get("timeout") or "node default"),
            ("Memory", f"{provider['memoryMB']} MB" if provider.get("memoryMB") else "no limit"),
            ("Concurrency", provider.get("concurrency") or 4),
            ("Secrets", ", ".join(provider.get("secrets") or [])),
            ("Env", ", ".join(sorted(provider.get("env") or {}))),
            ("Schema", ", ".join(sorted(schema))),
            ("Version", answer.get("version")),
            (
                "Processes",
                (
                    f"fork server {'running' if instances.get('serverRunning') else 'stopped'}, "
                    f"{instances.get('workers', 0)} workers ({instances.get('busy', 0)} busy)"
                )
                if instances
                else None,
            ),
        ]
    )
    if answer.get("status") == "ERROR":
        err().print(f"\n[bold]Reason:[/bold] {answer.get('reason')}", markup=True)
        if answer.get("traceback"):
            err().print("\n".join(answer["traceback"]), markup=False)


def _create_options(command: Any) -> Any:
    for option in reversed(
        [
            click.argument("name"),
            click.argument("source", type=click.Path(exists=True, path_type=Path)),
            click.option("--image", required=True, help="The image to run on (its requirements)."),
            click.option(
                "--handler",
                help="MODULE.FUNCTION called with (context, payload); default: <the only "
                "module>.handle.",
            ),
            click.option("--timeout", help="Per call: ISO-8601 (PT30S) or seconds."),
            click.option("--memory", type=click.IntRange(16), help="Memory limit per call, MB."),
            click.option("--concurrency", type=click.IntRange(1, 1000), help="Calls at once."),
            click.option("--env", multiple=True, metavar="NAME=VALUE", help="Repeatable."),
            click.option("--secret", multiple=True, metavar="NAME", help="Repeatable."),
            click.option(
                "--schema-in",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="A JSON Schema the payload must match.",
            ),
            click.option(
                "--schema-out",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="A JSON Schema the result must match.",
            ),
            output_option,
            click.pass_obj,
        ]
    ):
        command = option(command)
    return command


@function.command("create")
@_create_options
def create(options: ClientOptions, output: str, **given: Any) -> None:
    """Create function NAME from SOURCE (a folder or one .py file) and deploy it."""
    name = given["name"]
    with ConfigApi(options) as api:
        answer = api.post(
            "functions",
            _body(**given),
            hints={
                409: f"Replace it with `eventgate function update {name} DIR ...`.",
            },
        )
        _finish(api, name, answer, output)


@function.command("update")
@_create_options
def update(options: ClientOptions, output: str, **given: Any) -> None:
    """Replace function NAME with SOURCE; calls in flight finish on the old version."""
    name = given["name"]
    with ConfigApi(options) as api:
        answer = api.put(f"functions/{name}", _body(**given), hints={404: NOT_FOUND})
        _finish(api, name, answer, output)


@function.command("get")
@click.argument("name")
@output_option
@click.pass_obj
def get(options: ClientOptions, name: str, output: str) -> None:
    """Show function NAME: status (with the traceback if it failed to load) and settings."""
    with ConfigApi(options) as api:
        answer = api.get(f"functions/{name}", hints={404: NOT_FOUND})
    if output == "json":
        print_json(answer)
    else:
        _show(answer)


@function.command("list")
@output_option
@click.pass_obj
def list_functions(options: ClientOptions, output: str) -> None:
    """List the functions of the space."""
    with ConfigApi(options) as api:
        answer = api.get("functions")
    if output == "json":
        print_json(answer)
        return
    rows = []
    for each in answer["functions"]:
        provider = each.get("provider", {})
        python = each.get("type") == "python"
        rows.append(
            (
                each["functionId"],
                each.get("type"),
                each.get("status") if python else "",
                provider.get("image") if python else provider.get("url"),
                provider.get("handler") if python else provider.get("mode"),
            )
        )
    table(
        ["NAME", "TYPE", "STATUS", "IMAGE / URL", "HANDLER / MODE"],
        rows,
        empty="No functions. Create one with `eventgate function create NAME DIR --image IMAGE`.",
    )


@function.command("delete")
@click.argument("name")
@click.pass_obj
def delete(options: ClientOptions, name: str) -> None:
    """Delete function NAME (no subscription may use it)."""
    with ConfigApi(options) as api:
        api.delete(f"functions/{name}", hints={404: NOT_FOUND})
    click.echo(f"Deleted function {name}.")


@function.command("invoke")
@click.argument("name")
@click.option("--input", "payload", metavar="JSON", help="The payload (JSON); default: null.")
@click.option("--no-wait", is_flag=True, help="Start it and print the invocation id.")
@output_option
@click.pass_obj
def invoke(
    options: ClientOptions, name: str, payload: str | None, no_wait: bool, output: str
) -> None:
    """Run function NAME with a payload; print its result and what it printed."""
    try:
        body = json.loads(payload) if payload is not None else None
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--input") from None
    with ConfigApi(options) as api:
        status, answer = api.request(
            "POST",
            f"functions/{name}/invocations",
            body=body,
            params={"blocking": "false" if no_wait else None},
            hints={
                404: NOT_FOUND,
                429: "The function is busy: retry later, or raise its --concurrency.",
            },
            ok=(400, 500, 502, 504),
        )
    if output == "json":
        print_json(answer)
    elif no_wait:
        click.echo(answer["invocationId"])
        err().print(f"See it with `eventgate invocation get {answer['invocationId']}`.")
    else:
        show_invocation(answer)
    if status >= 400:
        raise SystemExit(1)
