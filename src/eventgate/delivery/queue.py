"""The embedded delivery queue: SQLite in WAL mode under a directory, durable on every append.

`await SqliteQueue.open(directory)` creates or reopens `queue.db`. Writes (appends, claims,
settlements, redrives, purges) go through group commit (`groupcommit.py`): one writer thread,
`synchronous=FULL`, many writes per transaction, so an append returns only after its event and
deliveries are fsynced while thousands of appends per second share the fsyncs. Reads (event
lives, dead letters, depth) use a second, read-only connection, so they never wait for a commit.

Tables: `events` (one row per accepted event, with its payload bytes), `deliveries` (one per
event and matching subscription: state, due time, tries, lease counter, final error) and
`attempts` (every call made). A pending delivery is due when `due <= now`; claiming it moves
`due` to the end of the lease and bumps `lease`, so a claim lost with its process simply comes
due again. Dedupe looks for the same (space, source, id) received within `dedupe_window`
seconds; keep it shorter than the retention's `max_age`.

The public contract and the record types are in `base.py`.
"""

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from eventgate.delivery import tables, writes
from eventgate.delivery.base import (
    Accepted,
    Attempt,
    DeadLetter,
    Delivery,
    EventLife,
    NewEvent,
    Queue,
    QueueStats,
    Retention,
    State,
)
from eventgate.delivery.groupcommit import ConnectionThread, GroupCommit

FILENAME = "queue.db"
PURGE_CHUNK = 2000


def _row_id(delivery_id: str) -> int | None:
    """A delivery id as its row id; None for text that cannot be one."""
    return int(delivery_id) if delivery_id.isascii() and delivery_id.isdigit() else None


