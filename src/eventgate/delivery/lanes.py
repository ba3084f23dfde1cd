"""A lane: the deliveries of one subscription, claimed in batches up to its concurrency.

A lane claims when it was poked (new work), a scheduled retry came due, or a slot freed up
(claiming again only once a quarter of its slots are free, so claims stay batched); it sleeps
until the next of those, and retires when nothing is in flight, scheduled or poked. See
`dispatcher.py` for the whole picture.
"""

import asyncio
import contextlib
import heapq
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventgate.delivery.dispatcher import Dispatcher

log = logging.getLogger(__name__)
MAX_CLAIM = 256
Key = tuple[str, str]


class Lane:
    """The deliveries of one subscription."""

    def __init__(self, dispatcher: "Dispatcher", key: Key) -> None:
        self.dispatcher = dispatcher
        self.key = key
        self.in_flight = 0
        self.poked = True
        self.timers: list[float] = []  # loop times at which retries come due
        self.wakeup = asyncio.Event()
        self.task = asyncio.create_task(self.run(), name=f"delivery-lane-{key[0]}")

    def poke(self) -> None:
        """New work is due now."""
        self.poked = True
        self.wakeup.set()

    def wake_at(self, when: float) -> None:
        """Work comes due at Unix time `when`."""
        loop = asyncio.get_running_loop()
        heapq.heappush(self.timers, loop.time() + max(0.0, when - time.time()))
        self.wakeup.set()

    async def run(self) -> None:
        dispatcher = self.dispatcher
        loop = asyncio.get_running_loop()
        try:
            while not dispatcher.stopping:
                route = dispatcher.routing.snapshot.subscribers.get(self.key)
                policy = dispatcher.policy(route)
                free = policy.concurrency - self.in_flight
                now = loop.time()
                while self.timers and self.timers[0] <= now:
                    heapq.heappop(self.timers)
                    self.poked = True
                low_water = free >= max(1, policy.concurrency // 4) or self.in_flight == 0
                if self.poked and free > 0 and low_water:
                    self.poked = False
                    asked = min(free, MAX_CLAIM)
                    lease = dispatcher.timeout(route, policy) + dispatcher.lease
                    space, subscription = self.key
                    claimed = await dispatcher.queue.claim(
                        asked,
                        lease,
                        space=space,
                        subscription_id=subscription,
                        in_flight=policy.concurrency if route is not None else None,
                    )
                    for delivery in claimed:
                        dispatcher.launch(self, delivery)
                    if len(claimed) == asked:
                        self.poked = True  # there may be more
                    continue
                if not self.in_flight and not self.timers and not self.poked:
                    break
                self.wakeup.clear()
                timeout = self.timers[0] - now if self.timers else None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self.wakeup.wait()
        except Exception:
            log.exception("delivery lane %s/%s failed; the sweep restarts it", *self.key)
        finally:
            if dispatcher.lanes.get(self.key) is self:
                del dispatcher.lanes[self.key]
