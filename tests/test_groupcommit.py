"""Group commit on its own: batching, a failing write failing alone, close and cancellation."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from eventgate.delivery.groupcommit import ConnectionThread, GroupCommit


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[GroupCommit]:
    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(
            tmp_path / "g.db", isolation_level=None, check_same_thread=False
        )
        connection.execute("CREATE TABLE rows (value INTEGER PRIMARY KEY)")
        return connection

    thread = ConnectionThread("test-writer", connect)
    await thread.open()
    group = GroupCommit(thread)
    group.start()
    yield group
    await group.close()
    await thread.close()


def insert(value: int) -> Callable[[sqlite3.Connection], int]:
    return lambda connection: connection.execute("INSERT INTO rows VALUES (?)", (value,)).rowcount


def count(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT count(*) FROM rows").fetchone()[0]


async def test_concurrent_writes_share_transactions(group: GroupCommit) -> None:
    results = await asyncio.gather(*(group.submit(insert(n)) for n in range(500)))
    assert results == [1] * 500
    assert group.commits < 10
    assert await group.submit(count) == 500


async def test_a_failing_write_fails_alone(group: GroupCommit) -> None:
    await group.submit(insert(7))
    results = await asyncio.gather(
        group.submit(insert(1)),
        group.submit(insert(7)),  # primary key conflict
        group.submit(insert(2)),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await group.submit(count) == 3


async def test_a_cancelled_callers_write_still_commits(group: GroupCommit) -> None:
    waiting = asyncio.ensure_future(group.submit(insert(1)))
    await asyncio.sleep(0)  # let it submit: the write is queued before the cancel
    waiting.cancel()
    assert await group.submit(count) == 1


async def test_close_commits_what_was_submitted_then_refuses(group: GroupCommit) -> None:
    pending = [asyncio.ensure_future(group.submit(insert(n))) for n in range(3)]
    await asyncio.sleep(0)
    await group.close()
    assert [await write for write in pending] == [1, 1, 1]
    with pytest.raises(RuntimeError, match="closed"):
        await group.submit(count)
