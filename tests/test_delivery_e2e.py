"""Async delivery end to end against a real `eventgate serve` process: hundreds of events in
structured, binary and batched mode to recording functions that fail some attempts; and a
SIGKILL while events are being accepted and delivered, after which every 202 is delivered."""

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.delivery_helpers import STRUCTURED, Recorder, ce, wait_for
from tests.processes import EventgateProcess

EVENT_TYPE = "e2e.created"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EventgateProcess]:
    process = EventgateProcess(tmp_path / "data", {"EVENTGATE_DELIVERY_LEASE": "1"})
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)


async def register(node: EventgateProcess, function_id: str, url: str, mode: str, **sub: object):
    async with httpx.AsyncClient(base_url=f"{node.config_url}/v1/spaces/default") as config:
        provider = {"url": url, "mode": mode}
        response = await config.post(
            "/functions", json={"functionId": function_id, "type": "http", "provider": provider}
        )
        assert response.status_code == 201, response.text
        subscription = {"type": "async", "eventType": EVENT_TYPE, "functionId": function_id, **sub}
        response = await config.post("/subscriptions", json=subscription)
        assert response.status_code == 201, response.text


def binary_headers(event_id: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "/e2e",
        "ce-type": EVENT_TYPE,
        "ce-parity": "even" if int(event_id.split("-")[1]) % 2 == 0 else "odd",
        "content-type": "application/json",
    }


async def test_hundreds_of_events_in_every_mode_reach_every_subscription(
    node: EventgateProcess,
) -> None:
    ids = [f"{mode}-{n}" for mode in ("structured", "binary", "batch") for n in range(100)]
    chooser = random.Random(7)
    failures: dict[str, list[str]] = {}
    for event_id in ids:
        roll = chooser.random()
        if roll < 0.15:
            failures[event_id] = ["500"]
        elif roll < 0.2:
            failures[event_id] = ["429", "503"]
        elif roll < 0.23:
            failures[event_id] = ["hang"]
    recorders = {
        "eventgateway": Recorder(failures),
        "cloudevents": Recorder(failures),
        "proxy": Recorder(),
        "even": Recorder(),
    }
    delivery = {"retry": 4, "backoffDelay": "PT0.05S", "timeout": "PT1S", "concurrency": 8}
    for name, recorder in recorders.items():
        await recorder.backend.start()
        mode = "cloudevents" if name == "even" else name
        extra = {"filter": {"parity": "even"}} if name == "even" else {}
        await register(node, name, recorder.backend.url, mode, delivery=delivery, **extra)

    def event(event_id: str) -> dict[str, object]:
        number = int(event_id.split("-")[1])
        parity = "even" if number % 2 == 0 else "odd"
        return {**ce(event_id, EVENT_TYPE, data={"n": number}), "source": "/e2e", "parity": parity}

    async with httpx.AsyncClient(base_url=node.events_url, timeout=30) as client:
        requests = [
            client.post(
                "/",
                content=orjson.dumps(event(f"structured-{n}")),
                headers={"content-type": STRUCTURED},
            )
            for n in range(100)
        ] + [
            client.post("/", content=orjson.dumps({"n": n}), headers=binary_headers(f"binary-{n}"))
            for n in range(100)
        ]
        batches = [
            [event(f"batch-{n}") for n in range(start, start + 20)] for start in range(0, 100, 20)
        ]
        requests += [
            client.post(
                "/",
                content=orjson.dumps(batch),
                headers={"content-type": "application/cloudevents-batch+json"},
            )
            for batch in batches
        ]
        responses = []
        for start in range(0, len(requests), 20):  # keep this loop free to answer as a function
            responses += await asyncio.gather(*requests[start : start + 20])
    assert [r.status_code for r in responses] == [202] * len(requests)
    for response in responses[:200]:  # four subscriptions, one of them for even numbers only
        number = int(response.json()["eventId"].split("-")[1])
        assert response.json()["subscriptions"] == (4 if number % 2 == 0 else 3)
    even = {i for i in ids if int(i.split("-")[1]) % 2 == 0}
    expected = {"eventgateway": set(ids), "cloudevents": set(ids), "proxy": set(ids), "even": even}
    await wait_for(
        lambda: all(set(r.delivered) == expected[n] for n, r in recorders.items()),
        "every event at every matching subscription",
        timeout=30,
    )
    # Each call a function got is an attempt the event's life records: a second call only
    # where an attempt failed (as planned, or because the function answered too late).
    async with httpx.AsyncClient(base_url=f"{node.config_url}/v1/spaces/default") as config:
        lives = await asyncio.gather(*(config.get(f"/events/{event_id}") for event_id in ids))
    for event_id, response in zip(ids, lives, strict=True):
        [life] = response.json()["events"]
        assert life["outcome"] == "delivered"
        attempts = {s["functionId"]: s["attempts"] for s in life["subscriptions"]}
        assert set(attempts) == {name for name in recorders if event_id in expected[name]}
        for name, made in attempts.items():
            recorder = recorders[name]
            assert recorder.calls[event_id] == len(made), (name, event_id, made)
            assert [a.get("status") for a in made].count(200) == 1 or recorder.delivered[
                event_id
            ] > 1
            planned = failures.get(event_id, []) if name in ("eventgateway", "cloudevents") else []
            assert len(made) >= 1 + len(planned)
    for recorder in recorders.values():
        await recorder.backend.close()


async def test_every_202_is_delivered_after_sigkill(node: EventgateProcess) -> None:
    recorder = Recorder()
    await recorder.backend.start()
    delivery = {"concurrency": 32, "timeout": "PT1S"}  # leases of 1 + 1 s
    await register(node, "sink", recorder.backend.url, "cloudevents", delivery=delivery)
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def emitter(worker: int, client: httpx.AsyncClient) -> None:
        n = 0
        while not stop.is_set():
            event_id = f"w{worker}-{n}"
            n += 1
            try:
                response = await client.post(
                    "/",
                    content=orjson.dumps({**ce(event_id, EVENT_TYPE), "source": "/crash"}),
                    headers={"content-type": STRUCTURED},
                )
            except httpx.HTTPError:
                return  # the node died under us: this event may or may not have been accepted
            if response.status_code == 202:
                acknowledged.append(event_id)

    async with httpx.AsyncClient(base_url=node.events_url, timeout=10) as client:
        workers = [asyncio.create_task(emitter(w, client)) for w in range(16)]
        await wait_for(lambda: len(acknowledged) >= 300, "300 events accepted")
        assert recorder.delivered, "deliveries are under way at the time of the kill"
        await asyncio.to_thread(node.kill)
        stop.set()
        await asyncio.gather(*workers)
    accepted = set(acknowledged)
    assert len(accepted) >= 300
    await asyncio.to_thread(node.start)
    await wait_for(
        lambda: accepted <= set(recorder.delivered),
        "every acknowledged event delivered after the restart",
        timeout=30,
    )
    async with httpx.AsyncClient(base_url=f"{node.config_url}/v1/spaces/default") as config:
        life = (await config.get(f"/events/{acknowledged[0]}")).json()["events"][0]
    assert life["outcome"] == "delivered"
    await recorder.backend.close()
