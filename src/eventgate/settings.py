"""One settings object for a node, built from flags and `EVENTGATE_*` variables and passed down."""

import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    """Per-user data directory: `$XDG_DATA_HOME/eventgate`, else `~/.local/share/eventgate`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "eventgate"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one node needs to start. Modules receive this; none reads the environment."""

    host: str = "127.0.0.1"
    events_port: int = 4000
    config_port: int = 4001
    data_dir: Path = Path(".eventgate")
    # Config store: "sqlite" (embedded, under data_dir) or "etcd://host:port[,host:port...]".
    store: str = "sqlite"
    store_prefix: str = "/eventgate/"
    log_level: str = "info"
    log_format: str = "text"
    # Data plane limits.
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 10 * 1024 * 1024
    read_timeout: float = 60.0
    idle_timeout: float = 75.0
    # Default per-call timeout for functions that do not set one.
    function_timeout: float = 5.0
    # How long a SIGTERM/SIGINT drain waits for in-flight requests and deliveries.
    drain_timeout: float = 30.0
    # Async delivery (the queue is `queue.db` under data_dir). An event whose source and id were
    # accepted within `dedupe_window` seconds is answered 202 again but not delivered twice.
    dedupe_window: float = 300.0
    # A claimed delivery is leased for its attempt's timeout plus this; if the node dies, it is
    # delivered again once the lease runs out.
    delivery_lease: float = 30.0
    # Finished events (and their attempts) are kept this long, and at most this many events.
    retention: float = 7 * 86400.0
    retention_events: int = 1_000_000
    # Events in one batched-mode request.
    max_batch: int = 1000
