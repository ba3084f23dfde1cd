"""The `eventgate` command: `eventgate serve` starts a node."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from eventgate import __version__
from eventgate.client import DEFAULT_CONFIG_URL, ClientOptions, register
from eventgate.settings import Settings, default_data_dir

FC = TypeVar("FC", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eventgate")
@click.option(
    "--config-url",
    envvar="EVENTGATE_CONFIG_URL",
    default=DEFAULT_CONFIG_URL,
    show_default=True,
    show_envvar=True,
    help="The config API the client commands (image, function, ...) talk to.",
)
@click.option(
    "--space",
    envvar="EVENTGATE_SPACE",
    default="default",
    show_default=True,
    show_envvar=True,
    help="The space of the resources they manage.",
)
@click.pass_context
def main(ctx: click.Context, config_url: str, space: str) -> None:
    """eventgate: an event gateway and function runtime."""
    ctx.obj = ClientOptions(config_url, space)


class Duration(click.ParamType):
    """Seconds (`300`, `0.5`) or an ISO-8601 duration (`PT5M`, `P7D`)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        from eventgate.model import parse_duration

        try:
            return float(value) if value.replace(".", "", 1).isdigit() else parse_duration(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


DURATION = Duration()


def _option(name: str, **kwargs: Any) -> Callable[[FC], FC]:
    """A `serve` flag that is also settable as `EVENTGATE_<NAME>` and names a Settings field."""
    flag = name.split("/")[0]  # `--flag/--no-flag`: the variable is named after `--flag`
    envvar = "EVENTGATE_" + flag.removeprefix("--").replace("-", "_").upper()
    kwargs.setdefault("show_default", True)
    return click.option(name, envvar=envvar, show_envvar=True, **kwargs)


@main.command()
@_option("--host", default="127.0.0.1", help="Address both ports listen on.")
@_option("--events-port", type=int, default=4000, help="Port of the events API (data plane).")
@_option("--config-port", type=int, default=4001, help="Port of the config API.")
@_option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=default_data_dir,
    show_default="$XDG_DATA_HOME/eventgate or ~/.local/share/eventgate",
    help="Where the embedded store keeps its files.",
)
@_option(
    "--store",
    default="sqlite",
    help="Config store: 'sqlite' (embedded, in the data dir) or 'etcd://host:port[,host:port]'.",
)
@_option("--store-prefix", default="/eventgate/", help="Key prefix in etcd.")
@_option(
    "--bus",
    default="sqlite",
    help="Async delivery: 'sqlite' (embedded, in the data dir) or 'nats://host:port[,host:port]'"
    " (NATS JetStream, shared by a cluster).",
)
@_option("--bus-name", default="eventgate", help="Prefix of the bus's JetStream streams.")
@_option("--bus-replicas", type=int, default=1, help="Replicas of each JetStream stream.")
@_option(
    "--log-level",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@_option("--log-format", default="text", type=click.Choice(["text", "json"]))
@_option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    help="Processes serving the events port (SO_REUSEPORT); the first also serves the config API.",
)
@_option(
    "--fast-lane/--no-fast-lane",
    default=True,
    help="Answer plain requests to http functions on the fast lane (same answers).",
)
@_option(
    "--function-timeout",
    type=DURATION,
    default="PT5S",
    help="Per-call timeout of functions that set none (seconds or ISO-8601).",
)
@_option(
    "--dedupe-window",
    type=DURATION,
    default="PT5M",
    help="An event whose source and id were accepted this recently is not delivered again.",
)
@_option(
    "--delivery-lease",
    type=DURATION,
    default="PT30S",
    help="Extra time a claimed delivery is held past its timeout before it is redelivered.",
)
@_option("--retention", type=DURATION, default="P7D", help="How long finished events are kept.")
@_option("--retention-events", type=int, default=1_000_000, help="At most this many events kept.")
@_option(
    "--worker-idle-timeout",
    type=DURATION,
    default="PT30S",
    help="An idle python function worker exits after this long.",
)
@_option(
    "--scale-to-zero-after",
    type=DURATION,
    default="PT5M",
    help="A python function with no calls for this long stops its fork server.",
)
@_option(
    "--function-queue-limit",
    type=int,
    default=64,
    help="Calls that may wait for a busy python function; more get 429.",
)
@_option(
    "--max-source-bytes",
    type=int,
    default=1024 * 1024,
    help="Largest python function source (.tar.gz) accepted; larger ones get 413.",
)
@_option(
    "--invocation-retention",
    type=DURATION,
    default="P1D",
    help="How long python function invocation records are kept.",
)
@_option("--invocation-records", type=int, default=10_000, help="At most this many kept.")
def serve(**options: Any) -> None:
    """Start a node: the events API and the config API. SIGTERM or SIGINT drains, then exits 0."""
    import uvloop

    from eventgate.app import serve as serve_node
    from eventgate.observability.logs import configure_logging

    settings = Settings(**options)
    configure_logging(settings.log_level, settings.log_format)
    try:
        uvloop.run(serve_node(settings))
    except OSError as error:
        raise click.ClickException(f"cannot start: {error}") from error


register(main)
