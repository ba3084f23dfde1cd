"""The records the NATS JetStream bus keeps, as bytes, and the life of an event told from them.

Four kinds of record, each in its own stream (see `natsqueue.py` for the streams):

- a **head**: one per received event (and per refused one): its identity, type, reception time,
  origin, the targets it matched (or the refusal), then its payload;
- a **delivery**: one work item per (event, target), self-contained (it carries the event), so
  that any node can deliver it without reading anything else; `tries` counts the attempts made
  before this copy was published (0, or the count a released claim had);
- a **fact**: what happened to a delivery afterwards, appended by whichever node saw it happen:
  an attempt and the state it left the delivery in, a redrive, a discard, a duplicate received;
- a **dead letter**: the delivery as it was when it failed for good, kept until it is redriven
  or deleted.

Records are one line of JSON, then (for heads, deliveries and dead letters) a newline and the
payload bytes as they were accepted. A delivery's id is `<head sequence>-<target index>`: unique in
the cluster (the head's stream sequence), stable across redeliveries and redrives, and ordered
by reception.
"""

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from eventgate.delivery.base import (
    Attempt,
    DeliveryRecord,
    EventLife,
    EventRecord,
    NewEvent,
    State,
)

DELIVERY_ID = re.compile(r"(\d+)-(\d+)")

# Fact kinds.
ATTEMPT = "a"  # an attempt (or a dead letter without one), and the state it left ("s")
REDRIVEN = "r"
DISCARDED = "x"
DUPLICATE = "u"


def delivery_id(head_seq: int, index: int) -> str:
    return f"{head_seq}-{index}"


def parse_delivery_id(text: str) -> tuple[int, int] | None:
    """(head sequence, target index) of a delivery id, or None for text that is not one."""
    found = DELIVERY_ID.fullmatch(text)
    return (int(found[1]), int(found[2])) if found else None


def _frame(meta: dict[str, object], payload: bytes) -> bytes:
    return orjson.dumps(meta) + b"\n" + payload


def _unframe(data: bytes) -> tuple[dict, bytes]:
    line, _, payload = data.partition(b"\n")
    return orjson.loads(line), payload


def _event_meta(event: NewEvent | EventRecord, received_at: float) -> dict[str, object]:
    return {
        "space": event.space,
        "source": event.source,
        "id": event.id,
        "type": event.type,
        "at": received_at,
        "origin": event.origin,
    }


def head(event: NewEvent, received_at: float, rejected: tuple[int, str] | None = None) -> bytes:
    meta = _event_meta(event, received_at)
    meta["targets"] = [[t.subscription_id, t.function_id] for t in event.targets]
    if rejected is not None:
        meta["rejected"] = list(rejected)
    return _frame(meta, event.payload)


@dataclass(frozen=True, slots=True)
class Head:
    event: EventRecord
    targets: tuple[tuple[str, str], ...]


