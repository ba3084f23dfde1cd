"""The contract every config store backend keeps, written against the `Store` interface only.

Add a backend by adding a parameter to the `open_store` fixture: a factory that opens another
store instance on the same data (same file, same cluster and key root) each time it is called.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from pathlib import Path

import pytest

from eventgate.store import Change, KeyExists, RevisionMismatch, Store, StoreUnavailable
from eventgate.store.etcd import EtcdStore
from eventgate.store.sqlite import SqliteStore
from tests.etcd_server import EtcdServer, etcd_server  # noqa: F401 - a fixture

StoreOpener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "etcd"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreOpener]:
    opened: list[Store] = []
    open_backend: StoreOpener
    if request.param == "etcd":  # one server per module, a key prefix of its own per test
        server: EtcdServer = request.getfixturevalue("etcd_server")
        prefix = f"/eventgate-test/{uuid.uuid4().hex}/"
        open_backend = partial(EtcdStore.open, server.url, prefix=prefix)
    else:
        open_backend = partial(SqliteStore.open, tmp_path / "config.db")

    async def open_another() -> Store:
        store = await open_backend()
        opened.append(store)
        return store

    yield open_another
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: StoreOpener) -> Store:
    return await open_store()


async def take(changes: AsyncIterator[Change], count: int) -> list[Change]:
    """The next `count` changes, failing the test if they do not come within 5 seconds."""
    async with asyncio.timeout(5):
        return [await anext(changes) for _ in range(count)]


async def test_put_then_get(store: Store) -> None:
    entry = await store.put("functions/default/echo", b'{"a":1}')
    assert entry.key == "functions/default/echo"
    assert entry.value == b'{"a":1}'
    assert await store.get("functions/default/echo") == entry
    assert await store.get("functions/default/missing") is None


async def test_list_returns_the_prefix_sorted_with_the_store_revision(store: Store) -> None:
    await store.put("functions/default/b", b"b")
    await store.put("functions/default/a", b"a")
    await store.put("functions/default2/c", b"c")
    last = await store.put("subscriptions/default/x", b"x")

    entries, revision = await store.list("functions/default/")
    assert [entry.key for entry in entries] == ["functions/default/a", "functions/default/b"]
    assert [entry.value for entry in entries] == [b"a", b"b"]
    assert revision == last.revision
    everything, _ = await store.list("")
    assert len(everything) == 4


async def test_list_prefix_is_literal(store: Store) -> None:
    await store.put("subscriptions/default/http,POST,%2F", b"1")
    await store.put("subscriptions/default/http,POST,x2F", b"2")
    await store.put("subscriptions/default_x/a", b"3")

    entries, _ = await store.list("subscriptions/default/http,POST,%")
    assert [entry.value for entry in entries] == [b"1"]
    entries, _ = await store.list("subscriptions/default_")
    assert [entry.value for entry in entries] == [b"3"]


async def test_every_write_gets_a_higher_revision(store: Store) -> None:
    first = await store.put("k/a", b"1")
    second = await store.put("k/a", b"2")
    third = await store.put("k/b", b"3")
    assert first.revision < second.revision < third.revision
    deleted = await store.delete("k/a")
    assert deleted is not None and deleted > third.revision
    _, after_delete = await store.list("k/")
    assert after_delete == deleted


async def test_create_fails_when_the_key_exists(store: Store) -> None:
    await store.put("functions/default/echo", b"first", create=True)
    with pytest.raises(KeyExists):
        await store.put("functions/default/echo", b"second", create=True)
    entry = await store.get("functions/default/echo")
    assert entry is not None and entry.value == b"first"


async def test_expect_revision_guards_put_and_delete(store: Store) -> None:
    entry = await store.put("k/a", b"1")
    with pytest.raises(RevisionMismatch):
        await store.put("k/a", b"2", expect_revision=entry.revision + 100)
    updated = await store.put("k/a", b"2", expect_revision=entry.revision)
    assert updated.value == b"2"

    with pytest.raises(RevisionMismatch):
        await store.delete("k/a", expect_revision=entry.revision)
    assert await store.delete("k/a", expect_revision=updated.revision)
    assert await store.get("k/a") is None


async def test_delete_of_a_missing_key_is_false_and_writes_nothing(store: Store) -> None:
    await store.put("k/a", b"1")
    _, before = await store.list("")
    assert await store.delete("k/missing") is None
    _, after = await store.list("")
    assert after == before


async def test_watch_sees_puts_and_deletes_in_order(store: Store) -> None:
    _, revision = await store.list("functions/")
    async with aclosing(store.watch("functions/", revision)) as changes:
        first = await store.put("functions/default/a", b"1")
        await store.put("subscriptions/default/s", b"not watched")
        second = await store.put("functions/default/b", b"2")
        assert await store.delete("functions/default/a")

        seen = await take(changes, 3)

    assert seen[0] == Change("functions/default/a", b"1", first.revision)
    assert seen[1] == Change("functions/default/b", b"2", second.revision)
    assert (seen[2].key, seen[2].value) == ("functions/default/a", None)
    assert seen[2].revision > second.revision


async def test_watch_from_an_old_revision_replays(store: Store) -> None:
    first = await store.put("k/a", b"1")
    second = await store.put("k/b", b"2")
    third = await store.put("k/a", b"3")

    async with aclosing(store.watch("k/", first.revision)) as changes:
        seen = await take(changes, 2)
    assert [change.revision for change in seen] == [second.revision, third.revision]
    assert [change.value for change in seen] == [b"2", b"3"]


async def test_a_second_instance_sees_writes_through_watch(open_store: StoreOpener) -> None:
    writer = await open_store()
    reader = await open_store()
    _, revision = await reader.list("functions/")
    async with aclosing(reader.watch("functions/", revision)) as changes:
        entry = await writer.put("functions/default/echo", b"1")
        await writer.delete("functions/default/echo")
        seen = await take(changes, 2)
    assert seen[0] == Change("functions/default/echo", b"1", entry.revision)
    assert seen[1].value is None
    assert await reader.get("functions/default/echo") is None


async def test_data_survives_close_and_reopen(open_store: StoreOpener) -> None:
    store = await open_store()
    entry = await store.put("functions/default/echo", b"1")
    await store.close()

    reopened = await open_store()
    assert await reopened.get("functions/default/echo") == entry
    later = await reopened.put("functions/default/other", b"2")
    assert later.revision > entry.revision


async def test_a_closed_store_is_unavailable(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get("k/a")
    with pytest.raises(StoreUnavailable):
        await store.put("k/a", b"1")
    await store.close()


async def test_a_waiting_watcher_fails_when_its_store_closes(store: Store) -> None:
    _, revision = await store.list("")
    async with aclosing(store.watch("", revision)) as changes:
        waiting = asyncio.create_task(anext(changes))
        await store.close()
        with pytest.raises(StoreUnavailable):
            async with asyncio.timeout(5):
                await waiting
