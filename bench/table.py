"""The one table `run.py` prints: each figure beside the reference measured in the same run.

A scenario's result may carry `rows` (see `row`); for one that does not, its `*_vs_*` ratios
are listed as they are, so every scenario shows up in the table.
"""

from collections.abc import Iterable
from typing import Any


def row(
    scenario: str,
    figure: str,
    value: float,
    reference: float,
    reference_name: str,
    *,
    unit: str = "",
    aim: str = "",
    ratio: float | None = None,
) -> dict[str, Any]:
    """One line of the table: `value` beside `reference`, and their ratio (or `ratio` given,
    e.g. for added latencies). `aim` is the issue's target for the ratio (`>= 1.0`, `<= 1.5`)."""
    if ratio is None:
        ratio = value / reference if reference else float("nan")
    return {
        "scenario": scenario,
        "figure": figure,
        "value": value,
        "unit": unit,
        "reference": reference,
        "reference_name": reference_name,
        "ratio": ratio,
        "aim": aim,
        "met": _met(ratio, aim),
    }


def _met(ratio: float, aim: str) -> bool | None:
    if not aim:
        return None
    sign, _, target = aim.partition(" ")
    return ratio >= float(target) if sign == ">=" else ratio <= float(target)


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The table rows of one scenario's result."""
    if "rows" in result:
        return list(result["rows"])
    name = str(result.get("scenario", "?"))
    return [
        row(name, key, float("nan"), float("nan"), key.partition("_vs_")[2], ratio=value)
        for key, value in result.items()
        if "_vs_" in key and isinstance(value, int | float)
    ]


def _number(value: float, unit: str) -> str:
    if value != value:  # NaN: a ratio-only row
        return "-"
    if unit in ("req/s", "MiB", "KiB", "MB/s") or abs(value) >= 100:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:.3f} {unit}".strip()


def print_table(results: Iterable[dict[str, Any]]) -> None:
    """Print every row of every result as one table."""
    lines = [("scenario", "figure", "eventgate", "reference", "", "ratio", "aim")]
    for result in results:
        for each in rows_of(result):
            verdict = {True: "met", False: "not met", None: ""}[each["met"]]
            lines.append(
                (
                    each["scenario"],
                    each["figure"],
                    _number(each["value"], each["unit"]),
                    _number(each["reference"], each["unit"]),
                    each["reference_name"],
                    f"{each['ratio']:.2f}x",
                    f"{each['aim']} {verdict}".strip(),
                )
            )
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    for index, line in enumerate(lines):
        cells = [
            cell.rjust(width) if column in (2, 3, 5) else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
