"""What only the SQLite store does: log pruning, several processes on one file, durability."""

import asyncio
import sqlite3
import sys
from contextlib import aclosing
from pathlib import Path

import pytest

from eventgate.store import WatchCompacted
from eventgate.store.sqlite import SqliteStore

WRITER = """
import asyncio, sys
from pathlib import Path
from eventgate.store.sqlite import SqliteStore

async def main() -> None:
    store = await SqliteStore.open(Path(sys.argv[1]))
    for n in range(int(sys.argv[2])):
        await store.put(f"functions/default/f{n}", b"from another process")
    await store.close()

asyncio.run(main())
"""


async def test_a_watcher_behind_the_pruned_log_must_list_again(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "config.db", history=5)
    try:
        for n in range(12):
            await store.put(f"k/{n}", b"x")
        async with aclosing(store.watch("k/", 0)) as changes:
            with pytest.raises(WatchCompacted) as caught:
                await anext(changes)
        assert caught.value.compacted_revision == 7

        entries, revision = await store.list("k/")
        assert len(entries) == 12
        async with aclosing(store.watch("k/", revision)) as changes:
            entry = await store.put("k/new", b"y")
            async with asyncio.timeout(5):
                assert (await anext(changes)).revision == entry.revision
    finally:
        await store.close()


async def test_writes_through_the_same_store_wake_watchers_at_once(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "config.db", poll_interval=3600)
    try:
        async with aclosing(store.watch("k/", 0)) as changes:
            waiting = asyncio.create_task(anext(changes))
            await store.put("k/a", b"1")
            async with asyncio.timeout(5):
                assert (await waiting).key == "k/a"
    finally:
        await store.close()


async def test_writes_from_another_process_reach_a_watcher(tmp_path: Path) -> None:
    path = tmp_path / "config.db"
    store = await SqliteStore.open(path)
    try:
        async with aclosing(store.watch("functions/", 0)) as changes:
            writer = await asyncio.create_subprocess_exec(
                sys.executable, "-c", WRITER, str(path), "20"
            )
            assert await writer.wait() == 0
            async with asyncio.timeout(5):
                seen = [await anext(changes) for _ in range(20)]
        assert [change.revision for change in seen] == list(range(1, 21))
    finally:
        await store.close()


async def test_concurrent_writers_on_one_file_get_distinct_revisions(tmp_path: Path) -> None:
    path = tmp_path / "config.db"
    store = await SqliteStore.open(path)
    try:
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(path), "200"
        )
        mine = 0
        while writer.returncode is None or mine < 100:
            await store.put(f"subscriptions/default/s{mine}", b"here")
            mine += 1
        assert await writer.wait() == 0

        entries, revision = await store.list("")
        assert revision == len(entries) == 200 + mine
        assert {entry.revision for entry in entries} == set(range(1, revision + 1))
    finally:
        await store.close()


async def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "data" / "config.db")
    await store.close()
    with sqlite3.connect(tmp_path / "data" / "config.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
