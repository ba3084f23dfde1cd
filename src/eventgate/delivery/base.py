"""The delivery queue contract every backend keeps (SQLite embedded, NATS JetStream later).

An accepted event is stored with one delivery per matching subscription. A dispatcher claims due
deliveries under a lease, calls the target, and settles each claim: `ack` (delivered), `retry`
(due again at `not_before`) or `dead_letter`. A claim that is never settled (the process died)
is claimed again once its lease runs out: delivery is at-least-once. Every attempt is recorded,
so the life of an event (where it went, what each target answered) can be told afterwards.

Times are Unix seconds from the queue's clock. Deliveries are keyed by space and subscription id.
Listeners (`listen`) hear which subscriptions got new due work (appends, redrives), so that a
dispatcher need not poll.

    [accepted] = await queue.append([NewEvent(space, source, id, type, payload, targets)])
    for delivery in await queue.claim(limit=10, lease_seconds=30, space=s, subscription_id=sub):
        ...call delivery.function_id with delivery.event.payload, timing it...
        await queue.ack(delivery, Attempt(at, target, latency, status=200))
        # or: await queue.retry(delivery, not_before, attempt)
        # or: await queue.dead_letter(delivery, attempt, "status 400 is not retryable")
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from eventgate.errors import Unavailable


class State(StrEnum):
    """Where a delivery stands. Only `pending` ones are claimed; dead letters wait for a human."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    DISCARDED = "discarded"


@dataclass(frozen=True, slots=True)
class Target:
    """A subscription an event matched, and the function it delivers to."""

    subscription_id: str
    function_id: str


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to accept: its identity (space, source, id), type, stored bytes and targets;
    `origin` says where it was received (JSON text, kept as given)."""

    space: str
    source: str
    id: str
    type: str
    payload: bytes
    targets: Sequence[Target]
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to one appended event. A duplicate (same space, source and id within the
    dedupe window) is not stored again; `deliveries` is then the original's count."""

    duplicate: bool
    deliveries: int


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A stored event. `rejected_status` and `rejected` (the reason) are set for an event that
    was refused at the door (recorded by `reject`); `duplicates` counts the copies received
    again within the dedupe window."""

    space: str
    source: str
    id: str
    type: str
    received_at: float
    payload: bytes
    origin: str = ""
    rejected_status: int | None = None
    rejected: str | None = None
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call to a target: when, where, what it answered (status) or why it failed (error)."""

    at: float
    target: str
    latency: float
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery. `tries` counts attempts since it was queued (or last redriven);
    `lease` identifies this claim, so settling a claim that expired and was claimed again
    records the attempt but does not change the delivery."""

    id: str
    space: str
    subscription_id: str
    function_id: str
    event: EventRecord
    tries: int
    lease: int


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """The whole story of one delivery: its state, next due time, attempts and final error."""

    id: str
    subscription_id: str
    function_id: str
    state: State
    due: float
    attempts: tuple[Attempt, ...]
    error: str | None


@dataclass(frozen=True, slots=True)
class EventLife:
    """An event and what became of it at each subscription it matched."""

    event: EventRecord
    deliveries: tuple[DeliveryRecord, ...]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery that failed for good: the event, the subscription, the attempts, the error."""

    event: EventRecord
    delivery: DeliveryRecord


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished events are kept (delivered, dead-lettered or discarded everywhere),
    and at most how many events the queue holds. Pending deliveries are never purged."""

    max_age: float = 7 * 86400.0
    max_events: int = 1_000_000


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counters since the queue was opened; `commits` shows group commit at work."""

    appended: int
    duplicates: int
    commits: int


class QueueUnavailable(Unavailable, RuntimeError):
    """The queue's backend did not answer in time (a broker down or unreachable): nothing of the
    call is known to be done. Answered 503 on both ports."""


class Queue(ABC):
    """A durable delivery queue. Every method is safe to call from many tasks at once."""

    @abstractmethod
    async def append(self, events: Sequence[NewEvent]) -> list[Accepted]:
        """Store events and their deliveries; returns once they are durable (fsync)."""

    @abstractmethod
    async def reject(self, event: NewEvent, status: int, reason: str) -> None:
        """Record an event that was refused (its targets are ignored): it is never delivered
        and never counts as the original of a duplicate, but its life can be looked up."""

    @abstractmethod
    def listen(self, listener: Callable[[set[tuple[str, str]]], None]) -> None:
        """Call `listener` (on the event loop) with the (space, subscription id) pairs that got
        deliveries due now, after each append or redrive that made some."""

    @abstractmethod
    async def claim(
        self,
        limit: int,
        lease_seconds: float,
        *,
        space: str | None = None,
        subscription_id: str | None = None,
        in_flight: int | None = None,
    ) -> list[Delivery]:
        """Up to `limit` due pending deliveries (of one subscription, or any), oldest due first,
        leased for `lease_seconds`: nobody else claims them until they are settled or the
        lease runs out. `in_flight` is the subscription's concurrency: a backend shared by
        many nodes (NATS) holds the whole cluster to it; a local one leaves it to the caller."""

    @abstractmethod
    async def ack(self, delivery: Delivery, attempt: Attempt) -> bool:
        """Record a successful attempt; the delivery is done. False if the claim was stale."""

    @abstractmethod
    async def retry(self, delivery: Delivery, not_before: float, attempt: Attempt | None) -> bool:
        """Record a failed attempt; the delivery is due again at `not_before` (with no attempt:
        put off, not tried)."""

    @abstractmethod
    async def dead_letter(self, delivery: Delivery, attempt: Attempt | None, error: str) -> bool:
        """Record the last attempt (if one was made) and make the delivery a dead letter."""

    @abstractmethod
    async def release(self, deliveries: Sequence[Delivery]) -> int:
        """Give claims back unsettled (a node stopping mid-call): due now, no attempt counted.
        Returns how many were still held."""

    @abstractmethod
    async def depth(self) -> dict[tuple[str, str], int]:
        """Pending deliveries per (space, subscription id)."""

    @abstractmethod
    async def due_times(
        self, space: str | None = None, subscription_id: str | None = None
    ) -> dict[tuple[str, str], float]:
        """The earliest due time of the pending deliveries of each (space, subscription id),
        or of one subscription; leased deliveries count as due when their lease runs out."""

    @abstractmethod
    async def life(self, space: str, event_id: str, source: str | None = None) -> list[EventLife]:
        """Every stored event with this id (and source), oldest first, with its deliveries."""

    @abstractmethod
    async def dead_letters(
        self, space: str, subscription_id: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters of a space (or one subscription), newest first."""

    @abstractmethod
    async def dead_letter_get(self, space: str, delivery_id: str) -> DeadLetter | None:
        """One dead letter, or None."""

    @abstractmethod
    async def dead_letter_delete(self, space: str, delivery_id: str) -> bool:
        """Give up on a dead letter (its history stays, as `discarded`); False if none."""

    @abstractmethod
    async def redrive(self, space: str, subscription_id: str | None = None) -> int:
        """Queue the dead letters of a space (or one subscription) again, due now, with their
        tries reset; returns how many."""

    @abstractmethod
    async def purge(self, retention: Retention) -> int:
        """Delete finished events past the retention; returns how many were deleted."""

    @abstractmethod
    def stats(self) -> QueueStats:
        """Counters since open."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release files and connections."""
