"""Invocation records: what each python function call was given, printed and answered.

One SQLite file per node (`invocations.db` under the data dir), written on its own thread in
batches: a call adds its record to memory (so it can be read back at once) and the writer stores
the pending ones every few milliseconds in one transaction. Records are observations, not
commitments: the file uses `synchronous=NORMAL`, and a crash may lose the last batch.

With `eventgate serve --workers N` every worker keeps its records in the same file (WAL, so
readers never wait for the writer; writers wait their turn for up to `_BUSY_TIMEOUT`). The config
API, served by the primary alone, reads the others' records from the file, so a secondary opens
its log `shared`: a call's answer then waits (`written`) until the batch holding its record is
stored, and an invocation id a client was given can be looked up at once. Batches still form, from
the calls that finish while one is being written.

Retention is bounded twice: records older than `retention` seconds go, and beyond `limit`
records the oldest go. A stored input or payload larger than `max_field_bytes` (as JSON) is
replaced by null, and the record says how large it was (`inputTruncated`/`payloadTruncated`).
"""

import asyncio
import contextlib
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from eventgate.runtime import Execution

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    space TEXT NOT NULL,
    function_id TEXT NOT NULL,
    created REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_by_function ON invocations (space, function_id, created);
CREATE INDEX IF NOT EXISTS invocations_by_created ON invocations (created);
"""
_FLUSH_DELAY = 0.01  # let a burst of calls land in one transaction
_MAX_PENDING = 100_000
_PURGE_EVERY = 30.0
_BUSY_TIMEOUT = 30.0  # how long a write waits for another process's


def rfc3339(seconds: float) -> str:
    """`2024-05-01T10:00:00.123Z`."""
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(slots=True)
class Invocation:
    """One call of a python function: RUNNING until it has its execution. Kept as it is until
    stored or asked for, so that a call pays for no formatting."""

    id: str
    space: str
    function_id: str
    trigger: str  # api, http, event, authorizer
    created: float
    input: object
    event_id: str | None = None
    execution: Execution | None = None
    finished: float | None = None

    @property
    def status(self) -> str:
        """RUNNING, then READY or ERROR (the words of Dispatch's runs)."""
        if self.execution is None:
            return "RUNNING"
        return "READY" if self.execution.error is None else "ERROR"

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "invocationId": self.id,
            "space": self.space,
            "functionId": self.function_id,
            "status": self.status,
            "trigger": self.trigger,
            "createdTime": rfc3339(self.created),
        }
        if self.event_id is not None:
            record["eventId"] = self.event_id
        record["input"] = self.input
        if self.finished is not None:
            record["finishedTime"] = rfc3339(self.finished)
        if self.execution is not None:
            record.update(self.execution.to_json())
        return record


