"""The routing table against the real SQLite store: follows writes, deletes and outages."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from eventgate.model import Function, Subscription, store_key
from eventgate.observability.metrics import Metrics
from eventgate.routing.table import RoutingTable
from eventgate.store.base import Change, Entry, Store, StoreUnavailable, WatchCompacted
from eventgate.store.sqlite import SqliteStore

ROUTE_WITHIN = 1.0  # seconds: a config change must route within this


class FlakyStore(Store):
    """A SqliteStore whose watch and list fail on demand, to simulate an outage."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.failure: type[Exception] | None = None
        self.watch_failed = asyncio.Event()
        self.list_failed = asyncio.Event()

    async def get(self, key: str) -> Entry | None:
        return await self.inner.get(key)

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        if self.failure is StoreUnavailable:
            self.list_failed.set()
            raise StoreUnavailable("simulated outage")
        return await self.inner.list(prefix)

    async def put(
        self, key: str, value: bytes, *, create: bool = False, expect_revision: int | None = None
    ) -> Entry:
        return await self.inner.put(key, value, create=create, expect_revision=expect_revision)

    async def delete(self, key: str, *, expect_revision: int | None = None) -> bool:
        return await self.inner.delete(key, expect_revision=expect_revision)

    async def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Change]:
        async for change in self.inner.watch(prefix, after_revision):
            if self.failure is StoreUnavailable:
                self.watch_failed.set()
                raise StoreUnavailable("simulated outage: the change is lost")
            if self.failure is WatchCompacted:
                self.failure = None
                self.watch_failed.set()
                raise WatchCompacted(after_revision, change.revision)
            yield change

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "config.db")
    yield store
    await store.close()


async def put_function(store: Store, function_id: str, space: str = "default") -> Entry:
    fn = Function.model_validate(
        {"functionId": function_id, "type": "http", "provider": {"url": "http://127.0.0.1:1/"}}
    )
    return await store.put(store_key("functions", space, function_id), orjson.dumps(fn.to_json()))


async def put_subscription(store: Store, function_id: str, path: str, **fields: str) -> Entry:
    sub = Subscription.model_validate({"functionId": function_id, "path": path, **fields})
    key = store_key("subscriptions", sub.space, sub.subscription_id or "")
    return await store.put(key, orjson.dumps(sub.to_json()))


async def routed(table: RoutingTable, revision: int) -> None:
    """Wait until the table routes store revision `revision`; fail past ROUTE_WITHIN."""
    async with asyncio.timeout(ROUTE_WITHIN):
        await table.wait_for_revision(revision)


async def current_revision(store: Store) -> int:
    return (await store.list(""))[1]


async def started(store: Store, metrics: Metrics | None = None) -> RoutingTable:
    table = RoutingTable(store, metrics or Metrics(), backoff_base=0.01, backoff_max=0.05)
    await table.start()
    return table


async def test_start_lists_what_is_there(sqlite: SqliteStore) -> None:
    await put_function(sqlite, "echo")
    entry = await put_subscription(sqlite, "echo", "/")
    table = await started(sqlite)
    try:
        assert table.revision == entry.revision
        assert table.snapshot.match_sync("POST", "/") is not None
    finally:
        await table.stop()


async def test_writes_and_deletes_route_within_a_second(sqlite: SqliteStore) -> None:
    metrics = Metrics()
    table = await started(sqlite, metrics)
    try:
        await put_function(sqlite, "echo")
        entry = await put_subscription(sqlite, "echo", "/hello/:name", method="GET")
        await routed(table, entry.revision)
        assert table.snapshot.match_sync("GET", "/hello/you") is not None
        count = metrics.registry.get_sample_value(
            "eventgate_routing_resources", {"kind": "subscriptions"}
        )
        assert count == 1

        await sqlite.delete(entry.key)
        await routed(table, await current_revision(sqlite))
        assert table.snapshot.match_sync("GET", "/hello/you") is None
    finally:
        await table.stop()


async def test_a_burst_of_writes_all_routes(sqlite: SqliteStore) -> None:
    table = await started(sqlite)
    try:
        await put_function(sqlite, "f")
        for n in range(200):
            entry = await put_subscription(sqlite, "f", f"/burst/{n}")
        await routed(table, entry.revision)
        assert all(table.snapshot.match_sync("POST", f"/burst/{n}") for n in range(200))
    finally:
        await table.stop()


async def test_undecodable_values_are_skipped(sqlite: SqliteStore) -> None:
    await sqlite.put("functions/default/broken", b"{not json")
    await sqlite.put("subscriptions/default/bad", orjson.dumps({"functionId": "???"}))
    await put_function(sqlite, "ok")
    entry = await put_subscription(sqlite, "ok", "/")
    table = await started(sqlite)
    try:
        assert table.snapshot.match_sync("POST", "/") is not None
        assert set(table.snapshot.functions) == {("default", "ok")}
        await sqlite.put(entry.key, b"[]")  # an update that does not decode drops the old value
        await routed(table, (await put_function(sqlite, "later")).revision)
        assert table.snapshot.match_sync("POST", "/") is None
    finally:
        await table.stop()


@pytest.mark.parametrize("failure", [StoreUnavailable, WatchCompacted])
async def test_a_watch_failure_resyncs_without_missing_deletes_or_duplicating(
    sqlite: SqliteStore, failure: type[Exception]
) -> None:
    store = FlakyStore(sqlite)
    await put_function(store, "f")
    doomed = await put_subscription(store, "f", "/doomed")
    await put_subscription(store, "f", "/", type="async", eventType="user.created")
    table = await started(store)
    try:
        store.failure = failure
        await sqlite.delete(doomed.key)  # the watch loses this change
        await store.watch_failed.wait()
        if failure is StoreUnavailable:
            await store.list_failed.wait()  # a retry during the outage failed too
            store.failure = None  # the outage ends; the table re-lists on its next retry
        await routed(table, await current_revision(sqlite))
        assert table.snapshot.match_sync("POST", "/doomed") is None
        assert len(table.snapshot.match_async("user.created", "POST", "/")) == 1

        entry = await put_subscription(store, "f", "/after")  # and the watch follows again
        await routed(table, entry.revision)
        assert table.snapshot.match_sync("POST", "/after") is not None
    finally:
        await table.stop()
