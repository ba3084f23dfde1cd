"""A cluster on this machine: a real etcd, a real nats-server and three `eventgate serve` nodes
(A, B and C, started with the Kubernetes manifest's args; C reaches etcd through a proxy that a
test can cut). One cluster serves the whole module; each test uses its own functions and event
types and leaves every node up.

- configuration written through A routes on B and C within a second;
- events emitted round-robin across the nodes reach every matching subscription at least once,
  twice only where a retry caused it; dead letters, redrive and the life of an event work
  through any node;
- a node killed with SIGKILL under load loses no accepted event;
- with etcd stopped, nodes keep routing (and accepting events) while config writes answer 503,
  then recover when it is back;
- a delete made while C is cut off from etcd takes effect when C comes back.
"""

import asyncio
import base64
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from eventgate.runtime import pack_directory
from tests.cluster_helpers import Cluster, ClusterNode
from tests.delivery_helpers import STRUCTURED, Recorder, ce, wait_for
from tests.etcd_server import EtcdServer
from tests.gateway_backend import Backend, Received, Reply
from tests.nats_server import NatsServer
from tests.python_helpers import source

PROPAGATION = 1.0  # seconds: config written on one node routes on the others within this


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster")
    etcd = EtcdServer(directory / "etcd").start()
    nats = NatsServer(directory / "nats").start()
    cluster = Cluster(directory, etcd, nats)
    try:
        cluster.start_nodes(3, via_proxy=(2,))
        yield cluster
    except BaseException:
        print("\n".join(cluster.logs()))
        raise
    finally:
        cluster.stop()
        nats.stop()
        etcd.stop()


async def register(node: ClusterNode, function_id: str, url: str, **subscription: Any) -> None:
    """A `proxy` mode function and one subscription to it, through `node`."""
    async with node.config() as config:
        mode = "proxy" if subscription.get("type") == "sync" else "cloudevents"
        provider = {"url": url, "mode": mode}
        function = {"functionId": function_id, "type": "http", "provider": provider}
        response = await config.post("/functions", json=function)
        assert response.status_code == 201, response.text
        response = await config.post(
            "/subscriptions", json={"functionId": function_id, **subscription}
        )
        assert response.status_code == 201, response.text


async def routes(node: ClusterNode, path: str) -> bool:
    async with node.events() as events:
        return (await events.post(path, content=b"ping")).status_code == 200


async def emit(client: httpx.AsyncClient, event: dict[str, Any]) -> httpx.Response:
    return await client.post("/", content=orjson.dumps(event), headers={"content-type": STRUCTURED})


async def ok(request: Received) -> Reply:
    return 200, [], b"ok"


