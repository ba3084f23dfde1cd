"""The events port's door for events that are accepted durably: CloudEvents, and HTTP events with
async subscribers.

For each event: validate it (400 naming the attribute, nothing accepted), match the async
subscriptions of its type on the request's method and path (all spaces) and their filters, check
the event type's schema (400) and authorizer (403, 401, or 503 when it cannot decide), then
append it to the durable queue and answer 202 only once it is on disk:

    {"eventId": "...", "source": "...", "subscriptions": 2, "duplicate": false}

A batch is accepted or refused whole (the message names the event at fault) and answers
`{"events": [...]}`, one such object per event. `subscriptions: 0` says nobody was listening.

Where an event is recorded (its life is read at `/v1/spaces/{space}/events/{id}`): in each space
that has a subscription for its type on that method and path, or registered its type; else in
`default`. Each of those spaces' event types apply their schema and authorizer. An HTTP event
is recorded in the spaces of its async routes, and checked by the `http.request` event types of
those spaces and of its sync route's space. A refused event that could be identified is recorded
too, with the status and the reason.
"""

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from eventgate.dataplane.authorizer import apply, authorize
from eventgate.dataplane.body import BufferedBody
from eventgate.dataplane.types import Request, Response
from eventgate.delivery import NewEvent, Queue, Target, system
from eventgate.delivery.base import QueueUnavailable
from eventgate.errors import error_body
from eventgate.events import cloudevents
from eventgate.events.cloudevents import CloudEvent, InvalidEvent, Mode
from eventgate.events.filters import matches
from eventgate.events.http_event import SOURCE, http_event_data, now_rfc3339
from eventgate.events.policy import EventPolicy
from eventgate.model import DEFAULT_SPACE, HTTP_EVENT_TYPE
from eventgate.observability.metrics import Metrics
from eventgate.providers.base import Deliverer
from eventgate.routing.pathtree import Params
from eventgate.routing.snapshot import Route, RoutingSnapshot

_JSON = (b"Content-Type", b"application/json")


def error_response(status: int, message: str) -> Response:
    return Response(status, [_JSON], error_body(message))


@dataclass(slots=True)
class Plan:
    """One event: the spaces it is recorded in, the subscriptions it goes to, the rules.
    `targets`, when known, are the targets of `routes` in each of `spaces`, in order."""

    event: CloudEvent
    spaces: tuple[str, ...]
    routes: list[Route]
    policies: list[EventPolicy]
    targets: tuple[tuple[Target, ...], ...] | None = None


@dataclass(frozen=True, slots=True)
class Shape:
    """What `plan` works out from an event's type, method and path alone, kept per routing
    snapshot: events of one type to one path repeat."""

    spaces: tuple[str, ...]
    routes: tuple[Route, ...]
    filtered: bool  # some route has a filter: the event's attributes decide
    policies: tuple[EventPolicy, ...]
    targets: tuple[tuple[Target, ...], ...]  # per space, every route's (when none is filtered)

    @classmethod
    def of(cls, event_type: str, routes: tuple[Route, ...], snapshot: RoutingSnapshot) -> "Shape":
        spaces = dict.fromkeys(route.subscription.space for route in routes)
        spaces.update(dict.fromkeys(snapshot.type_spaces.get(event_type, ())))
        found = tuple(spaces) or (DEFAULT_SPACE,)
        policies = tuple(
            p for space in found if (p := snapshot.policy(space, event_type)) is not None
        )
        targets = tuple(
            tuple(_target(route) for route in routes if route.space == space) for space in found
        )
        filtered = any(route.subscription.filter for route in routes)
        return cls(found, routes, filtered, policies, targets)

    def plan(self, event: CloudEvent) -> Plan:
        if self.filtered:
            matched = [route for route in self.routes if matches(route.subscription.filter, event)]
            return Plan(event, self.spaces, matched, list(self.policies))
        return Plan(event, self.spaces, list(self.routes), list(self.policies), self.targets)


@dataclass(frozen=True, slots=True)
class Refusal:
    space: str
    status: int
    message: str
    reason: str


