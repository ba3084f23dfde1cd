"""How the client commands print: rich tables for people, JSON for scripts. (rich is imported
when something is printed, so that `eventgate serve` does not pay for it.)"""

import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

FC = TypeVar("FC", bound=Callable[..., Any])


@functools.cache
def out() -> "Console":
    """stdout. Piped output is not cut at 80 columns: rows stay whole for grep and friends."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)


@functools.cache
def err() -> "Console":
    """stderr: spinners, tracebacks, hints."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def output_option(function: FC) -> FC:
    """`-o/--output table|json`."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table: for people; json: the API's answer, for scripts.",
    )(function)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str) -> None:
    """A table of rows, or `empty` when there are none."""
    from rich.table import Table

    rows = list(rows)
    if not rows:
        out().print(empty)
        return
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("-" if value is None or value == "" else str(value) for value in row))
    out().print(grid)


def fields(pairs: Iterable[tuple[str, object]]) -> None:
    """`Name  value` lines, as knctl shows one resource."""
    from rich.table import Table

    grid = Table(box=None, show_header=False, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in pairs:
        grid.add_row(name, "-" if value is None or value == "" else str(value))
    out().print(grid)


def wait_while(
    what: str, poll: Callable[[], dict[str, Any]], busy: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll until `busy(answer)` is false, with a spinner on the terminal."""
    answer = poll()
    if not busy(answer):
        return answer
    with err().status(what):
        while busy(answer):
            time.sleep(0.25)
            answer = poll()
    return answer
