"""The routing table: keeps this node's routing snapshot in step with the config store.

It lists every resource at revision R, builds a snapshot, then follows the store's changes after
R. Changes land in the table's own dicts, keyed by store key (so a re-delivered or updated key
replaces its old value and never duplicates), and a fresh snapshot is swapped in whole: at once
after a quiet spell, and during a burst of writes at most once per few milliseconds (or per
build time, for very large configs, so rebuilding never takes over the loop). When the watch
fails or the store says the revision was compacted, the table re-lists everything and replaces
its dicts, so keys deleted during an outage disappear too; repeated failures back off with
jitter. The events port keeps serving the last good snapshot meanwhile. (These are the Event
Gateway watcher bugs of the reference, section 4, avoided.)
"""

import asyncio
import contextlib
import logging
import random
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from eventgate.model import Cors, EventType, Function, Subscription
from eventgate.observability.metrics import Metrics
from eventgate.routing.snapshot import RoutingSnapshot
from eventgate.store.base import Change, Store, WatchCompacted

log = logging.getLogger(__name__)

KINDS: dict[str, type[BaseModel]] = {
    "functions": Function,
    "subscriptions": Subscription,
    "cors": Cors,
    "eventtypes": EventType,
}


class RoutingTable:
    """Holds the current `snapshot` (an attribute, swapped whole) and keeps it current."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        coalesce: float = 0.005,
        backoff_base: float = 0.1,
        backoff_max: float = 5.0,
        stable_after: float = 10.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.snapshot = RoutingSnapshot()
        self._coalesce = coalesce
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._stable_after = stable_after
        self._resources: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self._revision = 0
        self._dirty = asyncio.Event()
        self._published = asyncio.Condition()
        self._reported: frozenset[str] = frozenset()
        self._last_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def revision(self) -> int:
        """The store revision the current snapshot reflects."""
        return self.snapshot.revision

    def describe(self) -> dict[str, object]:
        """This node's routing state for `/v1/status`."""
        return {
            "revision": self.snapshot.revision,
            "resources": {kind: len(items) for kind, items in self._resources.items()},
            "problems": sorted(self._reported),
            "following": self._last_error is None,
            "lastError": self._last_error,
        }

    async def start(self) -> None:
        """List everything, publish the first snapshot, then follow the store in the background.
        Raises if the first list fails: a node with no routes should not start serving."""
        await self._relist()
        await self._publish()
        self._tasks = [
            asyncio.create_task(self._follow(), name="routing-watch"),
            asyncio.create_task(self._rebuild_loop(), name="routing-rebuild"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def wait_for_revision(self, revision: int) -> None:
        """Wait until the published snapshot reflects store revision `revision` or later."""
        async with self._published:
            await self._published.wait_for(lambda: self.snapshot.revision >= revision)

    async def _relist(self) -> None:
        entries, revision = await self.store.list("")
        resources: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        for entry in entries:
            parsed = _parse(entry.key, entry.value)
            if parsed is not None:
                resources[parsed[0]][entry.key] = parsed[1]
        self._resources = resources
        self._revision = revision

    def _apply(self, change: Change) -> None:
        self._revision = change.revision
        kind = change.key.split("/", 1)[0]
        if kind not in KINDS:
            return
        parsed = _parse(change.key, change.value) if change.value is not None else None
        if parsed is None:
            self._resources[kind].pop(change.key, None)
        else:
            self._resources[kind][change.key] = parsed[1]

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        resync = False
        while True:
            started = loop.time()
            try:
                if resync:
                    await self._relist()
                    self._dirty.set()
                    resync = False
                    self._last_error = None
                changes = self.store.watch("", self._revision)
                async with contextlib.aclosing(changes):
                    async for change in changes:
                        self._apply(change)
                        self._dirty.set()
                        failures = 0
                raise RuntimeError("the watch ended")
            except WatchCompacted as error:  # not a failure: the history is just too short
                log.info("routing: %s", error)
                resync = True
            except Exception as error:  # whatever failed, the cure is the same: re-list
                if loop.time() - started > self._stable_after:
                    failures = 0
                failures += 1
                delay = min(self._backoff_max, self._backoff_base * 2 ** (failures - 1))
                delay *= random.uniform(0.5, 1.0)
                self._last_error = f"{type(error).__name__}: {error}"
                log.warning(
                    "routing: following the config store failed (%s: %s); re-listing in %.2fs",
                    type(error).__name__,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
                resync = True

    async def _rebuild_loop(self) -> None:
        """Rebuild at once after a quiet spell, else at most once per window (`coalesce`, or
        the last build's duration if longer): a lone write routes without delay, and a burst
        costs a few rebuilds, not one per write."""
        loop = asyncio.get_running_loop()
        next_allowed = loop.time()
        while True:
            await self._dirty.wait()
            # sleep(0) still lets the changes already delivered by the watch land first.
            await asyncio.sleep(max(0.0, next_allowed - loop.time()))
            self._dirty.clear()
            started = loop.time()
            await self._publish()
            finished = loop.time()
            next_allowed = finished + max(self._coalesce, finished - started)

    async def _publish(self) -> None:
        resources = self._resources
        snapshot = RoutingSnapshot.build(
            functions=resources["functions"].values(),
            subscriptions=resources["subscriptions"].values(),
            cors=resources["cors"].values(),
            event_types=resources["eventtypes"].values(),
            revision=self._revision,
        )
        problems = frozenset(snapshot.problems)
        for problem in sorted(problems - self._reported):
            log.warning("routing: %s", problem)
        self._reported = problems
        for kind, items in resources.items():
            self.metrics.routing_resources.labels(kind=kind).set(len(items))
        async with self._published:
            self.snapshot = snapshot
            self._published.notify_all()


def _parse(key: str, value: bytes) -> tuple[str, BaseModel] | None:
    """The kind and resource at `key`, or None (logged) for keys that are not routing
    resources or values that do not decode; the key's space wins over the value's."""
    parts = key.split("/", 2)
    model = KINDS.get(parts[0])
    if model is None or len(parts) != 3:
        return None
    try:
        data = orjson.loads(value)
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        data["space"] = parts[1]
        return parts[0], model.model_validate(data)
    except (orjson.JSONDecodeError, TypeError, ValidationError) as error:
        log.warning("routing: skipping %s: undecodable value: %s", key, error)
        return None
