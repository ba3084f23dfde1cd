"""The SQLite queue's tables: the schema, connections, and reading and removing records (events,
deliveries with their attempts, dead letters, retention deletes). Plain functions of a
connection, run on the queue's threads. Appends and settlements are in `writes.py`.
"""

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import orjson

from eventgate.delivery.base import (
    Attempt,
    DeadLetter,
    DeliveryRecord,
    EventLife,
    EventRecord,
    State,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    space TEXT NOT NULL,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    received_at REAL NOT NULL,
    fanout INTEGER NOT NULL,
    payload BLOB NOT NULL,
    origin TEXT NOT NULL DEFAULT '',
    rejected_status INTEGER,
    rejected TEXT,
    duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_identity ON events (space, id, source);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    event_seq INTEGER NOT NULL,
    space TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    function_id TEXT NOT NULL,
    state TEXT NOT NULL,
    due REAL NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    lease INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_seq);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (due) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_subscription
    ON deliveries (space, subscription_id, due) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead
    ON deliveries (space, subscription_id) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id INTEGER NOT NULL,
    at REAL NOT NULL,
    target TEXT NOT NULL,
    latency REAL NOT NULL,
    status INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (delivery_id);
"""


WAL_CHECKPOINT_PAGES = 8000  # about 32 MiB of write-ahead log between checkpoints
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the log file is truncated to after a checkpoint


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fsync on commit."""
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 10000")
    if read_only:
        connection.execute("PRAGMA query_only = 1")
    else:
        connection.execute("PRAGMA journal_mode = WAL")
        # Checkpoint less often than every 1000 pages: a page rewritten by many commits (index
        # pages under random event ids) is then copied into the database once, not each time.
        # Durability is the WAL's, fsynced on every commit, either way.
        connection.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        connection.executescript(SCHEMA)
        _add_missing_columns(connection)
    connection.execute("PRAGMA synchronous = FULL")
    return connection


# Columns added after the first release of the schema, for queue files made before them.
_ADDED = {
    "origin": "TEXT NOT NULL DEFAULT ''",
    "rejected_status": "INTEGER",
    "rejected": "TEXT",
    "duplicates": "INTEGER NOT NULL DEFAULT 0",
}


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    present = {row[1] for row in connection.execute("PRAGMA table_info(events)")}
    for name, declaration in _ADDED.items():
        if name not in present:
            connection.execute(f"ALTER TABLE events ADD COLUMN {name} {declaration}")


_EVENT_COLUMNS = (
    "seq, space, source, id, type, received_at, payload, origin, rejected_status, rejected,"
    " duplicates"
)
_DELIVERY_COLUMNS = "id, event_seq, subscription_id, function_id, state, due, error"
_FINISHED = (
    "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 'pending')"
)


def ids_json(values: Iterable[int]) -> str:
    """A JSON array for `IN (SELECT value FROM json_each(?))`: one parameter for any count."""
    return orjson.dumps(sorted(values)).decode()


def events(connection: sqlite3.Connection, seqs: Iterable[int]) -> dict[int, EventRecord]:
    """The events with these sequence numbers, by sequence number."""
    rows = connection.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq IN (SELECT value FROM json_each(?))",
        (ids_json(seqs),),
    )
    return {seq: EventRecord(*fields) for seq, *fields in rows}


def _deliveries(connection: sqlite3.Connection, rows: list[tuple]) -> list[DeliveryRecord]:
    """Delivery rows (`_DELIVERY_COLUMNS`) as records, each with its attempts in order."""
    attempts: dict[int, list[Attempt]] = {row[0]: [] for row in rows}
    for delivery_id, *fields in connection.execute(
        "SELECT delivery_id, at, target, latency, status, error FROM attempts"
        " WHERE delivery_id IN (SELECT value FROM json_each(?)) ORDER BY rowid",
        (ids_json(attempts),),
    ):
        attempts[delivery_id].append(Attempt(*fields))
    return [
        DeliveryRecord(str(id_), sub, function, State(state), due, tuple(attempts[id_]), error)
        for id_, _, sub, function, state, due, error in rows
    ]


def lives(
    connection: sqlite3.Connection, space: str, event_id: str, source: str | None
) -> list[EventLife]:
    """Every stored event with this id (and source) in a space, oldest first."""
    where, params = "space = ? AND id = ?", [space, event_id]
    if source is not None:
        where, params = where + " AND source = ?", [*params, source]
    found = connection.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where} ORDER BY seq", params
    ).fetchall()
    result = []
    for seq, *fields in found:
        rows = connection.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE event_seq = ? ORDER BY id", (seq,)
        ).fetchall()
        result.append(EventLife(EventRecord(*fields), tuple(_deliveries(connection, rows))))
    return result


def dead_letters(
    connection: sqlite3.Connection,
    space: str,
    subscription_id: str | None,
    delivery_id: int | None,
    limit: int,
) -> list[DeadLetter]:
    """Dead letters of a space, newest first; narrowed to a subscription or one delivery."""
    where, params = "state = 'dead' AND space = ?", [space]
    if subscription_id is not None:
        where, params = where + " AND subscription_id = ?", [*params, subscription_id]
    if delivery_id is not None:
        where, params = where + " AND id = ?", [*params, delivery_id]
    rows = connection.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE {where} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    found = events(connection, {row[1] for row in rows})
    return [
        DeadLetter(found[row[1]], record)
        for row, record in zip(rows, _deliveries(connection, rows), strict=True)
    ]


def delete_finished(
    connection: sqlite3.Connection, limit: int, *, before: float | None = None
) -> int:
    """Delete up to `limit` of the oldest events that have no pending delivery (and were
    received `before` then, if given), with their deliveries and attempts; returns how many."""
    where, order, params = "1", "seq", [limit]
    if before is not None:
        where, order, params = "received_at < ?", "received_at", [before, limit]
    seqs = ids_json(
        seq
        for (seq,) in connection.execute(
            f"SELECT seq FROM events e WHERE {where} AND {_FINISHED} ORDER BY {order} LIMIT ?",
            params,
        )
    )
    connection.execute(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
        " WHERE event_seq IN (SELECT value FROM json_each(?)))",
        (seqs,),
    )
    connection.execute(
        "DELETE FROM deliveries WHERE event_seq IN (SELECT value FROM json_each(?))", (seqs,)
    )
    return connection.execute(
        "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))", (seqs,)
    ).rowcount
