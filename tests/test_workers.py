"""`eventgate serve --workers 2`: two processes answer on one events port (SO_REUSEPORT), the
primary's `/v1/metrics` counts both, and the secondary goes when the primary does."""

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import EventgateProcess, wait_until

LISTEN, ESTABLISHED = "0A", "01"


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def sockets(pid: int, port: int, state: str) -> int:
    """How many of `pid`'s TCP sockets on local `port` are in `state`."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rpartition(":")[2], 16)
        if local_port == port and fields[3] == state and fields[9] in inodes:
            count += 1
    return count


def ask(port: int) -> socket.socket:
    """A new connection that has had one answer (and stays open)."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"GET /nobody HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = b""
    while b"no function" not in answer:
        chunk = conn.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 404 ")
    return conn


@pytest.fixture
def node(tmp_path: Path) -> Iterator[EventgateProcess]:
    process = EventgateProcess(tmp_path / "data", {"EVENTGATE_WORKERS": "2"}).start()
    yield process
    process.stop()


def test_two_workers_answer_and_metrics_count_both(node: EventgateProcess) -> None:
    assert node.process is not None
    primary = node.process.pid
    wait_until(lambda: len(children(primary)) == 1, 20, "the second worker to start")
    (secondary,) = children(primary)
    wait_until(lambda: sockets(secondary, node.events_port, LISTEN) == 1, 20, "it to listen too")
    connections = []
    try:
        while len(connections) < 200 and not all(
            sockets(pid, node.events_port, ESTABLISHED) for pid in (primary, secondary)
        ):
            connections.append(ask(node.events_port))
        assert sockets(primary, node.events_port, ESTABLISHED) > 0
        assert sockets(secondary, node.events_port, ESTABLISHED) > 0
    finally:
        for conn in connections:
            conn.close()

    def counted() -> float:
        text = httpx.get(f"{node.config_url}/v1/metrics", timeout=5).text
        line = next(
            (line for line in text.splitlines() if line.startswith("eventgate_events_requests")),
            " 0",
        )
        return float(line.rpartition(" ")[2])

    wait_until(lambda: counted() == len(connections), 20, "/v1/metrics to count both workers")

    node.signal(signal.SIGTERM)
    assert node.wait() == 0
    wait_until(lambda: not alive(secondary), 20, "the second worker to stop")


def test_the_second_worker_stops_when_the_primary_dies(node: EventgateProcess) -> None:
    assert node.process is not None
    primary = node.process.pid
    wait_until(lambda: len(children(primary)) == 1, 20, "the second worker to start")
    (secondary,) = children(primary)
    node.kill()
    wait_until(lambda: not alive(secondary), 20, "the orphaned worker to stop")
