"""The dispatcher: takes due deliveries from the queue and hands them to their functions.

One lane per subscription with pending work. A lane claims due deliveries under a lease (the
attempt's timeout plus `lease` seconds), at most the subscription's `concurrency` in flight, and
settles each: delivered, retried later (`retry.py`), or dead-lettered. A lane wakes when the queue
says its subscription got new work (appends, redrives), when a slot frees up, and when a retry it
scheduled comes due; it retires when it has nothing in flight and nothing scheduled. A sweep
(every `sweep_interval`, and at start) asks the queue for every subscription's next due time, so
leases left by a dead process and retries scheduled before a restart are picked up; it also
refreshes the queue-depth gauge and applies the retention.

A delivery whose subscription no longer exists becomes a dead letter ("subscription ... no longer
exists"), so nothing is dropped silently. The call itself goes through the `Deliverer` of the
function's type (`providers/base.py`).

`stop()` claims no more, gives deliveries in flight until the deadline to finish, then cancels the
rest and releases their leases, so the next start delivers them at once.
"""

import asyncio
import logging
import time
from typing import Any, NamedTuple

from eventgate.delivery.base import Attempt, Delivery, Queue, Retention
from eventgate.delivery.lanes import Key, Lane
from eventgate.delivery.retry import DEFAULT_POLICY, RetryPolicy, Verdict, verdict
from eventgate.delivery.stored import stored_event
from eventgate.delivery.system import FunctionEvents
from eventgate.observability.metrics import Metrics
from eventgate.providers.base import CallFailed, Deliverer
from eventgate.routing.snapshot import Route
from eventgate.routing.table import RoutingTable

log = logging.getLogger(__name__)
ORPHAN_RETRY = 0.5  # seconds between looks for a subscription this node has not heard of yet


class _Children(NamedTuple):
    delivered: Any
    retried: Any
    dead_lettered: Any
    latency: Any
    attempt_duration: Any