async def test_config_written_on_one_node_routes_on_the_others_within_a_second(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.nodes
    function = await Backend(ok).start()
    try:
        written = time.monotonic()
        await register(
            a,
            "propagated",
            function.url,
            type="sync",
            eventType="http.request",
            method="POST",
            path="/propagated",
        )
        await register(a, "propagated-async", function.url, type="async", eventType="prop.created")
        for node in (b, c):
            await wait_for(
                lambda node=node: routes(node, "/propagated"),
                f"{node.name} to route",
                timeout=PROPAGATION,
            )
            async with node.events() as events:
                response = await emit(events, {**ce(f"p-{node.name}", "prop.created")})
            assert response.json()["subscriptions"] == 1, response.text
        assert time.monotonic() - written < 2 * PROPAGATION + 1  # both writes, both checks
        await wait_for(lambda: len(function.received) >= 4, "the calls and deliveries")
    finally:
        await function.close()


async def test_events_round_robin_reach_every_subscription_once_unless_retried(
    cluster: Cluster,
) -> None:
    nodes = cluster.nodes
    ids = [f"rr-{n}" for n in range(150)]
    flaky = Recorder({i: ["503"] for i in ids[::7]} | {i: ["500", "429"] for i in ids[3::11]})
    steady = Recorder()
    odd = Recorder()
    delivery = {"retry": 3, "backoffDelay": "PT0.1S", "timeout": "PT2S", "concurrency": 8}
    for name, recorder, extra in (
        ("rr-flaky", flaky, {}),
        ("rr-steady", steady, {}),
        ("rr-odd", odd, {"filter": {"parity": "odd"}}),
    ):
        await recorder.backend.start()
        await register(
            nodes[len(name) % 3],
            name,
            recorder.backend.url,
            type="async",
            eventType="rr.created",
            delivery=delivery,
            **extra,
        )
    clients = [node.events() for node in nodes]
    try:
        await wait_for(
            lambda: all_route(clients, "rr.created", 2), "every node to route rr.created"
        )
        responses = []
        for start in range(0, len(ids), 30):
            responses += await asyncio.gather(
                *(
                    emit(clients[n % 3], {**ce(ids[n], "rr.created"), "parity": _parity(n)})
                    for n in range(start, min(start + 30, len(ids)))
                )
            )
        assert [r.status_code for r in responses] == [202] * len(ids)
        odd_ids = {i for n, i in enumerate(ids) if n % 2}
        expected = {"flaky": set(ids), "steady": set(ids), "odd": odd_ids}
        recorders = {"flaky": flaky, "steady": steady, "odd": odd}
        await wait_for(
            lambda: all(_ours(r.delivered) == expected[n] for n, r in recorders.items()),
            "every event at every matching subscription",
            timeout=30,
        )
        for name, recorder in recorders.items():
            twice = [i for i in expected[name] if recorder.delivered[i] != 1]
            if twice:  # never twice: show what the bus recorded of the first one
                async with nodes[0].config() as config:
                    life = (await config.get(f"/events/{twice[0]}")).json()
                raise AssertionError(f"{name} got {twice} twice: {life}")
            for event_id in expected[name]:
                planned = len(recorder.failures.get(event_id, []))
                assert recorder.calls[event_id] == 1 + planned, (name, event_id)
        # The life of an event accepted by one node, read through another.
        async with nodes[2].config() as config:
            life = (await config.get(f"/events/{ids[3]}")).json()["events"][0]
        assert life["outcome"] == "delivered"
        attempts = {s["functionId"]: len(s["attempts"]) for s in life["subscriptions"]}
        assert attempts == {"rr-flaky": 3, "rr-steady": 1, "rr-odd": 1}
    finally:
        for client in clients:
            await client.aclose()
        for recorder in (flaky, steady, odd):
            await recorder.backend.close()


async def all_route(clients: list[httpx.AsyncClient], event_type: str, count: int) -> bool:
    """Whether every node routes a probe event of `event_type` to `count` subscriptions."""
    for client in clients:
        response = await emit(client, {**ce(f"probe-{time.monotonic_ns()}", event_type)})
        if response.json().get("subscriptions") != count:
            return False
    return True


def _ours(delivered: Counter[str]) -> set[str]:
    return {event_id for event_id in delivered if event_id.startswith("rr-")}


def _parity(n: int) -> str:
    return "odd" if n % 2 else "even"


async def test_dead_letters_and_redrive_through_any_node(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    refusing = True

    async def answer(request: Received) -> Reply:
        return (400, [], b"not yet") if refusing else (200, [], b"ok")

    function = await Backend(answer).start()
    try:
        await register(a, "dl", function.url, type="async", eventType="dl.created")
        async with b.events() as events:
            await wait_for(lambda: all_route([events], "dl.created", 1), "B to route dl.created")
            for n in range(3):
                assert (await emit(events, ce(f"dl-{n}", "dl.created"))).status_code == 202

        async def dead_letters(node: ClusterNode) -> list[dict[str, Any]]:
            async with node.config() as config:
                found = (await config.get("/deadletters")).json()
            return [d for d in found["deadLetters"] if d["eventId"].startswith("dl-")]

        await wait_for(lambda: _count(dead_letters(c), 3), "three dead letters, seen from C")
        refusing = False
        async with c.config() as config:
            response = await config.post("/deadletters/redrive", json={})
        assert response.json()["redriven"] >= 3
        for n in range(3):
            await wait_for(lambda n=n: _outcome(a, f"dl-{n}", "delivered"), f"dl-{n} delivered")
        assert await dead_letters(b) == []
    finally:
        await function.close()


async def _count(found: Any, expected: int) -> bool:
    return len(await found) == expected


async def _outcome(node: ClusterNode, event_id: str, expected: str) -> bool:
    async with node.config() as config:
        response = await config.get(f"/events/{event_id}")
    return response.status_code == 200 and response.json()["events"][0]["outcome"] == expected


async def test_a_node_killed_under_load_loses_no_accepted_event(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    sink = Recorder()
    await sink.backend.start()
    delivery = {"concurrency": 32, "timeout": "PT1S"}  # leases of 1 + 1 s
    await register(
        a, "sink", sink.backend.url, type="async", eventType="kill.created", delivery=delivery
    )
    accepted: list[str] = []
    stop = asyncio.Event()
    clients = [node.events() for node in (a, b, c)]

    async def emitter(worker: int) -> None:
        client = clients[worker % 3]
        n = 0
        while not stop.is_set() and n < 2000:
            event_id = f"k{worker}-{n}"
            n += 1
            try:
                response = await emit(client, ce(event_id, "kill.created"))
            except httpx.HTTPError:
                if client is clients[1]:
                    return  # B died under us: this event may or may not have been accepted
                raise
            if response.status_code == 202:
                accepted.append(event_id)

    try:
        await wait_for(lambda: all_route(clients, "kill.created", 1), "every node to route")
        workers = [asyncio.create_task(emitter(w)) for w in range(15)]
        await wait_for(lambda: len(accepted) >= 400, "400 events accepted")
        assert sink.delivered, "deliveries are under way at the time of the kill"
        await asyncio.to_thread(b.kill)
        await asyncio.sleep(0.5)  # A and C go on accepting
        stop.set()
        await asyncio.gather(*workers)
        expected = set(accepted)
        await wait_for(
            lambda: expected <= set(sink.delivered),
            "every accepted event delivered by the nodes left",
            timeout=30,
        )
    finally:
        for client in clients:
            await client.aclose()
        await sink.backend.close()
        if b.process is not None and b.process.poll() is not None:
            await asyncio.to_thread(b.start)  # back for the next tests


async def test_etcd_stopped_and_restarted(cluster: Cluster) -> None:
    a, b, _ = cluster.nodes
    function = await Backend(ok).start()
    try:
        await register(
            a,
            "outage",
            function.url,
            type="sync",
            eventType="http.request",
            method="POST",
            path="/outage",
        )
        await register(a, "outage-async", function.url, type="async", eventType="outage.created")
        for node in cluster.nodes:
            await wait_for(lambda node=node: routes(node, "/outage"), f"{node.name} to route")
        await asyncio.to_thread(cluster.etcd.stop)
        try:
            for node in cluster.nodes:
                assert await routes(node, "/outage"), f"{node.name} keeps routing"
                async with node.events() as events:
                    response = await emit(events, ce(f"o-{node.name}", "outage.created"))
                assert response.status_code == 202  # the bus does not need etcd
            async with a.config() as config:
                refused = await config.post(
                    "/functions",
                    json={"functionId": "later", "type": "http", "provider": {"url": function.url}},
                )
            assert refused.status_code == 503
            assert "etcd" in refused.json()["errors"][0]["message"]
            for node in cluster.nodes:
                await wait_for(lambda node=node: _status(node, "degraded"), f"{node.name} degraded")
        finally:
            await asyncio.to_thread(cluster.etcd.start)
        for node in cluster.nodes:
            await wait_for(lambda node=node: _status(node, "ok"), f"{node.name} recovered")
        await register(
            b,
            "after",
            function.url,
            type="sync",
            eventType="http.request",
            method="POST",
            path="/after",
        )
        for node in cluster.nodes:
            await wait_for(lambda node=node: routes(node, "/after"), f"{node.name} routes /after")
    finally:
        await function.close()


async def _status(node: ClusterNode, expected: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{node.config_url}/v1/status")
    return response.json()["status"] == expected


async def test_a_delete_made_while_a_node_is_cut_off_takes_effect_when_it_returns(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.nodes
    [proxy] = cluster.proxies
    function = await Backend(ok).start()
    try:
        await register(
            a,
            "cut",
            function.url,
            type="sync",
            eventType="http.request",
            method="POST",
            path="/cut",
        )
        await wait_for(lambda: routes(c, "/cut"), "C to route /cut")
        await asyncio.to_thread(proxy.sever)
        try:
            async with a.config() as config:
                subscription = (await config.get("/subscriptions")).json()["subscriptions"]
                [cut] = [s for s in subscription if s["functionId"] == "cut"]
                deleted = await config.delete(f"/subscriptions/{cut['subscriptionId']}")
                assert deleted.status_code == 204
            await wait_for(lambda: _not(routes(b, "/cut")), "B to drop /cut")
            assert await routes(c, "/cut"), "C, cut off, still routes from its snapshot"
            await wait_for(lambda: _status(c, "degraded"), "C degraded")
        finally:
            await asyncio.to_thread(proxy.restore)
        await wait_for(lambda: _not(routes(c, "/cut")), "C to drop /cut once back", timeout=15)
        await wait_for(lambda: _status(c, "ok"), "C following again")
    finally:
        await function.close()


async def _not(found: Any) -> bool:
    return not await found


async def test_python_functions_registered_on_one_node_run_on_every_node(
    cluster: Cluster,
) -> None:
    """Images and sources live in etcd with the rest of the config; each node builds the image
    and unpacks the source the first time it needs them."""
    a, b, c = cluster.nodes
    code = source(
        cluster.directory / "sources" / "greeter",
        {"main.py": "def handle(ctx, payload):\n    return 'Hello, ' + payload['name']\n"},
    )
    async with a.config() as config:
        image = await config.post("/images", json={"name": "cluster-py", "requirements": ""})
        assert image.status_code == 202, image.text
        function = {
            "functionId": "greeter",
            "type": "python",
            "provider": {"image": "cluster-py", "handler": "main.handle", "source": code},
        }
        created = await config.post("/functions", json=function)
        assert created.status_code == 201, created.text
        subscription = {"type": "sync", "eventType": "http.request", "functionId": "greeter",
                        "method": "POST", "path": "/greet"}  # fmt: skip
        assert (await config.post("/subscriptions", json=subscription)).status_code == 201
    images = c.data_dir / "runtime" / "images"
    assert not images.exists() or not any(images.iterdir()), "C built nothing before it had to"
    async with b.config() as config:
        answer = await config.post("/functions/greeter/invocations", json={"name": "B"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["payload"] == "Hello, B"
    async with c.events() as events:
        called = await events.post("/greet", json={"name": "C"}, timeout=60)
    assert called.status_code == 200, called.text
    assert any(images.iterdir()), "C built the image on its first call"


async def test_the_largest_source_fits_etcd(cluster: Cluster) -> None:
    """A source just under the size limit (`--max-source-bytes`, 1 MiB of .tar.gz) is stored in
    etcd (whose requests stop at 1.5 MiB) and reaches the other nodes."""
    a, b, _ = cluster.nodes
    folder = cluster.directory / "sources" / "big"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("def handle(ctx, payload):\n    return 'big'\n")
    (folder / "blob.bin").write_bytes(os.urandom(1_000_000))  # does not compress
    code = base64.b64encode(pack_directory(folder)).decode()
    assert 1_000_000 < len(base64.b64decode(code)) <= 1024 * 1024
    async with a.config() as config:
        image = await config.post("/images", json={"name": "cluster-big", "requirements": ""})
        assert image.status_code == 202, image.text
        function = {
            "functionId": "big",
            "type": "python",
            "provider": {"image": "cluster-big", "handler": "main.handle", "source": code},
        }
        created = await config.post("/functions", json=function, timeout=60)
    assert created.status_code == 201, created.text
    async with b.config() as config:
        answer = await config.post("/functions/big/invocations", json={}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["payload"] == "big"
