"""`eventgate invocation get|list`: what a python function was given, printed and answered."""

import json
from typing import Any

import click

from eventgate.client import ClientOptions
from eventgate.client.http import ConfigApi
from eventgate.client.output import err, fields, out, output_option, print_json, table


@click.group()
def invocation() -> None:
    """Invocations: records of python function calls (kept for a while by the node)."""


def show_invocation(record: dict[str, Any]) -> None:
    """A record for people: the result (or error), then the logs, then where it came from."""
    context = record.get("context") or {}
    error = context.get("error")
    logs = context.get("logs") or {}
    if error is None and record.get("status") != "RUNNING":
        click.echo(json.dumps(record.get("payload"), indent=2, ensure_ascii=False))
    for stream in ("stdout", "stderr"):
        lines = logs.get(stream) or []
        if lines:
            out().print(f"[bold]{stream}:[/bold]")
            for line in lines:
                out().print(f"  {line}", markup=False)
    if error is not None:
        err().print(f"[bold red]{error.get('type')}[/bold red]: {error.get('message')}")
        for line in error.get("traceback") or []:
            err().print(line, markup=False)
    duration = context.get("durationMs")
    details = [
        f"invocation {record.get('invocationId') or context.get('invocationId')}",
        record.get("status", ""),
    ]
    if duration is not None:
        details.append(f"{duration:g} ms" + (", cold start" if context.get("coldStart") else ""))
    err().print(f"({', '.join(detail for detail in details if detail)})", style="dim")


@invocation.command("get")
@click.argument("invocation_id", metavar="ID")
@output_option
@click.pass_obj
def get(options: ClientOptions, invocation_id: str, output: str) -> None:
    """Show invocation ID: status, result or error, and logs."""
    with ConfigApi(options) as api:
        record = api.get(
            f"invocations/{invocation_id}",
            hints={404: "List recent ones with `eventgate invocation list`."},
        )
    if output == "json":
        print_json(record)
        return
    fields(
        [
            ("Function", record.get("functionId")),
            ("Status", record.get("status")),
            ("Trigger", record.get("trigger")),
            ("Created", record.get("createdTime")),
            ("Finished", record.get("finishedTime")),
        ]
    )
    click.echo()
    show_invocation(record)


@invocation.command("list")
@click.option("--function", "function_id", metavar="NAME", help="Only this function's.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@output_option
@click.pass_obj
def list_invocations(
    options: ClientOptions, function_id: str | None, limit: int, output: str
) -> None:
    """List recent invocations, newest first."""
    with ConfigApi(options) as api:
        answer = api.get("invocations", params={"functionId": function_id, "limit": limit})
    if output == "json":
        print_json(answer)
        return
    rows = []
    for record in answer["invocations"]:
        context = record.get("context") or {}
        error = context.get("error") or {}
        duration = context.get("durationMs")
        rows.append(
            (
                record["invocationId"],
                record.get("functionId"),
                record.get("status"),
                error.get("type"),
                record.get("trigger"),
                (record.get("createdTime") or "").replace("T", " ")[:19],
                f"{duration:g} ms" if duration is not None else None,
                "yes" if context.get("coldStart") else "",
            )
        )
    table(
        ["ID", "FUNCTION", "STATUS", "ERROR", "TRIGGER", "CREATED", "DURATION", "COLD"],
        rows,
        empty="No invocations yet. Run one with `eventgate function invoke NAME`.",
    )