def plan(
    event: CloudEvent, routes: tuple[Route, ...], snapshot: RoutingSnapshot, registered: bool = True
) -> Plan:
    """Match `event` against the async `routes` of its type, method and path. `registered`:
    the spaces that registered the event's type have a say too (not for HTTP events, whose
    routes each belong to one space)."""
    spaces = dict.fromkeys(route.subscription.space for route in routes)
    if registered:
        spaces.update(dict.fromkeys(snapshot.type_spaces.get(event.type, ())))
    found = tuple(spaces) or ((DEFAULT_SPACE,) if registered else ())
    matched = [route for route in routes if matches(route.subscription.filter, event)]
    policies = [p for space in found if (p := snapshot.policy(space, event.type)) is not None]
    return Plan(event, found, matched, policies)


class Ingress:
    """Accepts events into the queue for the gateway."""

    def __init__(
        self,
        queue: Queue,
        deliverers: dict[str, Deliverer],
        metrics: Metrics,
        *,
        function_timeout: float,
        max_batch: int = 1000,
    ) -> None:
        self.queue = queue
        self.deliverers = deliverers
        self.metrics = metrics
        self.function_timeout = function_timeout
        self.max_batch = max_batch
        self._counters: dict[tuple[str, bool], Any] = {}  # metric children by (space, duplicate)
        self._origins: dict[tuple[object, ...], str] = {}
        self._shapes: dict[tuple[str, str, str], Shape] = {}  # of `_shapes_of`, by type, path
        self._shapes_of: RoutingSnapshot | None = None

    def _plan(self, event: CloudEvent, method: str, path: str, snapshot: RoutingSnapshot) -> Plan:
        """`plan(event, snapshot.match_async(event.type, method, path), snapshot)`, with what
        depends on the type, method and path alone worked out once per routing snapshot."""
        if self._shapes_of is not snapshot or len(self._shapes) >= 4096:
            self._shapes = {}
            self._shapes_of = snapshot
        key = (event.type, method, path)
        shape = self._shapes.get(key)
        if shape is None:
            routes = snapshot.match_async(event.type, method, path)
            shape = self._shapes[key] = Shape.of(event.type, routes, snapshot)
        return shape.plan(event)

    def _origin(self, request: Request, mode: Mode | None) -> str:
        """`_origin`, remembered per (method, path, mode, host, client): clients repeat."""
        key = (request.method, request.path, mode, request.header(b"host"), request.client)
        found = self._origins.get(key)
        if found is None:
            if len(self._origins) >= 4096:
                self._origins.clear()
            found = self._origins[key] = _origin(request, mode)
        return found

    def _count(self, space: str, duplicate: bool) -> None:
        counter = self._counters.get((space, duplicate))
        if counter is None:
            metric = self.metrics.events_duplicates if duplicate else self.metrics.events_accepted
            counter = self._counters[space, duplicate] = metric.labels(space)
        counter.inc()

    async def cloudevents(
        self, request: Request, mode: Mode, snapshot: RoutingSnapshot
    ) -> Response:
        """Answer a request that carries CloudEvents."""
        body = await request.body.read()
        try:
            events = cloudevents.parse(mode, request.headers, body, max_batch=self.max_batch)
            for event in events:
                cloudevents.reject_system_type(event)
        except InvalidEvent as error:
            self.metrics.events_rejected.labels("", "invalid").inc()
            return error_response(error.status, error.message)
        method, path = request.method, request.path
        plans = [self._plan(e, method, path, snapshot) for e in events]
        batch = mode is Mode.BATCH
        if any(p.policies for p in plans):
            request_data = http_event_data(request, body, {})
            for index, each in enumerate(plans):
                refusal = await self._check(each, request_data)
                if refusal is not None:
                    await self._record_refusal(each.event, refusal, request, mode)
                    where = f"event {index} in the batch: " if batch else ""
                    return error_response(refusal.status, where + refusal.message)
        return await self._accept(plans, request, mode, snapshot, batch=batch)

    async def http_event(
        self,
        request: Request,
        snapshot: RoutingSnapshot,
        routes: tuple[Route, ...],
        sync: tuple[Route, Params] | None,
    ) -> Response | None:
        """Accept an HTTP event for its async subscribers and apply its type's rules. Returns
        the answer (202 or a refusal), or None when the sync route is to be called now (its
        body stays readable)."""
        body = await request.body.read()
        request.body = BufferedBody(body)
        data = http_event_data(request, body, sync[1] if sync else {})
        event = CloudEvent(
            id=str(uuid.uuid4()),
            source=SOURCE,
            type=HTTP_EVENT_TYPE,
            time=now_rfc3339(),
            datacontenttype="application/json",
            data=data,
        )
        each = plan(event, routes, snapshot, registered=False)
        if sync is not None:
            found = snapshot.policy(sync[0].target.space, HTTP_EVENT_TYPE)
            if found is not None and all(p is not found for p in each.policies):
                each.policies.append(found)
        refusal = await self._check(each, data)
        if refusal is not None:
            if routes:
                await self._record_refusal(event, refusal, request, None)
            return error_response(refusal.status, refusal.message)
        if not routes:
            return None
        response = await self._accept([each], request, None, snapshot, batch=False)
        return response if sync is None or response.status != 202 else None

    async def _check(self, each: Plan, request_data: dict[str, object]) -> Refusal | None:
        """The event type rules of every space the event goes to: schema first, then the
        authorizer (which may mark the event with its principal)."""
        for policy in each.policies:
            try:
                policy.check_schema(each.event)
            except InvalidEvent as error:
                return Refusal(policy.space, 400, error.message, "schema")
        for policy in each.policies:
            if policy.authorizer_id is None:
                continue
            decision = await authorize(
                policy, each.event, request_data, self.deliverers, self.function_timeout
            )
            if not decision.allowed:
                reason = {401: "unauthenticated", 403: "denied"}.get(decision.status, "authorizer")
                return Refusal(policy.space, decision.status, decision.message, reason)
            apply(each.event, decision)
        return None

    async def _record_refusal(
        self, event: CloudEvent, refusal: Refusal, request: Request, mode: Mode | None
    ) -> None:
        self.metrics.events_rejected.labels(refusal.space, refusal.reason).inc()
        new = NewEvent(
            refusal.space,
            event.source,
            event.id,
            event.type,
            cloudevents.to_json(event),
            (),
            self._origin(request, mode),
        )
        with contextlib.suppress(RuntimeError):  # closing: the client still hears the refusal
            await self.queue.reject(new, refusal.status, refusal.message)

    async def _accept(
        self,
        plans: list[Plan],
        request: Request,
        mode: Mode | None,
        snapshot: RoutingSnapshot,
        *,
        batch: bool,
    ) -> Response:
        origin = self._origin(request, mode)
        news: list[NewEvent] = []
        for each in plans:
            event = each.event
            payload = cloudevents.to_json(event)
            source, id_, type_ = event.source, event.id, event.type
            if each.targets is not None:
                for space, targets in zip(each.spaces, each.targets, strict=True):
                    news.append(NewEvent(space, source, id_, type_, payload, targets, origin))
                continue
            for space in each.spaces:
                targets = [_target(route) for route in each.routes if route.space == space]
                news.append(NewEvent(space, source, id_, type_, payload, targets, origin))
        owned = len(news)
        if snapshot.match_async(system.RECEIVED, "POST", "/"):
            for each in plans:
                news += system.received(
                    snapshot, each.spaces, request.path, each.event, request.headers
                )
        try:
            accepted = await self.queue.append(news)
        except QueueUnavailable as error:  # e.g. NATS did not acknowledge: nothing is accepted
            return error_response(503, f"Service Unavailable: {error.message}")
        except RuntimeError:
            return error_response(503, "Service Unavailable: the event queue is closed")
        results = []
        position = 0
        for each in plans:
            count = len(each.spaces)
            if count == 1:
                result = accepted[position]
                self._count(news[position].space, result.duplicate)
                subscriptions, duplicate = result.deliveries, result.duplicate
            else:
                mine = accepted[position : position + count]
                for new, result in zip(news[position : position + count], mine, strict=True):
                    self._count(new.space, result.duplicate)
                subscriptions = sum(result.deliveries for result in mine)
                duplicate = all(result.duplicate for result in mine)
            position += count
            results.append(
                {
                    "eventId": each.event.id,
                    "source": each.event.source,
                    "subscriptions": subscriptions,
                    "duplicate": duplicate,
                }
            )
        assert position == owned
        body = {"events": results} if batch else results[0]
        return Response(202, [_JSON], orjson.dumps(body))


def _target(route: Route) -> Target:
    return Target(route.subscription.subscription_id or "", route.function.function_id)


def _origin(request: Request, mode: Mode | None) -> str:
    """Where an event came in, for its life record."""
    return orjson.dumps(
        {
            "method": request.method,
            "path": request.path,
            "mode": str(mode) if mode is not None else "http",
            "host": (request.header(b"host") or b"").decode("latin-1"),
            "client": request.client[0] if request.client else None,
        }
    ).decode()
