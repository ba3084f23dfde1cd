"""What only the etcd store does: compaction, endpoint failover, timeouts, outages and recovery,
and the routing table following etcd through a connection that is cut and comes back.

The contract every store keeps is tested in test_store_contract.py, against etcd too.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from pathlib import Path

import httpx
import pytest

from eventgate.observability.metrics import Metrics
from eventgate.routing.table import RoutingTable
from eventgate.store import Change, StoreUnavailable, WatchCompacted
from eventgate.store.etcd import EtcdStore
from eventgate.store.etcd_http import b64, parse_endpoints
from tests.etcd_server import EtcdServer, TcpProxy, etcd_server  # noqa: F401 - a fixture
from tests.processes import free_port
from tests.test_routing_table import put_function, put_subscription

WAIT = 5.0  # seconds: a safety net for every wait below; none should come near it
FAST = 1.0  # seconds: how soon a call must fail once etcd is gone


@pytest.fixture
def prefix() -> str:
    return f"/eventgate-test/{uuid.uuid4().hex}/"


@pytest.fixture
async def store(etcd_server: EtcdServer, prefix: str) -> AsyncIterator[EtcdStore]:  # noqa: F811
    store = await EtcdStore.open(etcd_server.url, prefix=prefix)
    yield store
    await store.close()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of the test's own, for tests that stop it."""
    server = EtcdServer(tmp_path / "etcd").start()
    yield server
    server.stop()


async def next_change(changes: AsyncIterator[Change]) -> Change:
    async with asyncio.timeout(WAIT):
        return await anext(changes)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (state with no event to wait on) until it holds, failing after WAIT."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_endpoints_parse_from_the_store_url() -> None:
    assert parse_endpoints("etcd://10.0.0.1:2379, etcd-1.etcd:22379,[::1]") == [
        "http://10.0.0.1:2379",
        "http://etcd-1.etcd:22379",
        "http://[::1]:2379",
    ]
    assert parse_endpoints("etcd") == ["http://etcd:2379"]
    with pytest.raises(ValueError, match="no etcd endpoint"):
        parse_endpoints("etcd://")
    with pytest.raises(ValueError, match="bad etcd endpoint 'etcd:x'"):
        parse_endpoints("etcd://etcd:x")


async def test_keys_live_under_the_prefix(store: EtcdStore, etcd_server: EtcdServer) -> None:  # noqa: F811
    await store.put("functions/default/echo", b"1")
    other = await EtcdStore.open(etcd_server.url, prefix=store.prefix + "functions/")
    try:
        assert await other.get("default/echo") is not None
        entries, _ = await other.list("")
        assert [entry.key for entry in entries] == ["default/echo"]
    finally:
        await other.close()


async def test_a_long_list_is_read_in_pages(
    store: EtcdStore,
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    keys = [f"k/{n:04d}" for n in range(1001)]  # two pages of 500 and one key
    async with httpx.AsyncClient(base_url=f"http://{etcd_server.endpoint}") as etcd:
        for first in range(0, len(keys), 100):  # etcd takes up to 128 writes in one transaction
            puts = [
                {"request_put": {"key": b64(f"{store.prefix}{key}".encode()), "value": b64(b"v")}}
                for key in keys[first : first + 100]
            ]
            (await etcd.post("/v3/kv/txn", json={"success": puts})).raise_for_status()
    last = await store.put("k/~", b"last")
    entries, revision = await store.list("k/")
    assert revision == last.revision
    assert [entry.key for entry in entries] == [*keys, "k/~"]


async def test_a_watch_from_a_compacted_revision_raises_watch_compacted(
    store: EtcdStore,
    etcd_server: EtcdServer,  # noqa: F811
) -> None:
    first = await store.put("k/a", b"1")
    await store.put("k/a", b"2")
    last = await store.put("k/b", b"3")
    etcd_server.compact(last.revision)

    with pytest.raises(WatchCompacted) as compacted:
        async with aclosing(store.watch("k/", first.revision)) as changes:
            await next_change(changes)
    assert compacted.value.after_revision == first.revision
    assert compacted.value.compacted_revision == last.revision

    async with aclosing(store.watch("k/", last.revision)) as changes:  # from there on it works
        later = await store.put("k/c", b"4")
        assert await next_change(changes) == Change("k/c", b"4", later.revision)


async def test_calls_and_watches_fail_over_to_a_live_endpoint(
    etcd_server: EtcdServer,  # noqa: F811
    prefix: str,
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    store = await EtcdStore.open(f"etcd://{dead},{etcd_server.endpoint}", prefix=prefix)
    try:
        entry = await store.put("k/a", b"1")
        assert await store.get("k/a") == entry
        async with aclosing(store.watch("k/", entry.revision)) as changes:
            later = await store.put("k/a", b"2")
            assert await next_change(changes) == Change("k/a", b"2", later.revision)
    finally:
        await store.close()


async def test_an_unreachable_etcd_is_unavailable_at_once() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"etcd is unreachable.*{endpoint}"):
        await EtcdStore.open(f"etcd://{endpoint}")
    assert time.monotonic() - started < FAST


async def test_an_etcd_that_does_not_answer_times_out(
    etcd_server: EtcdServer,  # noqa: F811
    prefix: str,
) -> None:
    store = await EtcdStore.open(etcd_server.url, prefix=prefix, call_timeout=0.5)
    try:
        entry = await store.put("k/a", b"1")
        etcd_server.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="did not answer"):
                await store.get("k/a")
            assert time.monotonic() - started < FAST
        finally:
            etcd_server.thaw()
        assert await store.get("k/a") == entry
    finally:
        await store.close()


