"""Group commit: many concurrent writers share one SQLite connection, one thread, one fsync.

Each write is a function of the connection. Writes submitted while a transaction is being
committed wait, and then go together into the next transaction: under load one fsync covers
many writes, with no timer adding latency when idle. If a batched transaction fails, its writes
are retried one transaction each, so one bad write fails alone.
"""

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]


class Batched:
    """A write that shares one call with the other writes of the same `function` in its
    transaction: `function(connection, items)` returns one result per item, in order."""

    __slots__ = ("function", "item")

    def __init__(self, function: Callable[[sqlite3.Connection, list[Any]], list[Any]], item: Any):
        self.function = function
        self.item = item

    def __call__(self, connection: sqlite3.Connection) -> Any:
        return self.function(connection, [self.item])[0]


class ConnectionThread:
    """One SQLite connection used only from its own thread."""

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connect = connect
        self._connection: sqlite3.Connection | None = None

    @property
    def connection(self) -> sqlite3.Connection:
        assert self._connection is not None, "open() first"
        return self._connection

    async def open(self) -> None:
        self._connection = await self.call(self._connect)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on this thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def close(self) -> None:
        """Close the connection and stop the thread; closing twice is harmless."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await self.call(connection.close)
        self._executor.shutdown()


class GroupCommit:
    """Batches submitted writes into transactions on a `ConnectionThread`."""

    def __init__(self, thread: ConnectionThread, max_batch: int = 4096) -> None:
        self._thread = thread
        self._max_batch = max_batch
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._in_flight: list[tuple[Write, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="eventgate-group-commit")

    async def submit(self, write: Callable[[sqlite3.Connection], T]) -> T:
        """Run `write` in a transaction; returns its result once the transaction is committed."""
        if self._closing or self._task is None or self._task.done():
            raise RuntimeError("the queue is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((write, future))
        self._wakeup.set()
        return await future

    async def submit_batched(
        self, function: Callable[[sqlite3.Connection, list[Any]], list[T]], item: Any
    ) -> T:
        """Like `submit`, but the items of every such write in a transaction go to one
        `function(connection, items)` call (e.g. one multi-row insert for many appends)."""
        return await self.submit(Batched(function, item))

    async def close(self) -> None:
        """Commit what was submitted, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        """Commit until closed; if this task dies, fail every waiting caller, never hang one."""
        try:
            await self._commit_until_closed()
        finally:
            for _, future in [*self._in_flight, *self._pending]:
                if not future.done():
                    future.set_exception(RuntimeError("the queue is closed"))
            self._pending.clear()

    async def _commit_until_closed(self) -> None:
        """One transaction in flight at a time. The next batch starts in the writer thread
        before the callers of the last one are woken, so their next writes are prepared on
        the event loop while the thread commits: the two overlap instead of taking turns."""
        committing = self._start()
        while True:
            if committing is None:
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                committing = self._start()
                continue
            outcomes = await committing
            finished = self._in_flight
            committing = self._start()
            for (_, future), (ok, value) in zip(finished, outcomes, strict=True):
                if future.done():  # its caller was cancelled; the write stands
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _start(self) -> asyncio.Future[list[tuple[bool, Any]]] | None:
        """Hand the next batch of pending writes to the writer thread, if there is one."""
        self._in_flight = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        if not self._in_flight:
            return None
        writes = [write for write, _ in self._in_flight]
        return asyncio.ensure_future(self._thread.call(self._commit, writes))

    def _commit(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        try:
            return [(True, result) for result in self._transaction(writes)]
        except Exception as error:
            if len(writes) == 1:
                return [(False, error)]
            return [self._commit([write])[0] for write in writes]

    def _transaction(self, writes: list[Write]) -> list[Any]:
        connection = self._thread.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            results = _run_writes(connection, writes)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        self.commits += 1
        return results


def _run_writes(connection: sqlite3.Connection, writes: list[Write]) -> list[Any]:
    """Run the writes of one transaction; `Batched` ones once per function, with all their
    items (writes in one transaction come from concurrent callers, so order among them is
    free)."""
    results: list[Any] = [None] * len(writes)
    groups: dict[Any, list[int]] = {}
    for index, write in enumerate(writes):
        if isinstance(write, Batched):
            groups.setdefault(write.function, []).append(index)
        else:
            results[index] = write(connection)
    for function, indexes in groups.items():
        items = [writes[index].item for index in indexes]  # type: ignore[attr-defined]
        for index, result in zip(indexes, function(connection, items), strict=True):
            results[index] = result
    return results