class SqliteQueue(Queue):
    """The `Queue` contract on one SQLite file. Use `await SqliteQueue.open(directory)`."""

    def __init__(
        self, directory: Path, dedupe_window: float, clock: Callable[[], float], max_batch: int
    ) -> None:
        path = directory / FILENAME
        self._writer = ConnectionThread(
            "eventgate-queue-writer", lambda: tables.connect(path, read_only=False)
        )
        self._reader = ConnectionThread(
            "eventgate-queue-reader", lambda: tables.connect(path, read_only=True)
        )
        self._group = GroupCommit(self._writer, max_batch)
        self._dedupe_window = dedupe_window
        self._clock = clock
        self._appended = 0
        self._duplicates = 0
        self._listeners: list[Callable[[set[tuple[str, str]]], None]] = []

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        dedupe_window: float = 300.0,
        clock: Callable[[], float] = time.time,
        max_batch: int = 4096,
    ) -> "SqliteQueue":
        """Open (creating if needed) the queue in `directory`. `dedupe_window` is in seconds
        (0 turns dedupe off); `clock` gives Unix seconds; `max_batch` bounds a transaction."""
        queue = cls(directory, dedupe_window, clock, max_batch)
        await queue._writer.open()
        await queue._reader.open()
        queue._group.start()
        return queue

    async def append(self, events: Sequence[NewEvent]) -> list[Accepted]:
        accepted = await self._group.submit_batched(self._insert, events)
        duplicates = sum(result.duplicate for result in accepted)
        self._duplicates += duplicates
        self._appended += len(accepted) - duplicates
        if self._listeners:
            self._notify(
                {
                    (event.space, target.subscription_id)
                    for event, result in zip(events, accepted, strict=True)
                    if not result.duplicate
                    for target in event.targets
                }
            )
        return accepted

    def _insert(
        self, connection: sqlite3.Connection, batches: list[Sequence[NewEvent]]
    ) -> list[list[Accepted]]:
        return writes.insert_events(connection, batches, self._clock(), self._dedupe_window)

    async def reject(self, event: NewEvent, status: int, reason: str) -> None:
        now = self._clock()
        await self._group.submit(
            lambda connection: writes.insert_rejected(connection, event, now, status, reason)
        )

    def listen(self, listener: Callable[[set[tuple[str, str]]], None]) -> None:
        self._listeners.append(listener)

    def _notify(self, keys: set[tuple[str, str]]) -> None:
        if keys:
            for listener in self._listeners:
                listener(keys)

    async def claim(
        self,
        limit: int,
        lease_seconds: float,
        *,
        space: str | None = None,
        subscription_id: str | None = None,
        in_flight: int | None = None,
    ) -> list[Delivery]:
        if subscription_id is not None and space is None:
            raise ValueError("claiming for a subscription needs its space")

        def claim(connection: sqlite3.Connection) -> list[Delivery]:
            now = self._clock()
            where, params = "state = 'pending' AND due <= ?", [now]
            if space is not None:
                where, params = where + " AND space = ?", [*params, space]
            if subscription_id is not None:
                where, params = where + " AND subscription_id = ?", [*params, subscription_id]
            rows = connection.execute(
                "UPDATE deliveries SET due = ?, lease = lease + 1 WHERE id IN (SELECT id FROM"
                f" deliveries WHERE {where} ORDER BY due LIMIT ?)"
                " RETURNING id, event_seq, space, subscription_id, function_id, tries, lease",
                [now + lease_seconds, *params, limit],
            ).fetchall()
            events = tables.events(connection, {row[1] for row in rows})
            return [
                Delivery(str(id_), space_, sub, function, events[seq], tries, lease)
                for id_, seq, space_, sub, function, tries, lease in sorted(rows)
            ]

        return await self._group.submit(claim)

    async def ack(self, delivery: Delivery, attempt: Attempt) -> bool:
        return await self._settle(delivery, attempt, writes.DELIVERED, None)

    async def retry(self, delivery: Delivery, not_before: float, attempt: Attempt | None) -> bool:
        return await self._settle(delivery, attempt, writes.RETRY, not_before)

    async def dead_letter(self, delivery: Delivery, attempt: Attempt | None, error: str) -> bool:
        return await self._settle(delivery, attempt, writes.DEAD, error)

    async def _settle(
        self, delivery: Delivery, attempt: Attempt | None, kind: str, value: object
    ) -> bool:
        item = writes.Settlement(int(delivery.id), delivery.lease, attempt, kind, value)
        return await self._group.submit_batched(writes.settle, item)

    async def release(self, deliveries: Sequence[Delivery]) -> int:
        if not deliveries:
            return 0
        now = self._clock()
        rows = [(now, int(delivery.id), delivery.lease) for delivery in deliveries]
        return await self._group.submit(
            lambda connection: (
                connection.executemany(
                    "UPDATE deliveries SET due = ? WHERE id = ? AND lease = ?"
                    " AND state = 'pending'",
                    rows,
                ).rowcount
            )
        )

    async def depth(self) -> dict[tuple[str, str], int]:
        rows = await self._read(
            "SELECT space, subscription_id, count(*) FROM deliveries WHERE state = 'pending'"
            " GROUP BY space, subscription_id",
            (),
        )
        return {(space, subscription): count for space, subscription, count in rows}

    async def due_times(
        self, space: str | None = None, subscription_id: str | None = None
    ) -> dict[tuple[str, str], float]:
        where, params = "state = 'pending'", ()
        if subscription_id is not None:
            where, params = (
                where + " AND space = ? AND subscription_id = ?",
                (
                    space,
                    subscription_id,
                ),
            )
        rows = await self._read(
            f"SELECT space, subscription_id, min(due) FROM deliveries WHERE {where}"
            " GROUP BY space, subscription_id",
            params,
        )
        return {(space_, subscription): due for space_, subscription, due in rows}

    async def life(self, space: str, event_id: str, source: str | None = None) -> list[EventLife]:
        return await self._reader.call(
            tables.lives, self._reader.connection, space, event_id, source
        )

    async def dead_letters(
        self, space: str, subscription_id: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return await self._reader.call(
            tables.dead_letters, self._reader.connection, space, subscription_id, None, limit
        )

    async def dead_letter_get(self, space: str, delivery_id: str) -> DeadLetter | None:
        row_id = _row_id(delivery_id)
        if row_id is None:
            return None
        found = await self._reader.call(
            tables.dead_letters, self._reader.connection, space, None, row_id, 1
        )
        return found[0] if found else None

    async def dead_letter_delete(self, space: str, delivery_id: str) -> bool:
        row_id = _row_id(delivery_id)
        if row_id is None:
            return False
        return (
            await self._update(
                "UPDATE deliveries SET state = ? WHERE id = ? AND space = ? AND state = 'dead'",
                (State.DISCARDED.value, row_id, space),
            )
            == 1
        )

    async def redrive(self, space: str, subscription_id: str | None = None) -> int:
        where, params = "state = 'dead' AND space = ?", (space,)
        if subscription_id is not None:
            where, params = where + " AND subscription_id = ?", (space, subscription_id)
        sql = (
            "UPDATE deliveries SET state = 'pending', due = ?, tries = 0, error = NULL"
            f" WHERE {where} RETURNING space, subscription_id"
        )
        rows = await self._group.submit(
            lambda connection: connection.execute(sql, (self._clock(), *params)).fetchall()
        )
        self._notify({(space_, subscription) for space_, subscription in rows})
        return len(rows)

    async def purge(self, retention: Retention) -> int:
        cutoff = self._clock() - retention.max_age
        purged = 0
        while True:  # by age, in chunks so that appends keep flowing in between
            count = await self._group.submit(
                lambda connection: tables.delete_finished(connection, PURGE_CHUNK, before=cutoff)
            )
            purged += count
            if count < PURGE_CHUNK:
                break
        [(total,)] = await self._read("SELECT count(*) FROM events", ())
        excess = total - retention.max_events
        while excess > 0:  # by count, oldest first
            chunk = min(excess, PURGE_CHUNK)
            count = await self._group.submit(
                lambda connection, chunk=chunk: tables.delete_finished(connection, chunk)
            )
            purged, excess = purged + count, excess - count
            if count < chunk:
                break
        return purged

    def stats(self) -> QueueStats:
        return QueueStats(self._appended, self._duplicates, self._group.commits)

    async def close(self) -> None:
        await self._group.close()
        await self._writer.close()
        await self._reader.close()

    async def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple]:
        return await self._reader.call(
            lambda: self._reader.connection.execute(sql, params).fetchall()
        )

    async def _update(self, sql: str, params: tuple[object, ...]) -> int:
        return await self._group.submit(lambda connection: connection.execute(sql, params).rowcount)