def parse_head(data: bytes) -> Head:
    meta, payload = _unframe(data)
    rejected = meta.get("rejected") or (None, None)
    event = EventRecord(
        meta["space"],
        meta["source"],
        meta["id"],
        meta["type"],
        meta["at"],
        payload,
        meta["origin"],
        rejected[0],
        rejected[1],
    )
    return Head(event, tuple((sub, fn) for sub, fn in meta["targets"]))


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A delivery as the bus carries it."""

    id: str
    subscription_id: str
    function_id: str
    event: EventRecord
    tries: int


def work_item(item: WorkItem) -> bytes:
    meta = _event_meta(item.event, item.event.received_at)
    meta.update(d=item.id, sub=item.subscription_id, fn=item.function_id, tries=item.tries)
    return _frame(meta, item.event.payload)


def parse_work_item(data: bytes) -> WorkItem:
    meta, payload = _unframe(data)
    event = EventRecord(
        meta["space"], meta["source"], meta["id"], meta["type"], meta["at"], payload, meta["origin"]
    )
    return WorkItem(meta["d"], meta["sub"], meta["fn"], event, meta["tries"])


def fact(index: int, kind: str, **fields: object) -> bytes:
    return orjson.dumps({"n": index, "k": kind, **fields})


def attempt_fields(attempt: Attempt | None) -> list[object] | None:
    if attempt is None:
        return None
    return [attempt.at, attempt.target, attempt.latency, attempt.status, attempt.error]


@dataclass(slots=True)
class _Story:
    record: DeliveryRecord
    attempts: list[Attempt] = field(default_factory=list)


def life(head_seq: int, found: Head, facts: Iterable[bytes]) -> EventLife:
    """An event's life: its head, then its facts in the order they were appended."""
    event = found.event
    stories = [
        _Story(
            DeliveryRecord(
                delivery_id(head_seq, index), sub, fn, State.PENDING, event.received_at, (), None
            )
        )
        for index, (sub, fn) in enumerate(found.targets)
    ]
    duplicates = 0
    for raw in facts:
        each = orjson.loads(raw)
        kind, index = each["k"], each["n"]
        if kind == DUPLICATE:
            duplicates += 1
            continue
        if not 0 <= index < len(stories):
            continue
        story = stories[index]
        record = story.record
        if kind == ATTEMPT:
            if each.get("a") is not None:
                story.attempts.append(Attempt(*each["a"]))
            state = each.get("s")
            if state is not None and record.state is State.PENDING:
                record = _replace(
                    record, State(state), each.get("due", record.due), each.get("err")
                )
        elif kind == REDRIVEN and record.state is State.DEAD:
            record = _replace(record, State.PENDING, each["due"], None)
        elif kind == DISCARDED and record.state is State.DEAD:
            record = _replace(record, State.DISCARDED, record.due, record.error)
        story.record = record
    deliveries = tuple(
        DeliveryRecord(
            s.record.id,
            s.record.subscription_id,
            s.record.function_id,
            s.record.state,
            s.record.due,
            tuple(s.attempts),
            s.record.error,
        )
        for s in stories
    )
    if duplicates:
        event = EventRecord(
            event.space,
            event.source,
            event.id,
            event.type,
            event.received_at,
            event.payload,
            event.origin,
            event.rejected_status,
            event.rejected,
            duplicates,
        )
    return EventLife(event, deliveries)


def _replace(record: DeliveryRecord, state: State, due: float, error: str | None) -> DeliveryRecord:
    return DeliveryRecord(
        record.id, record.subscription_id, record.function_id, state, due, (), error
    )


def newest_first(ids: Sequence[str]) -> list[str]:
    """Delivery ids, newest first (by head sequence, then target)."""
    return sorted(ids, key=lambda text: parse_delivery_id(text) or (0, 0), reverse=True)


def digest_identity(identity: str) -> str:
    """The `Nats-Msg-Id` of an event's identity (space, source, id joined by NULs)."""
    return hashlib.blake2b(identity.encode(), digest_size=20).hexdigest()


def event_record(event: NewEvent, received_at: float) -> EventRecord:
    return EventRecord(
        event.space, event.source, event.id, event.type, received_at, event.payload, event.origin
    )


def dead_letter(item: WorkItem, error: str) -> bytes:
    meta = _event_meta(item.event, item.event.received_at)
    meta.update(d=item.id, sub=item.subscription_id, fn=item.function_id, error=error)
    return _frame(meta, item.event.payload)


def parse_dead_letter(data: bytes) -> tuple[WorkItem, str]:
    meta, payload = _unframe(data)
    event = EventRecord(
        meta["space"], meta["source"], meta["id"], meta["type"], meta["at"], payload, meta["origin"]
    )
    return WorkItem(meta["d"], meta["sub"], meta["fn"], event, 0), meta["error"]


def attempts_of(index: int, facts: Iterable[bytes]) -> tuple[Attempt, ...]:
    """The attempts the facts record for the delivery at `index`."""
    found = []
    for raw in facts:
        each = orjson.loads(raw)
        if each["k"] == ATTEMPT and each["n"] == index and each.get("a") is not None:
            found.append(Attempt(*each["a"]))
    return tuple(found)
