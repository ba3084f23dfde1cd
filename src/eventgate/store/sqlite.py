"""The embedded config store: one SQLite file, shared safely by every process of a node.

Layout: `kv(key, value, revision)` holds the current entries; `changes(revision, key, value)` is
the write log (`value` NULL for a delete) that watchers follow; `meta` holds the store revision and
the revision up to which the log was pruned. Every write runs in a `BEGIN IMMEDIATE` transaction,
so writers in several processes take turns and each write gets the next store-wide revision.

The file is in WAL mode with `synchronous=FULL`: a write acknowledged to a client survives kill -9
and power loss. All SQLite calls run on one dedicated thread per store (one connection), never on
the event loop. Watchers are woken at once by writes made through the same store object and poll
the log every `poll_interval` seconds for writes made by other processes.

Usage: `store = await SqliteStore.open(data_dir / "config.db")`, then `await store.close()`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from eventgate.store.base import (
    Change,
    Entry,
    KeyExists,
    RevisionMismatch,
    Store,
    StoreUnavailable,
    WatchCompacted,
)

T = TypeVar("T")
DEFAULT_FILENAME = "config.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (revision INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
"""
_UNDER_PREFIX = "key >= :prefix AND substr(key, 1, length(:prefix)) = :prefix"
_WATCH_BATCH = 1000


@contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "DEFERRED") -> Iterator[None]:
    conn.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _meta(conn: sqlite3.Connection, name: str) -> int:
    return conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]


class SqliteStore(Store):
    """A `Store` in one SQLite file. Build it with `await SqliteStore.open(path)`.

    `history` is how many log rows are kept for watchers (older ones are pruned; a watcher that
    falls further behind gets WatchCompacted). `poll_interval` bounds how late a watcher sees a
    write made by another process.
    """

    def __init__(self, path: Path, *, history: int = 10_000, poll_interval: float = 0.1) -> None:
        self.path = path
        self._history = history
        self._poll_interval = poll_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventgate-sqlite")
        self._conn: sqlite3.Connection | None = None  # used only on the executor's thread
        self._closed = False
        self._wakers: set[asyncio.Event] = set()

    @classmethod
    async def open(
        cls, path: Path, *, history: int = 10_000, poll_interval: float = 0.1
    ) -> SqliteStore:
        """Open (creating if needed) the store at `path`, its parent directories included."""
        store = cls(path, history=history, poll_interval=poll_interval)
        try:
            await store._run(store._connect)
        except BaseException:
            await store.close()
            raise
        return store

    async def get(self, key: str) -> Entry | None:
        return await self._run(self._get, key)

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        return await self._run(self._list, prefix)

    async def put(
        self, key: str, value: bytes, *, create: bool = False, expect_revision: int | None = None
    ) -> Entry:
        entry = await self._run(self._put, key, value, create, expect_revision)
        self._wake_watchers()
        return entry

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        revision = await self._run(self._delete, key, expect_revision)
        if revision is not None:
            self._wake_watchers()
        return revision

    async def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Change]:
        wake = asyncio.Event()
        self._wakers.add(wake)
        try:
            cursor = after_revision
            while True:
                wake.clear()
                changes, cursor = await self._run(self._changes_after, prefix, cursor)
                for change in changes:
                    yield change
                if not changes:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self._poll_interval)
        finally:
            self._wakers.discard(wake)

    async def close(self) -> None:
        """Close the file; later calls (and waiting watchers) raise StoreUnavailable. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake_watchers()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=False)

    # The `_`-methods after `_wake_watchers` run on the store's thread, called through `_run`.

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreUnavailable("the config store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"config store {self.path}: {exc}") from exc

    def _wake_watchers(self) -> None:
        for wake in self._wakers:
            wake.set()

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            with _transaction(conn, "IMMEDIATE"):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the config store is not open")
        return self._conn

    def _get(self, key: str) -> Entry | None:
        row = self._db.execute("SELECT value, revision FROM kv WHERE key = ?", (key,)).fetchone()
        return Entry(key, row[0], row[1]) if row else None

    def _list(self, prefix: str) -> tuple[list[Entry], int]:
        conn = self._db
        with _transaction(conn):
            rows = conn.execute(
                f"SELECT key, value, revision FROM kv WHERE {_UNDER_PREFIX} ORDER BY key",
                {"prefix": prefix},
            ).fetchall()
            revision = _meta(conn, "revision")
        return [Entry(*row) for row in rows], revision

    def _put(self, key: str, value: bytes, create: bool, expect_revision: int | None) -> Entry:
        conn = self._db
        with _transaction(conn, "IMMEDIATE"):
            current = self._revision_of(conn, key)
            if create and current:
                raise KeyExists(f"key {key!r} already exists")
            self._check_expected(key, current, expect_revision)
            revision = self._log(conn, key, value)
            conn.execute(
                "INSERT INTO kv (key, value, revision) VALUES (?, ?, ?) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value, revision = excluded.revision",
                (key, value, revision),
            )
        return Entry(key, value, revision)

    def _delete(self, key: str, expect_revision: int | None) -> int | None:
        conn = self._db
        with _transaction(conn, "IMMEDIATE"):
            current = self._revision_of(conn, key)
            if not current:
                return None
            self._check_expected(key, current, expect_revision)
            revision = self._log(conn, key, None)
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))
        return revision

    def _changes_after(self, prefix: str, cursor: int) -> tuple[list[Change], int]:
        conn = self._db
        with _transaction(conn):
            compacted = _meta(conn, "compacted")
            if cursor < compacted:
                raise WatchCompacted(cursor, compacted)
            rows = conn.execute(
                f"SELECT key, value, revision FROM changes WHERE revision > :after "
                f"AND {_UNDER_PREFIX} ORDER BY revision LIMIT {_WATCH_BATCH}",
                {"after": cursor, "prefix": prefix},
            ).fetchall()
            # Caught up: everything up to the store revision was seen, matching or not.
            seen = rows[-1][2] if len(rows) == _WATCH_BATCH else _meta(conn, "revision")
        return [Change(*row) for row in rows], max(cursor, seen)

    @staticmethod
    def _revision_of(conn: sqlite3.Connection, key: str) -> int:
        row = conn.execute("SELECT revision FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    @staticmethod
    def _check_expected(key: str, current: int, expected: int | None) -> None:
        if expected is not None and current != expected:
            raise RevisionMismatch(
                f"key {key!r} is at revision {current}, not the expected {expected}"
            )

    def _log(self, conn: sqlite3.Connection, key: str, value: bytes | None) -> int:
        """Take the next store revision for a write to `key`, log it and prune the log."""
        revision = _meta(conn, "revision") + 1
        conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
        conn.execute(
            "INSERT INTO changes (revision, key, value) VALUES (?, ?, ?)", (revision, key, value)
        )
        horizon = revision - self._history
        if horizon > 0:
            conn.execute("DELETE FROM changes WHERE revision <= ?", (horizon,))
            conn.execute(
                "UPDATE meta SET value = max(value, ?) WHERE name = 'compacted'", (horizon,)
            )
        return revision
