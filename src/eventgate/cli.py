"""The `eventgate` command: `eventgate serve` starts a node."""

from pathlib import Path

import click

from eventgate import __version__
from eventgate.settings import Settings, default_data_dir


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eventgate")
def main() -> None:
    """eventgate: an event gateway and function runtime."""


@main.command()
@click.option(
    "--host",
    envvar="EVENTGATE_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address both ports listen on.",
)
@click.option(
    "--events-port",
    envvar="EVENTGATE_EVENTS_PORT",
    type=int,
    default=4000,
    show_default=True,
    help="Port of the events API (the data plane).",
)
@click.option(
    "--config-port",
    envvar="EVENTGATE_CONFIG_PORT",
    type=int,
    default=4001,
    show_default=True,
    help="Port of the config API.",
)
@click.option(
    "--data-dir",
    envvar="EVENTGATE_DATA_DIR",
    type=click.Path(path_type=Path),
    default=default_data_dir,
    show_default="$XDG_DATA_HOME/eventgate or ~/.local/share/eventgate",
    help="Where the embedded store keeps its files.",
)
@click.option(
    "--log-level",
    envvar="EVENTGATE_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--log-format",
    envvar="EVENTGATE_LOG_FORMAT",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
)
def serve(
    host: str, events_port: int, config_port: int, data_dir: Path, log_level: str, log_format: str
) -> None:
    """Start a node: the events API and the config API. SIGTERM or SIGINT drains, then exits 0."""
    import uvloop

    from eventgate.app import serve as serve_node
    from eventgate.observability.logs import configure_logging

    settings = Settings(
        host=host,
        events_port=events_port,
        config_port=config_port,
        data_dir=data_dir,
        log_level=log_level,
        log_format=log_format,
    )
    configure_logging(settings.log_level, settings.log_format)
    uvloop.run(serve_node(settings))
