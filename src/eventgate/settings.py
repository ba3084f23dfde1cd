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
    # Async delivery bus: "sqlite" (the embedded queue, under data_dir) or
    # "nats://host:port[,host:port...]" (NATS JetStream, shared by a cluster's nodes);
    # `bus_name` prefixes its streams and subjects, `bus_replicas` is their replica count.
    bus: str = "sqlite"
    bus_name: str = "eventgate"
    bus_replicas: int = 1
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
    # Processes serving the events port (SO_REUSEPORT); the first also serves the config API.
    workers: int = 1
    # Plain requests to http functions skip the general path (same answers).
    fast_lane: bool = True
    # Python functions (their images, sources and homes live under data_dir/runtime, their
    # invocation records in data_dir/invocations.db). An idle worker exits after
    # `worker_idle_timeout`; a function with no calls for `scale_to_zero_after` stops its fork
    # server; past `concurrency` calls, `function_queue_limit` callers wait, the next get 429.
    worker_idle_timeout: float = 30.0
    scale_to_zero_after: float = 300.0
    function_queue_limit: int = 64
    max_source_bytes: int = 1024 * 1024  # a function's .tar.gz (fits etcd's 1.5 MiB requests)
    invocation_retention: float = 86400.0
    invocation_records: int = 10_000
