"""Helpers for the fast lane's tests (`test_passthrough*.py`): a node of `tests/test_gateway.py`
with the lane installed as `app.py` installs it, a spy that counts the requests reaching the
general path's handler and what the lane's `take` said, and `RawBackend`s: functions that read
a request head and write bytes the test chose.
"""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from eventgate.dataplane.passthrough import Passthrough
from eventgate.dataplane.types import Request, Response
from eventgate.model import Subscription
from tests.gateway_backend import Answer, LoopbackServer, Received, Reply
from tests.test_gateway import Node


class Spy:
    """Counts the requests the general path's handler ran, and what the lane's `take` said."""

    def __init__(self, node: Node) -> None:
        self.handled: list[tuple[str, str]] = []
        self.taken: list[bool] = []
        handle = node.gateway.handle

        async def counting(request: Request) -> Response:
            self.handled.append((request.method, request.path))
            return await handle(request)

        node.server.handler = counting  # the connections call `server.handler` per request
        self.lane = Passthrough(node.gateway, node.upstream, node.server)
        take = self.lane.take

        def spied_take(conn: object, data: bytes) -> bool:
            taken = take(conn, data)  # type: ignore[arg-type]
            self.taken.append(taken)
            return taken

        self.lane.take = spied_take  # type: ignore[method-assign]
        node.server.lane = self.lane


@asynccontextmanager
async def lane_node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node whose events port has the fast lane (`spy(node)` watches it)."""
    started = await Node(tmp_path).start()
    started.spy = Spy(started)  # type: ignore[attr-defined]
    try:
        yield started
    finally:
        await started.close()


def spy(node: Node) -> Spy:
    return node.spy  # type: ignore[attr-defined, no-any-return]


async def subscribe(node: Node, function_id: str, method: str, path: str) -> None:
    """Subscribe an already registered function to one more `method path`."""
    sub = Subscription.model_validate({"functionId": function_id, "path": path, "method": method})
    await node.put("subscriptions", sub.subscription_id or "", sub)


def requests_total(node: Node, method: str, route: str, status: int, function: str) -> float:
    labels = {"method": method, "route": route, "function": function, "status": str(status)}
    value = node.metrics.registry.get_sample_value("eventgate_events_requests_total", labels)
    return value or 0.0


def counted(node: Node, method: str) -> Counter[str]:
    """The requests counted for `method` on any route, by status."""
    counts: Counter[str] = Counter()
    for family in node.metrics.registry.collect():
        for sample in family.samples:
            if (
                sample.name == "eventgate_events_requests_total"
                and sample.labels.get("method") == method
            ):
                counts[sample.labels["status"]] += int(sample.value)
    return counts


@dataclass
class RawRequest:
    """One request head as a raw backend read it (header names lower-cased)."""

    method: str
    target: str
    headers: list[tuple[str, str]] = field(default_factory=list)


RawReply = tuple[bytes | list[bytes], bool] | None
"""The bytes to write (a list: written apart, a moment between them) and whether to close
after them; None to close without answering."""


class RawBackend(LoopbackServer):
    """A function that answers each request head with bytes the test chose (keep-alive unless
    the answer says close)."""

    def __init__(self, answer: Callable[[RawRequest, int], Awaitable[RawReply]]) -> None:
        super().__init__()
        self.answer = answer
        """Called with the request and its index on its connection (0 for the first)."""
        self.received: list[RawRequest] = []
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        try:
            for index in range(1_000_000):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *lines = head[:-4].decode("latin-1").split("\r\n")
                method, target, _ = line.split(" ")
                headers = []
                for header in lines:
                    name, _, value = header.partition(":")
                    headers.append((name.lower(), value.lstrip(" \t")))
                request = RawRequest(method, target, headers)
                self.received.append(request)
                reply = await self.answer(request, index)
                if reply is None:
                    return
                data, close = reply
                for number, piece in enumerate([data] if isinstance(data, bytes) else data):
                    if number:
                        await asyncio.sleep(0.02)  # so the gateway likely reads them apart
                    writer.write(piece)
                    await writer.drain()
                if close:
                    return
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


async def raw_backend(
    node: Node, answer: Callable[[RawRequest, int], Awaitable[RawReply]]
) -> RawBackend:
    backend = await RawBackend(answer).start()
    node.backends.append(backend)  # type: ignore[arg-type]  # closed with the node
    return backend


def gated(gate: asyncio.Event) -> Answer:
    """A function answering `/slow...` once `gate` is set, anything else at once."""

    async def answer(request: Received) -> Reply:
        if request.target.startswith("/slow"):
            await gate.wait()
            return 200, [], b"slow answer"
        return 200, [], b"fast"

    return answer


def answer_head(status: str, *headers: str) -> bytes:
    """A function's answer head: the status line, header lines, the blank line."""
    return ("\r\n".join((status, *headers)) + "\r\n\r\n").encode("latin-1")


BIG = bytes(range(256)) * 400  # 100 KiB: more than the lane passes whole
WARM = answer_head("HTTP/1.1 200 OK", "Content-Length: 4") + b"warm"