class Dispatcher:
    """Delivers what the queue holds. `start()` after the routing table, `stop()` to drain."""

    def __init__(
        self,
        queue: Queue,
        routing: RoutingTable,
        deliverers: dict[str, Deliverer],
        metrics: Metrics,
        *,
        function_timeout: float = 5.0,
        lease: float = 30.0,
        sweep_interval: float = 30.0,
        retention: Retention | None = None,
        orphan_grace: float = 0.0,
    ) -> None:
        self.queue = queue
        # With a shared bus, another node may have queued a delivery for a subscription this
        # node has not heard of yet: such a delivery waits this long before it is a dead letter.
        self.orphan_grace = orphan_grace
        self.routing = routing
        self.deliverers = deliverers
        self.metrics = metrics
        self.function_timeout = function_timeout
        self.lease = lease
        self.sweep_interval = sweep_interval
        self.retention = retention or Retention()
        self.events = FunctionEvents(queue, routing)
        self.lanes: dict[Key, Lane] = {}
        self.stopping = False
        self._in_flight: dict[asyncio.Task[None], Delivery] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._depth_keys: set[Key] = set()
        self._policies: dict[int, tuple[object, RetryPolicy]] = {}
        self._children: dict[Key, _Children] = {}
        queue.listen(self._wake)

    def policy(self, route: Route | None) -> RetryPolicy:
        """The retry policy of a route's subscription, worked out once per subscription."""
        if route is None:
            return DEFAULT_POLICY
        subscription = route.subscription
        cached = self._policies.get(id(subscription))
        if cached is None or cached[0] is not subscription:
            if len(self._policies) > 10_000:
                self._policies.clear()
            cached = self._policies[id(subscription)] = (
                subscription,
                RetryPolicy.of(subscription.delivery),
            )
        return cached[1]

    async def start(self) -> None:
        await self.sweep()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="delivery-sweep")

    def timeout(self, route: Route | None, policy: RetryPolicy) -> float:
        """One attempt's limit: the subscription's, else the function's, else the default."""
        if policy.timeout is not None:
            return policy.timeout
        if route is not None:
            deliverer = self.deliverers.get(route.function.type)
            if deliverer is not None:
                return deliverer.default_timeout(route.function) or self.function_timeout
        return self.function_timeout

    def _lane(self, key: Key) -> Lane:
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = Lane(self, key)
        return lane

    def _wake(self, keys: set[Key]) -> None:
        if not self.stopping:
            for key in keys:
                self._lane(key).poke()

    async def sweep(self) -> None:
        """Wake a lane for every subscription with pending deliveries, at their due time."""
        for key, due in (await self.queue.due_times()).items():
            if not self.stopping:
                self._lane(key).wake_at(due)

    async def _sweep_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = next_purge = loop.time()
        while True:
            await asyncio.sleep(min(1.0, self.sweep_interval))
            try:
                await self._refresh_depth()
                now = loop.time()
                if now >= next_sweep + self.sweep_interval:
                    next_sweep = now
                    await self.sweep()
                if now >= next_purge + 60.0:
                    next_purge = now
                    purged = await self.queue.purge(self.retention)
                    if purged:
                        log.info("retention: %d finished events purged", purged)
            except Exception:
                if self.stopping:
                    return
                log.exception("delivery sweep failed")

    async def _refresh_depth(self) -> None:
        """Pending deliveries per subscription (0 for every subscription with none)."""
        depth = await self.queue.depth()
        gauge = self.metrics.queue_depth
        keys = self._depth_keys | depth.keys() | self.routing.snapshot.subscribers.keys()
        for key in keys:
            gauge.labels(*key).set(depth.get(key, 0))
        self._depth_keys = keys

    def _metrics(self, space: str, function_id: str) -> "_Children":
        """The metric children of one function, cached (labels() is costly per delivery)."""
        children = self._children.get((space, function_id))
        if children is None:
            if len(self._children) > 10_000:
                self._children.clear()
            m = self.metrics
            children = self._children[space, function_id] = _Children(
                *(
                    metric.labels(space, function_id)
                    for metric in (
                        m.deliveries_delivered,
                        m.deliveries_retried,
                        m.deliveries_dead_lettered,
                        m.delivery_latency,
                        m.attempt_duration,
                    )
                )
            )
        return children

    def launch(self, lane: Lane, delivery: Delivery) -> None:
        lane.in_flight += 1
        task = asyncio.create_task(self._deliver(lane, delivery))
        self._in_flight[task] = delivery

    async def _deliver(self, lane: Lane, delivery: Delivery) -> None:
        try:
            await self._attempt(lane, delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery %s of %s/%s failed", delivery.id, *lane.key)
        finally:
            self._in_flight.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            lane.in_flight -= 1
            lane.wakeup.set()

    async def _attempt(self, lane: Lane, delivery: Delivery) -> None:
        queue, space = self.queue, delivery.space
        route = self.routing.snapshot.subscribers.get(lane.key)
        deliverer = self.deliverers.get(route.function.type) if route is not None else None
        if route is None and time.time() - delivery.event.received_at < self.orphan_grace:
            await queue.retry(delivery, time.time() + ORPHAN_RETRY, None)
            lane.wake_at(time.time() + ORPHAN_RETRY)
            return
        if route is None or deliverer is None:
            problem = (
                f"subscription {delivery.subscription_id} no longer exists in space {space!r}"
                if route is None
                else f"functions of type {route.function.type!r} cannot be called"
            )
            if await queue.dead_letter(delivery, None, problem):
                self._metrics(space, delivery.function_id).dead_lettered.inc()
            return
        function = route.function
        policy = self.policy(route)
        event = stored_event(delivery.event.payload)
        emit = self.events if self.events.wanted() else None
        if emit is not None:
            emit.invoking(space, function.function_id, event)
        at, started = time.time(), time.perf_counter()
        status = retry_after = None
        body = b""
        try:
            reply = await deliverer.deliver(function, event, self.timeout(route, policy))
            status, body, retry_after = reply.status, reply.body, reply.retry_after
            error = None if 200 <= status < 300 else f"HTTP {status}{_snippet(body)}"
        except CallFailed as failure:
            error = failure.message
        latency = time.perf_counter() - started
        counters = self._metrics(space, function.function_id)
        counters.attempt_duration.observe(latency)
        attempt = Attempt(at, deliverer.target(function), latency, status, error)
        tries = delivery.tries + 1
        outcome = verdict(status)
        if outcome is Verdict.DELIVERED:
            if await queue.ack(delivery, attempt):
                counters.delivered.inc()
                counters.latency.observe(time.time() - delivery.event.received_at)
            if emit is not None:
                emit.invoked(space, function.function_id, event, body)
            return
        if emit is not None:
            emit.failed(space, function.function_id, event, error or "", status)
        if outcome is Verdict.RETRY and policy.retries_left(tries):
            not_before = time.time() + policy.backoff(tries, retry_after)
            if await queue.retry(delivery, not_before, attempt):
                counters.retried.inc()
                lane.wake_at(not_before)
            return
        if outcome is Verdict.RETRY:
            reason = f"gave up after {tries} attempts; the last: {error}"
        else:
            reason = f"{error} is not retryable"
        if await queue.dead_letter(delivery, attempt, reason):
            counters.dead_lettered.inc()

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109
        """Claim no more; let deliveries in flight finish until `timeout`, then release them."""
        self.stopping = True
        for lane in list(self.lanes.values()):
            lane.wakeup.set()
        lanes = [lane.task for lane in self.lanes.values()]
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await asyncio.gather(*lanes, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=timeout)
        unsettled = list(self._in_flight.values())
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        if unsettled:
            released = await self.queue.release(unsettled)
            log.info("stopping: %d deliveries in flight released for the next start", released)
        await self.events.close()


def _snippet(body: bytes, limit: int = 160) -> str:
    """The start of a reply body on one line, for error messages."""
    text = " ".join(body[: limit * 2].decode("utf-8", "replace").split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f": {text}" if text else ""
