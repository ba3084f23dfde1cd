"""The single-node delivery suite (`test_delivery.py`) again, with the node on the NATS bus: every
test there that takes a `local_node` runs here on a node whose queue is NATS JetStream."""

import inspect
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import test_delivery
from tests.delivery_helpers import HangsOnce, LocalNode, ce, wait_for
from tests.nats_server import NatsServer, nats_server  # noqa: F401 - a fixture

globals().update(
    {
        name: test
        for name, test in vars(test_delivery).items()
        if name.startswith("test_") and "local_node" in inspect.signature(test).parameters
    }
)


def on_the_bus(server: NatsServer) -> dict[str, str]:
    return {"bus": server.url, "bus_name": f"t{uuid.uuid4().hex[:12]}"}


@pytest.fixture
async def local_node(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[LocalNode]:  # noqa: F811
    node = await LocalNode(tmp_path / "node", **on_the_bus(nats_server)).start()
    assert node.node.status()["bus"] == "nats"
    yield node
    await node.close()


async def test_stopping_releases_deliveries_in_flight_to_another_node(
    tmp_path: Path,
    nats_server: NatsServer,  # noqa: F811
) -> None:
    bus = on_the_bus(nats_server)
    node = await LocalNode(tmp_path / "one", drain_timeout=0.3, **bus).start()
    hang_first = HangsOnce()
    function = hang_first.backend = await node.function(hang_first)
    await node.subscribe(delivery={"timeout": "PT30S"})
    await node.emit(ce("h1"))
    await wait_for(lambda: hang_first.calls == 1, "the first attempt to start")
    other = await LocalNode(tmp_path / "two", **bus).start()  # its own config store: register
    try:
        await other.config.post(
            "/functions",
            json={"functionId": "fn", "type": "http", "provider": {"url": function.url}},
        )
        await other.subscribe(delivery={"timeout": "PT30S"})
        node.backends.remove(function)  # the function outlives the node
        other.backends.append(function)
        await node.close()  # the attempt is still in flight after the drain timeout: released
        await wait_for(lambda: other.has_outcome("h1", "delivered"), "h1 delivered by the other")
        [attempt] = (await other.life("h1"))["subscriptions"][0]["attempts"]
        assert attempt["status"] == 200  # the released attempt was not counted
        assert hang_first.calls == 2
    finally:
        function.release.set()
        await other.close()
