"""System events (the Event Gateway 0.9.1 names), for async subscribers of those types.

- `eventgateway.event.received` `{path, event, headers}`: an event was accepted; it is queued in
  the same transaction as the event itself, in the spaces the event was recorded in;
- `eventgateway.function.invoking` `{space, functionId, event}`: before each delivery attempt;
- `eventgateway.function.invoked` `{space, functionId, event, result}`: the function answered 2xx;
  `result` is its reply body (base64, as the Event Gateway encoded bytes; not the request, which
  was the Event Gateway's bug);
- `eventgateway.function.invocationFailed` `{space, functionId, event, error}`: the attempt failed
  (`error` has the message and the status, if the function answered).

Subscribe with `{"type": "async", "eventType": "eventgateway.function.invoked", ...}` on `POST /`
(the defaults), in the space of the functions you watch. Function events are only emitted for
deliveries of ordinary events, so a system event never triggers another. The function events are
queued in the background, not awaited: a crash in the moment after an attempt may lose one.
Nothing is built when a type has no subscriber (one dict lookup).
"""

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import Iterable

import orjson

from eventgate.dataplane.types import Headers
from eventgate.delivery.base import NewEvent, Queue, Target
from eventgate.events import cloudevents
from eventgate.events.envelope import CloudEvent
from eventgate.events.filters import matches
from eventgate.events.http_event import flatten_headers, now_rfc3339
from eventgate.routing.snapshot import RoutingSnapshot
from eventgate.routing.table import RoutingTable

log = logging.getLogger(__name__)

RECEIVED = "eventgateway.event.received"
INVOKING = "eventgateway.function.invoking"
INVOKED = "eventgateway.function.invoked"
FAILED = "eventgateway.function.invocationFailed"
SOURCE = "/eventgate/system"
ORIGIN = orjson.dumps({"system": True}).decode()


def system_event(
    snapshot: RoutingSnapshot, space: str, event_type: str, data: dict[str, object]
) -> NewEvent | None:
    """The system event to queue in `space`, or None when nobody there subscribes to it."""
    routes = snapshot.match_async(event_type, "POST", "/")
    if not routes:
        return None
    event = CloudEvent(
        id=str(uuid.uuid4()),
        source=SOURCE,
        type=event_type,
        time=now_rfc3339(),
        datacontenttype="application/json",
        data=data,
    )
    targets = [
        Target(route.subscription.subscription_id or "", route.function.function_id)
        for route in routes
        if route.subscription.space == space and matches(route.subscription.filter, event)
    ]
    if not targets:
        return None
    payload = cloudevents.to_json(event)
    return NewEvent(space, SOURCE, event.id, event_type, payload, targets, ORIGIN)


def received(
    snapshot: RoutingSnapshot,
    spaces: Iterable[str],
    path: str,
    event: CloudEvent,
    headers: Headers,
) -> list[NewEvent]:
    """`eventgateway.event.received` for each space the event was recorded in."""
    if not snapshot.match_async(RECEIVED, "POST", "/"):
        return []
    data = {"path": path, "event": cloudevents.to_dict(event), "headers": flatten_headers(headers)}
    found = (system_event(snapshot, space, RECEIVED, data) for space in spaces)
    return [new for new in found if new is not None]


class FunctionEvents:
    """Queues `eventgateway.function.*` events in the background."""

    def __init__(self, queue: Queue, routing: RoutingTable) -> None:
        self.queue = queue
        self.routing = routing
        self._tasks: set[asyncio.Task[None]] = set()
        self._wanted: tuple[RoutingSnapshot | None, bool] = (None, False)

    def wanted(self) -> bool:
        """Whether anyone subscribes to any function event (skip building them otherwise);
        worked out once per routing snapshot."""
        snapshot = self.routing.snapshot
        if self._wanted[0] is not snapshot:
            kinds = (INVOKING, INVOKED, FAILED)
            self._wanted = (snapshot, any(snapshot.match_async(k, "POST", "/") for k in kinds))
        return self._wanted[1]

    def invoking(self, space: str, function_id: str, event: CloudEvent) -> None:
        self._emit(space, INVOKING, {"space": space, "functionId": function_id}, event)

    def invoked(self, space: str, function_id: str, event: CloudEvent, result: bytes) -> None:
        data = {
            "space": space,
            "functionId": function_id,
            "result": base64.b64encode(result).decode("ascii"),
        }
        self._emit(space, INVOKED, data, event)

    def failed(
        self, space: str, function_id: str, event: CloudEvent, message: str, status: int | None
    ) -> None:
        error: dict[str, object] = {"message": message}
        if status is not None:
            error["status"] = status
        data = {"space": space, "functionId": function_id, "error": error}
        self._emit(space, FAILED, data, event)

    def _emit(
        self, space: str, event_type: str, data: dict[str, object], event: CloudEvent
    ) -> None:
        if cloudevents.is_system_type(event.type):
            return  # never triggered by a system event
        snapshot = self.routing.snapshot
        if not snapshot.match_async(event_type, "POST", "/"):
            return
        data = {**data, "event": cloudevents.to_dict(event)}
        new = system_event(snapshot, space, event_type, data)
        if new is not None:
            task = asyncio.create_task(self._append(new))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _append(self, new: NewEvent) -> None:
        try:
            await self.queue.append([new])
        except Exception as error:  # the queue closed under us: a system event is best effort
            log.debug("system event %s not queued: %s", new.type, error)

    async def close(self) -> None:
        """Wait for the system events still being queued."""
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