async def test_a_stopped_etcd_fails_calls_and_watches_fast(own_etcd: EtcdServer) -> None:
    store = await EtcdStore.open(own_etcd.url)
    try:
        entry = await store.put("k/a", b"1")
        async with aclosing(store.watch("k/", entry.revision)) as changes:
            await store.put("k/a", b"2")
            await next_change(changes)  # the watch stream is up
            waiting = asyncio.create_task(next_change(changes))
            await asyncio.to_thread(own_etcd.stop)
            with pytest.raises(StoreUnavailable):
                await waiting

        started = time.monotonic()
        for call in (
            store.get("k/a"),
            store.list("k/"),
            store.put("k/a", b"3"),
            store.put("k/b", b"3", create=True),
            store.delete("k/a"),
            store.delete("k/a", expect_revision=entry.revision),
            anext(store.watch("k/", entry.revision)),
        ):
            with pytest.raises(StoreUnavailable, match="etcd is unreachable"):
                await call
        assert time.monotonic() - started < FAST
    finally:
        await store.close()


async def test_the_same_store_works_again_after_etcd_restarts(own_etcd: EtcdServer) -> None:
    store = await EtcdStore.open(own_etcd.url)
    try:
        entry = await store.put("k/a", b"1")
        await asyncio.to_thread(own_etcd.stop)
        with pytest.raises(StoreUnavailable):
            await store.get("k/a")
        await asyncio.to_thread(own_etcd.start)

        assert await store.get("k/a") == entry
        async with aclosing(store.watch("k/", entry.revision)) as changes:
            later = await store.put("k/a", b"2")
            assert await next_change(changes) == Change("k/a", b"2", later.revision)
    finally:
        await store.close()


async def test_the_routing_table_applies_a_delete_made_while_it_was_cut_off(
    etcd_server: EtcdServer,  # noqa: F811
    prefix: str,
) -> None:
    proxy = TcpProxy(etcd_server.client_port)
    await proxy.listen()
    writer = await EtcdStore.open(etcd_server.url, prefix=prefix)
    cut_off = await EtcdStore.open(f"etcd://{proxy.endpoint}", prefix=prefix, call_timeout=1.0)
    table = RoutingTable(cut_off, Metrics(), backoff_base=0.05, backoff_max=0.2)
    try:
        await put_function(writer, "f")
        doomed = await put_subscription(writer, "f", "/doomed")
        await put_subscription(writer, "f", "/", type="async", eventType="user.created")
        await table.start()
        assert table.snapshot.match_sync("POST", "/doomed") is not None

        await proxy.sever()
        await eventually(lambda: not table.describe()["following"], "the watch to fail")
        assert await writer.delete(doomed.key)
        await put_subscription(writer, "f", "/", type="async", eventType="user.created")
        added = await put_subscription(writer, "f", "/added")
        assert table.snapshot.match_sync("POST", "/doomed") is not None  # the last snapshot

        await proxy.listen()
        async with asyncio.timeout(WAIT):
            await table.wait_for_revision(added.revision)
        assert table.snapshot.match_sync("POST", "/doomed") is None
        assert table.snapshot.match_sync("POST", "/added") is not None
        assert len(table.snapshot.match_async("user.created", "POST", "/")) == 1
        assert table.describe()["following"] is True

        after = await put_subscription(writer, "f", "/after")  # and the watch follows again
        async with asyncio.timeout(WAIT):
            await table.wait_for_revision(after.revision)
        assert table.snapshot.match_sync("POST", "/after") is not None
    finally:
        await table.stop()
        await cut_off.close()
        await writer.close()
        await proxy.sever()
