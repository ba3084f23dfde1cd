"""Scaling of python functions on a node with tight limits: idle workers and fork servers go
away (scale to zero) and the next call wakes them, calls beyond the concurrency wait in a
bounded queue and then get 429, and invocation records are bounded."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import wait_until
from tests.python_helpers import WAIT, PythonNode
from tests.test_runtime_support import GATED, Gate


@pytest.fixture(scope="module")
def tight_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonNode]:
    node = PythonNode(
        tmp_path_factory.mktemp("tight-node"),
        EVENTGATE_WORKER_IDLE_TIMEOUT="0.1",
        EVENTGATE_SCALE_TO_ZERO_AFTER="0.4",
        EVENTGATE_FUNCTION_QUEUE_LIMIT="1",
        EVENTGATE_INVOCATION_RECORDS="5",
    ).start()
    assert node.image("python3")["status"] == "READY"
    yield node
    node.stop()


def processes(node: PythonNode, name: str) -> dict[str, int | bool]:
    return dict(node.config.get(f"/functions/{name}").json().get("instances") or {})


def test_a_function_scales_to_zero_and_the_next_call_wakes_it(tight_node: PythonNode) -> None:
    hello = "def handle(ctx, payload):\n    return 'awake'\n"
    created = tight_node.function("sleepy", {"main.py": hello})
    assert created["instances"]["serverRunning"] is True  # the handler is imported at create

    first = tight_node.invoke("sleepy")
    assert first.json()["context"]["coldStart"] is True
    wait_until(lambda: processes(tight_node, "sleepy")["workers"] == 0, WAIT, "workers reaped")
    wait_until(
        lambda: processes(tight_node, "sleepy")["serverRunning"] is False,
        WAIT,
        "the fork server to stop",
    )
    woken = tight_node.invoke("sleepy")

    assert woken.status_code == 200 and woken.json()["payload"] == "awake"
    assert woken.json()["context"]["coldStart"] is True
    assert processes(tight_node, "sleepy")["serverRunning"] is True


async def test_calls_beyond_the_concurrency_wait_then_get_429(
    tight_node: PythonNode, tmp_path: Path
) -> None:
    tight_node.function("narrow", {"main.py": GATED.format(version="v1")}, concurrency=1)
    async with (
        Gate() as gate,
        httpx.AsyncClient(base_url=tight_node.config.base_url, timeout=30) as client,
    ):

        def call() -> asyncio.Task[httpx.Response]:
            request = client.post("/functions/narrow/invocations", json={"gate": gate.name})
            return asyncio.create_task(request)

        running = call()
        await gate.wait_for(1)
        waiting = call()

        def one_waiting() -> bool:
            return processes(tight_node, "narrow").get("waiting") == 1

        await asyncio.to_thread(wait_until, one_waiting, WAIT, "a caller in the queue")
        refused = await client.post("/functions/narrow/invocations", json={"gate": gate.name})
        gate.release()
        first = await running
        await gate.wait_for(1)
        gate.release()
        second = await waiting

    assert refused.status_code == 429, refused.text
    assert "busy" in refused.json()["errors"][0]["message"]
    assert first.status_code == 200 and second.status_code == 200


def test_invocation_records_are_bounded(tight_node: PythonNode) -> None:
    tight_node.function("counted", {"main.py": "def handle(c, p):\n    return p\n"})

    ids = [tight_node.invoke("counted", n).json()["invocationId"] for n in range(8)]

    def bounded() -> bool:
        gone = tight_node.invocation(ids[0]).status_code == 404
        return gone and len(tight_node.invocations("counted")) == 5

    wait_until(bounded, WAIT, "the oldest records to go")
    kept = tight_node.invocations("counted")
    assert [record["payload"] for record in kept] == [7, 6, 5, 4, 3]
    assert tight_node.invocation(ids[-1]).status_code == 200