class InvocationLog:
    """Keeps invocation records for a bounded time and number.
    Build with `await InvocationLog.open(path)`."""

    def __init__(
        self,
        path: Path,
        *,
        retention: float = 86400.0,
        limit: int = 10_000,
        max_field_bytes: int = 64 * 1024,
        shared: bool = False,
    ) -> None:
        self.path = path
        self.retention = retention
        self.limit = limit
        self.max_field_bytes = max_field_bytes
        self.shared = shared
        """Other processes read the file for this one's records: see `written`."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventgate-invlog")
        self._conn: sqlite3.Connection | None = None  # used only on the executor's thread
        self._pending: dict[str, Invocation] = {}  # by id: added, not yet stored
        self._dirty: dict[str, Invocation] = {}  # the ones the writer has still to take
        self._wake = asyncio.Event()
        self._stored: asyncio.Future[None] | None = None  # set when the next batch is stored
        self._writer: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._dropped = 0
        self._closed = False

    @classmethod
    async def open(cls, path: Path, **options: Any) -> "InvocationLog":
        records = cls(path, **options)
        await records._run(records._connect)
        records._writer = asyncio.create_task(records._write_loop(), name="invocation-log")
        return records

    def add(self, invocation: Invocation) -> None:
        """Store `invocation` (again, if it was added before: the newest version wins)."""
        if self._closed:
            return
        if len(self._dirty) >= _MAX_PENDING and invocation.id not in self._dirty:
            self._dropped += 1  # the writer is stuck (disk full?): memory stays bounded
            return
        self._pending[invocation.id] = invocation
        self._dirty[invocation.id] = invocation
        self._wake.set()

    async def written(self, invocation_id: str) -> None:
        """In a `shared` log, wait until the record added under `invocation_id` is in the file
        (or could not be stored), so another process finds it; otherwise return at once. Call
        it right after `add`."""
        if not self.shared or invocation_id not in self._dirty:
            return
        if self._stored is None:
            self._stored = asyncio.get_running_loop().create_future()
        self._wake.set()
        await asyncio.shield(self._stored)

    async def get(self, space: str, invocation_id: str) -> dict[str, Any] | None:
        pending = self._pending.get(invocation_id)
        if pending is not None:
            found = pending.to_json()
        else:
            body = await self._run(self._get, invocation_id)
            found = orjson.loads(body) if body is not None else None
        return found if found is not None and found["space"] == space else None

    async def recent(
        self, space: str, function_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The newest records first, of one function or of the whole space."""
        rows = await self._run(self._list, space, function_id, limit)
        found: dict[str, tuple[float, Any]] = {}
        for created, body in rows:
            record = orjson.loads(body)
            found[record["invocationId"]] = (created, record)
        for invocation in list(self._pending.values()):
            if invocation.space == space and function_id in (None, invocation.function_id):
                found[invocation.id] = (invocation.created, invocation)
        newest = sorted(found.values(), key=lambda pair: pair[0], reverse=True)[:limit]
        return [
            record.to_json() if isinstance(record, Invocation) else record for _, record in newest
        ]

    async def flush(self) -> None:
        """Store every pending record now."""
        batch, self._dirty = self._dirty, {}
        stored, self._stored = self._stored, None
        if batch:
            try:
                await self._run(self._store, list(batch.values()))
            finally:
                for key, invocation in batch.items():
                    if self._pending.get(key) is invocation:
                        del self._pending[key]
                if stored is not None:
                    stored.set_result(None)  # stored, or failed (and logged): calls go on
        elif stored is not None:
            stored.set_result(None)
        now = time.time()
        if now - self._last_purge > _PURGE_EVERY:
            self._last_purge = now
            await self._run(self._purge, now - self.retention)

    async def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        with contextlib.suppress(Exception):
            await self.flush()
        with contextlib.suppress(Exception):
            await self._run(self._disconnect)
        self._executor.shutdown(wait=True)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self._stored is None:  # no call waits for this batch: let it grow
                await asyncio.sleep(_FLUSH_DELAY)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("storing invocation records failed")
            if self._dropped:
                log.warning("%d invocation records dropped: the writer fell behind", self._dropped)
                self._dropped = 0

    def _row(self, invocation: Invocation) -> tuple[str, str, str, float, bytes]:
        stored = invocation.to_json()
        for field, flag in (("input", "inputTruncated"), ("payload", "payloadTruncated")):
            value = stored.get(field)
            if value is None:
                continue
            size = len(orjson.dumps(value))
            if size > self.max_field_bytes:
                stored[field] = None
                stored[flag] = size
        body = orjson.dumps(stored)
        return (invocation.id, invocation.space, invocation.function_id, invocation.created, body)

    async def _run(self, function: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _get(self, invocation_id: str) -> bytes | None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT body FROM invocations WHERE id = ?", (invocation_id,)
        ).fetchone()
        return row[0] if row else None

    def _list(self, space: str, function_id: str | None, limit: int) -> list[tuple[float, bytes]]:
        assert self._conn is not None
        if function_id is None:
            query = (
                "SELECT created, body FROM invocations WHERE space = ? "
                "ORDER BY created DESC LIMIT ?"
            )
            args: tuple[object, ...] = (space, limit)
        else:
            query = (
                "SELECT created, body FROM invocations WHERE space = ? AND function_id = ? "
                "ORDER BY created DESC LIMIT ?"
            )
            args = (space, function_id, limit)
        return [(row[0], row[1]) for row in self._conn.execute(query, args)]

    def _store(self, invocations: list[Invocation]) -> None:
        """On the writer thread: format and insert a batch in one transaction."""
        assert self._conn is not None
        rows = [self._row(invocation) for invocation in invocations]
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")  # the write lock now: a deferred upgrade may fail busy
        try:
            conn.executemany(
                "INSERT INTO invocations (id, space, function_id, created, body) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                rows,
            )
            # Beyond the limit, the oldest go (seq grows with every new record).
            conn.execute(
                "DELETE FROM invocations WHERE seq <= (SELECT max(seq) FROM invocations) - ?",
                (self.limit,),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _purge(self, before: float) -> None:
        assert self._conn is not None
        self._conn.execute("DELETE FROM invocations WHERE created < ?", (before,))
