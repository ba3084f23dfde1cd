"""What only the NATS JetStream bus does (the contract both queues keep is in
test_queue_contract.py): subject-safe names, the cluster-wide in-flight limit, retention as
stream limits, a duplicate completing an event whose node died half-way through appending, and
a NATS outage (503, then recovery)."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventgate.delivery import NewEvent, Retention, Target, history
from eventgate.delivery.jetstream import Names, parse_servers, token, untoken
from eventgate.delivery.natsqueue import NatsQueue
from tests.delivery_helpers import LocalNode, ce, event_id_of, wait_for
from tests.nats_server import NatsServer, nats_server  # noqa: F401 - a fixture


@pytest.fixture
def name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(nats_server: NatsServer, name: str) -> AsyncIterator[NatsQueue]:  # noqa: F811
    queue = await NatsQueue.open(nats_server.url, name=name)
    yield queue
    await queue.close()


def event(event_id: str, *subscriptions: str, space: str = "default") -> NewEvent:
    targets = [Target(sub, f"fn-{sub}") for sub in subscriptions]
    return NewEvent(space, "/s", event_id, "t", b"{}", targets)


def test_names_become_subject_tokens_and_back() -> None:
    for text in ("plain-1", "a.b c", "x*y>", "_under", "", "ünï", "YXN5bmMs=="):
        encoded = token(text)
        assert encoded and not set(encoded) & set(". *>\t")
        assert untoken(encoded) == text
    assert token("plain-1") == "plain-1"
    assert parse_servers("nats://a:1, b:2") == ["nats://a:1", "nats://b:2"]
    with pytest.raises(ValueError, match="no NATS server"):
        parse_servers("nats://")
    with pytest.raises(ValueError, match="bus name"):
        Names("a.b")


async def test_odd_spaces_and_subscriptions_round_trip(bus: NatsQueue) -> None:
    await bus.append([event("e1", "sub.with dots*", space="space one")])
    assert await bus.depth() == {("space one", "sub.with dots*"): 1}
    [claimed] = await bus.claim(10, 30, space="space one", subscription_id="sub.with dots*")
    assert (claimed.space, claimed.subscription_id, claimed.event.id) == (
        "space one",
        "sub.with dots*",
        "e1",
    )


async def test_concurrency_bounds_the_whole_cluster(
    bus: NatsQueue,
    nats_server: NatsServer,  # noqa: F811
    name: str,
) -> None:
    other = await NatsQueue.open(nats_server.url, name=name)  # another node
    try:
        await bus.append([event(f"e{n}", "a") for n in range(5)])
        mine = await bus.claim(10, 30, space="default", subscription_id="a", in_flight=2)
        assert len(mine) == 2
        assert await other.claim(10, 30, space="default", subscription_id="a", in_flight=2) == []
        assert await bus.release(mine) == 2
        theirs = await other.claim(10, 30, space="default", subscription_id="a", in_flight=2)
        assert len(theirs) == 2
    finally:
        await other.close()


async def test_retention_is_the_streams_limits(bus: NatsQueue, name: str) -> None:
    assert await bus.purge(Retention(max_age=3600, max_events=50)) == 0
    names = Names(name)
    js = bus._js
    events = (await js.stream_info(names.events)).config
    assert (events.max_age, events.max_msgs) == (3600, 50)
    assert (await js.stream_info(names.history)).config.max_age == 3600
    deliveries = (await js.stream_info(names.deliveries)).config
    assert deliveries.max_age in (None, 0)  # work items are never aged out


async def test_a_duplicate_completes_an_event_whose_node_died_mid_append(
    bus: NatsQueue, name: str
) -> None:
    names = Names(name)
    half = event("e1", "a", "b")
    identity = history.digest_identity(f"{half.space}\0{half.source}\0{half.id}")
    # The node stored the head, then died before publishing the work items.
    await bus._js.publish(
        names.head_subject(half.space, half.id, half.source),
        history.head(half, 1.0),
        headers={"Nats-Msg-Id": identity},
    )
    assert await bus.depth() == {}
    [retried] = await bus.append([half])  # the client, never answered, tries again
    assert (retried.duplicate, retried.deliveries) == (True, 2)
    assert await bus.depth() == {("default", "a"): 1, ("default", "b"): 1}
    [again] = await bus.append([half])  # and once more: nothing is queued twice
    assert again.duplicate
    assert await bus.depth() == {("default", "a"): 1, ("default", "b"): 1}


async def test_events_get_503_while_nats_is_down_then_flow_again(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    node = await LocalNode(tmp_path / "node", bus=server.url, bus_name="outage").start()
    try:
        function = await node.function()
        await node.subscribe()
        assert (await node.emit(ce("before"))).status_code == 202
        await asyncio.to_thread(server.stop)
        await wait_for(lambda: not node.node.queue._nc.is_connected, "the client to notice")
        refused = await node.emit(ce("during"))
        assert refused.status_code == 503
        assert "NATS" in refused.json()["errors"][0]["message"]
        life = await node.config.get("/events/before")
        assert life.status_code == 503  # not a 500: the bus is away
        await asyncio.to_thread(server.start)  # same port, same data
        await wait_for(lambda: node.node.queue._nc.is_connected, "the client to reconnect")
        assert (await node.emit(ce("after"))).status_code == 202
        await wait_for(
            lambda: {"before", "after"} <= {event_id_of(r) for r in function.received},
            "both accepted events delivered",
        )
    finally:
        await node.close()
        server.stop()
