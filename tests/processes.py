"""Real processes for integration tests: eventgate nodes and example functions on free ports."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def accepts_connections(port: int) -> bool:
    """Whether something listens on loopback `port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def check_running(process: "subprocess.Popen[bytes] | None", name: str, log_path: Path) -> None:
    """Fail, with its log, if a server process being waited for has exited."""
    assert process is not None
    if process.poll() is not None:
        raise AssertionError(f"{name} exited early:\n{log_path.read_text()}")


def stop_process(process: "subprocess.Popen[bytes] | None", timeout: float) -> None:
    """SIGTERM, as an orderly shutdown; SIGKILL if it lingers past `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EventgateProcess:
    """`eventgate serve` as a subprocess, with its ports and data dir."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.events_port = free_port()
        self.config_port = free_port()
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.events_port}"

    @property
    def config_url(self) -> str:
        return f"http://127.0.0.1:{self.config_port}"

    def start(self) -> "EventgateProcess":
        env = {
            **os.environ,
            "EVENTGATE_EVENTS_PORT": str(self.events_port),
            "EVENTGATE_CONFIG_PORT": str(self.config_port),
            "EVENTGATE_DATA_DIR": str(self.data_dir),
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventgate", "serve"], env=env, stdout=log, stderr=log
        )
        wait_until(self._ready, STARTUP_TIMEOUT, f"eventgate to serve (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        check_running(self.process, "eventgate", self.log_path)
        try:
            return httpx.get(f"{self.config_url}/v1/status", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        stop_process(self.process, 15)


class EchoProcess:
    """`examples/echo/echo.py` as a subprocess: the tutorial's echo function or container."""

    def __init__(self, compute_type: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "echo" / "echo.py"),
                "--port",
                str(self.port),
                "--compute-type",
                compute_type,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until(lambda: accepts_connections(self.port), STARTUP_TIMEOUT, "the echo function")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        """Stop it and return what it logged."""
        self.process.terminate()
        _, stderr = self.process.communicate(timeout=10)
        return stderr.decode()
