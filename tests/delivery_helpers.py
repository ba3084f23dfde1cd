"""Helpers for async delivery tests: a whole node in the test's event loop (real sockets, real
SQLite queue), a recording function, config shortcuts, and waiting for a condition."""

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from eventgate.app import Node
from eventgate.settings import Settings
from tests.gateway_backend import Answer, Backend, Received, Reply
from tests.processes import free_port

STRUCTURED = "application/cloudevents+json"


async def ok(request: Received) -> Reply:
    return 200, [], b"ok"


def ce(event_id: str, event_type: str = "user.created", **members: Any) -> dict[str, Any]:
    """A structured CloudEvent as a dict."""
    return {"specversion": "1.0", "id": event_id, "source": "/tests", "type": event_type, **members}


def event_id_of(request: Received) -> str:
    """The id of the event a function received, whatever the call mode."""
    found = request.header("ce-id")
    if found is not None:
        return found
    body = request.json()
    return str(body.get("eventID") or body.get("id"))


class Recorder:
    """A function that fails chosen attempts (500, 429, or hanging past the timeout) and
    records every call and every success."""

    def __init__(self, failures: dict[str, list[str]] | None = None) -> None:
        self.failures = failures or {}
        self.calls: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.backend = Backend(self.answer)

    async def answer(self, request: Received) -> Reply:
        event_id = event_id_of(request)
        self.calls[event_id] += 1
        planned = self.failures.get(event_id, [])
        if self.calls[event_id] <= len(planned):
            failure = planned[self.calls[event_id] - 1]
            if failure == "hang":
                await self.backend.release.wait()
                return 200, [], b"too late"
            return int(failure), [("retry-after", "0")] if failure == "429" else [], b"failed"
        self.delivered[event_id] += 1
        return 200, [], b"ok"


class HangsOnce:
    """A function's answer that hangs on its first call until its `backend` (set once that
    serves it) closes, and answers 200 to every later call."""

    def __init__(self) -> None:
        self.calls = 0
        self.backend: Backend | None = None

    async def __call__(self, request: Received) -> Reply:
        self.calls += 1
        if self.calls == 1:
            assert self.backend is not None
            await self.backend.release.wait()
        return 200, [], b""


async def wait_for(
    condition: Callable[[], Awaitable[object] | object],
    what: str,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class LocalNode:
    """`eventgate.app.Node` on free ports with clients for both of them."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        settings.setdefault("delivery_lease", 1.0)
        self.settings = Settings(
            events_port=free_port(), config_port=free_port(), data_dir=data_dir, **settings
        )
        self.node = Node(self.settings)
        self.backends: list[Backend] = []

    async def start(self) -> "LocalNode":
        await self.node.start()
        self.events = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.settings.events_port}", timeout=10
        )
        self.config = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.settings.config_port}/v1/spaces/default", timeout=10
        )
        return self

    async def close(self) -> None:
        await self.events.aclose()
        await self.config.aclose()
        await self.node.stop()
        for backend in self.backends:
            await backend.close()

    async def function(
        self, answer: Answer = ok, function_id: str = "fn", **provider: Any
    ) -> Backend:
        """Start a recording function and register it."""
        backend = await Backend(answer).start()
        self.backends.append(backend)
        body = {
            "functionId": function_id,
            "type": "http",
            "provider": {"url": backend.url, **provider},
        }
        response = await self.config.post("/functions", json=body)
        assert response.status_code == 201, response.text
        return backend

    async def subscribe(
        self, event_type: str = "user.created", function_id: str = "fn", **fields: Any
    ) -> str:
        body = {"type": "async", "eventType": event_type, "functionId": function_id, **fields}
        response = await self.config.post("/subscriptions", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["subscriptionId"])

    async def emit(self, event: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.events.post(
            "/", content=orjson.dumps(event), headers={"content-type": STRUCTURED, **headers}
        )

    async def life(self, event_id: str, **params: str) -> dict[str, Any]:
        response = await self.config.get(f"/events/{event_id}", params=params)
        assert response.status_code == 200, response.text
        [life] = response.json()["events"]
        return dict(life)

    async def outcome(self, event_id: str) -> str | None:
        response = await self.config.get(f"/events/{event_id}")
        return response.json()["events"][0]["outcome"] if response.status_code == 200 else None

    async def has_outcome(self, event_id: str, expected: str) -> bool:
        return await self.outcome(event_id) == expected

    def metric(self, name: str, **labels: str) -> float:
        return self.node.metrics.registry.get_sample_value(name, labels) or 0.0
