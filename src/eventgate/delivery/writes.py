"""The SQLite queue's hot writes, each many callers' worth in a few multi-row statements (they
run as `GroupCommit.submit_batched` writes): appending events with their deliveries (and
dedupe), recording refused events, and settling claims."""

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

import orjson

from eventgate.delivery.base import Accepted, Attempt, NewEvent
from eventgate.delivery.tables import ids_json


def insert_events(
    connection: sqlite3.Connection,
    batches: list[Sequence[NewEvent]],
    now: float,
    dedupe_window: float,
) -> list[list[Accepted]]:
    """Store the events of many appends and their deliveries, due now, with a few multi-row
    statements. An event seen within `dedupe_window` seconds (same space, source and id, not
    rejected; earlier in these batches included) is counted on the original instead."""
    originals: dict[tuple[str, str, str], list[int]] = {}  # identity -> [seq, fanout]
    if dedupe_window > 0:
        identities = {(e.space, e.id, e.source) for batch in batches for e in batch}
        for space, id_, source, seq, fanout in connection.execute(
            "SELECT e.space, e.id, e.source, e.seq, e.fanout FROM json_each(?) AS j"
            " JOIN events AS e ON e.space = j.value ->> 0 AND e.id = j.value ->> 1"
            " AND e.source = j.value ->> 2"
            " WHERE e.received_at >= ? AND e.rejected IS NULL ORDER BY e.seq",
            (orjson.dumps(list(identities)), now - dedupe_window),
        ):
            originals[space, id_, source] = [seq, fanout]
    [(last,)] = connection.execute("SELECT coalesce(max(seq), 0) FROM events")
    event_rows: list[tuple[object, ...]] = []
    delivery_rows: list[tuple[object, ...]] = []
    duplicates: dict[int, int] = {}
    results = []
    for batch in batches:
        accepted = []
        for event in batch:
            identity = (event.space, event.id, event.source)
            original = originals.get(identity) if dedupe_window > 0 else None
            if original is not None:
                duplicates[original[0]] = duplicates.get(original[0], 0) + 1
                accepted.append(Accepted(duplicate=True, deliveries=original[1]))
                continue
            last += 1
            fanout = len(event.targets)
            originals[identity] = [last, fanout]
            event_rows.append(
                (last, event.space, event.source, event.id, event.type, now, fanout,
                 event.payload, event.origin)
            )  # fmt: skip
            delivery_rows += [
                (last, event.space, t.subscription_id, t.function_id, now) for t in event.targets
            ]
            accepted.append(Accepted(duplicate=False, deliveries=fanout))
        results.append(accepted)
    connection.executemany(
        "INSERT INTO events (seq, space, source, id, type, received_at, fanout, payload, origin)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        event_rows,
    )
    connection.executemany(
        "INSERT INTO deliveries (event_seq, space, subscription_id, function_id, state, due)"
        " VALUES (?, ?, ?, ?, 'pending', ?)",
        delivery_rows,
    )
    connection.executemany(
        "UPDATE events SET duplicates = duplicates + ? WHERE seq = ?",
        [(count, seq) for seq, count in duplicates.items()],
    )
    return results


def insert_rejected(
    connection: sqlite3.Connection, event: NewEvent, now: float, status: int, reason: str
) -> None:
    """Record a refused event: no deliveries, and the status and reason it was refused with."""
    _insert_event(connection, event, now, 0, status, reason)


def _insert_event(
    connection: sqlite3.Connection,
    event: NewEvent,
    now: float,
    fanout: int,
    status: int | None = None,
    reason: str | None = None,
) -> int:
    cursor = connection.execute(
        "INSERT INTO events (space, source, id, type, received_at, fanout, payload, origin,"
        " rejected_status, rejected) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.space,
            event.source,
            event.id,
            event.type,
            now,
            fanout,
            event.payload,
            event.origin,
            status,
            reason,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


DELIVERED, RETRY, DEAD = "delivered", "retry", "dead"
_SETTLE = {
    DELIVERED: "UPDATE deliveries SET state = 'delivered', tries = tries + ? WHERE id = ?",
    RETRY: "UPDATE deliveries SET due = ?, tries = tries + ? WHERE id = ?",
    DEAD: "UPDATE deliveries SET state = 'dead', error = ?, tries = tries + ? WHERE id = ?",
}


class Settlement(NamedTuple):
    """How one claim ends: `kind` is DELIVERED, RETRY (`value`: the new due time) or DEAD
    (`value`: the error)."""

    delivery_id: int
    lease: int
    attempt: Attempt | None
    kind: str
    value: object


def settle(connection: sqlite3.Connection, items: list[Settlement]) -> list[bool]:
    """Settle many claims with a few statements. Every attempt of a delivery that still exists
    is recorded; only a current claim (same lease, still pending; the first of a batch) changes
    its delivery. Returns, per item, whether it did."""
    found = connection.execute(
        "SELECT id, lease, state FROM deliveries WHERE id IN (SELECT value FROM json_each(?))",
        (ids_json({item.delivery_id for item in items}),),
    ).fetchall()
    exists = {row[0] for row in found}
    current = {(row[0], row[1]) for row in found if row[2] == "pending"}
    connection.executemany(
        "INSERT INTO attempts (delivery_id, at, target, latency, status, error)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (item.delivery_id, a.at, a.target, a.latency, a.status, a.error)
            for item in items
            if (a := item.attempt) is not None and item.delivery_id in exists
        ],
    )
    updates: dict[str, list[tuple[object, ...]]] = {}
    results = []
    for item in items:
        key = (item.delivery_id, item.lease)
        ok = key in current
        results.append(ok)
        if ok:
            current.discard(key)
            tried = item.attempt is not None
            row = (
                (tried, item.delivery_id)
                if item.kind == DELIVERED
                else (item.value, tried, item.delivery_id)
            )
            updates.setdefault(item.kind, []).append(row)
    for kind, rows in updates.items():
        connection.executemany(_SETTLE[kind], rows)
    return results
