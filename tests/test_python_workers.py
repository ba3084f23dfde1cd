"""Python functions on `eventgate serve --workers 2`: a function called through the events port
runs in whichever worker the kernel gave the connection, every worker uses the image the primary
built, and the primary's config API finds every invocation, whichever worker ran it (a shared
invocation log stores a record before the call answers)."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventgate.functions.invocations import Invocation, InvocationLog
from eventgate.runtime import Execution
from tests.processes import wait_until
from tests.python_helpers import IMAGE, WAIT, PythonNode, greeter_requirements

GREET = """
import os
import tinygreet

def handle(ctx, payload):
    return {"greeting": tinygreet.greet(payload["name"]), "forkServer": os.getppid()}
"""
CALLS = 40


async def test_a_shared_log_stores_a_record_before_the_call_answers(tmp_path: Path) -> None:
    path = tmp_path / "invocations.db"
    secondary = await InvocationLog.open(path, shared=True)
    primary = await InvocationLog.open(path)
    try:
        execution = Execution("call-1", {"ok": True}, [], [], None, 0.5, False)
        now = time.time()
        invocation = Invocation("call-1", "default", "greet", "http", now, {}, None, execution, now)
        secondary.add(invocation)
        await secondary.written("call-1")
        found = await primary.get("default", "call-1")
        await primary.written("call-1")  # not shared: at once
    finally:
        await secondary.close()
        await primary.close()

    assert found is not None and found["status"] == "READY" and found["payload"] == {"ok": True}


def parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[PythonNode]:
    node = PythonNode(tmp_path, EVENTGATE_WORKERS="2").start()
    yield node
    node.stop()


def call(node: PythonNode, name: str) -> httpx.Response:
    """POST /greet on a connection of its own (so the kernel picks a worker for each)."""
    return httpx.post(f"{node.process.events_url}/greet", json={"name": name}, timeout=30)


def test_every_worker_runs_the_function_and_the_config_api_finds_every_call(
    node: PythonNode, tmp_path: Path
) -> None:
    assert node.process.process is not None
    primary = node.process.process.pid
    image = node.image(IMAGE, greeter_requirements(tmp_path / "wheels"))
    assert image["status"] == "READY", image
    (marker,) = (node.process.data_dir / "runtime" / "images").glob("*/eventgate-image.json")
    built = marker.stat()
    node.function("greet", {"main.py": GREET})
    subscribed = node.config.post(
        "/subscriptions",
        json={"type": "sync", "eventType": "http.request", "functionId": "greet",
              "method": "POST", "path": "/greet"},
    )  # fmt: skip
    assert subscribed.status_code == 201, subscribed.text

    # Until the secondary has followed the new subscription (within the store's poll interval)
    # it answers 404; the first call it gets deploys the function there.
    workers: set[int] = set()

    def both_workers_answered() -> bool:
        response = call(node, "Arya")
        if response.status_code == 404 and "no function" in response.text:
            return False
        assert response.status_code == 200, response.text
        workers.add(parent(response.json()["forkServer"]))
        return len(workers) == 2

    wait_until(both_workers_answered, WAIT, "both workers to run the function")
    assert primary in workers

    config = threading.local()  # a warm connection per thread: the look-up follows at once

    def call_and_look_up(name: str) -> tuple[str, int]:
        """A call, then its record from the primary's config API as soon as it answered."""
        if not hasattr(config, "client"):
            config.client = httpx.Client(base_url=node.config.base_url, timeout=30)
            clients.append(config.client)
        response = call(node, name)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["greeting"] == f"Hello, {name} from a wheel"
        invocation_id = response.headers["x-eventgate-invocation-id"]
        found = config.client.get(f"/invocations/{invocation_id}")
        assert found.status_code == 200, (invocation_id, found.text)
        record = found.json()
        assert record["status"] == "READY" and record["trigger"] == "http"
        assert record["functionId"] == "greet" and record["input"] == {"name": name}
        assert record["payload"] == body
        return invocation_id, body["forkServer"]

    names = [f"caller-{number}" for number in range(CALLS)]
    clients: list[httpx.Client] = []
    try:
        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(call_and_look_up, names))
    finally:
        for client in clients:
            client.close()

    assert len({invocation_id for invocation_id, _ in answered}) == CALLS
    servers = {server for _, server in answered}
    assert {parent(server) for server in servers} == workers  # both served these calls too
    listed = {record["invocationId"] for record in node.invocations("greet", limit=100)}
    assert {invocation_id for invocation_id, _ in answered} <= listed

    # The secondary used the primary's build: the image was not built again.
    after = marker.stat()
    assert (after.st_ino, after.st_mtime_ns) == (built.st_ino, built.st_mtime_ns)
