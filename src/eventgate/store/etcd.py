"""The cluster config store: etcd v3, every node's keys under one prefix (default `/eventgate/`).

Revisions are etcd's: an entry's revision is its `mod_revision`, a list's revision is the header
revision it was read at, and a watch after revision R is an etcd watch from R + 1. Conditional
writes are etcd transactions: `create` compares `create_revision == 0`, `expect_revision`
compares `mod_revision`. A watch whose start was compacted raises WatchCompacted; a watch whose
stream breaks or ends raises StoreUnavailable, and so does every call that etcd does not
answer within `call_timeout`: the routing table then re-lists and re-watches with backoff, and
the config API answers 503. Nothing is cached here, so a store object works again as soon as
etcd does.

etcd is spoken to through its JSON gRPC gateway (`etcd_http`), with httpx.

Usage: `store = await EtcdStore.open("etcd://127.0.0.1:2379")`, then `await store.close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from eventgate.store.base import (
    Change,
    Entry,
    KeyExists,
    RevisionMismatch,
    Store,
    StoreUnavailable,
    WatchCompacted,
)
from eventgate.store.etcd_http import EtcdHttp, Json, b64, unb64

DEFAULT_PREFIX = "/eventgate/"
_PAGE = 500  # keys per range request when listing


def _range_end(key: bytes) -> bytes:
    """The end of etcd's range [key, end) that holds exactly the keys starting with `key`."""
    stripped = key.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


class EtcdStore(Store):
    """A `Store` in etcd v3. `endpoints` is `etcd://host:port[,host:port...]` (the scheme is
    optional); `prefix` namespaces this cluster's keys; `call_timeout` bounds every call and
    `connect_timeout` each connection attempt (seconds)."""

    def __init__(
        self,
        endpoints: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        call_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.prefix = prefix
        self._prefix = prefix.encode()
        self._http = EtcdHttp(endpoints, timeout=call_timeout, connect_timeout=connect_timeout)
        self._watches: dict[asyncio.Queue[Json | Exception], asyncio.Task[None]] = {}

    @classmethod
    async def open(
        cls,
        endpoints: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        call_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> EtcdStore:
        """A store whose etcd answered once; StoreUnavailable (and nothing left open) if not."""
        store = cls(
            endpoints, prefix=prefix, call_timeout=call_timeout, connect_timeout=connect_timeout
        )
        try:
            await store._range(store._prefix, _range_end(store._prefix), count_only=True)
        except BaseException:
            await store.close()
            raise
        return store

    async def get(self, key: str) -> Entry | None:
        reply = await self._range(self._key(key))
        kvs = reply.get("kvs")
        return self._entry(kvs[0]) if kvs else None

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        """Pages through the range, every page read at the first page's revision."""
        start = self._key(prefix)
        end = _range_end(start)
        entries: list[Entry] = []
        revision = 0
        while True:
            reply = await self._range(start, end, limit=_PAGE, revision=revision)
            revision = revision or int(reply["header"]["revision"])
            kvs = reply.get("kvs", [])
            entries.extend(self._entry(kv) for kv in kvs)
            if not reply.get("more"):
                return entries, revision
            start = unb64(kvs[-1]["key"]) + b"\0"

    async def put(
        self, key: str, value: bytes, *, create: bool = False, expect_revision: int | None = None
    ) -> Entry:
        full = self._key(key)
        request = {"request_put": {"key": b64(full), "value": b64(value)}}
        if not create and expect_revision is None:
            reply = await self._http.call("/v3/kv/put", request["request_put"])
            return Entry(key, value, int(reply["header"]["revision"]))
        compare: list[Json] = []
        if create:
            compare.append({"target": "CREATE", "create_revision": "0"})
        if expect_revision is not None:
            compare.append({"target": "MOD", "mod_revision": str(expect_revision)})
        reply = await self._txn(full, compare, request)
        if not reply.get("succeeded"):
            current = _current_revision(reply)
            if create and current:
                raise KeyExists(f"key {key!r} already exists")
            raise _mismatch(key, current, expect_revision)
        return Entry(key, value, int(reply["header"]["revision"]))

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        full = self._key(key)
        request = {"key": b64(full)}
        if expect_revision is None:
            reply = await self._http.call("/v3/kv/deleterange", request)
            return int(reply["header"]["revision"]) if reply.get("deleted") else None
        compare = [{"target": "MOD", "mod_revision": str(expect_revision)}]
        reply = await self._txn(full, compare, {"request_delete_range": request})
        if reply.get("succeeded"):
            deleted = reply["responses"][0]["response_delete_range"].get("deleted")
            return int(reply["header"]["revision"]) if deleted else None
        current = _current_revision(reply)
        if not current:
            return None
        raise _mismatch(key, current, expect_revision)

    async def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Change]:
        """etcd's watch, read by a task of its own so that `close()` can end a waiting watcher."""
        start = self._key(prefix)
        request = {
            "create_request": {
                "key": b64(start),
                "range_end": b64(_range_end(start)),
                "start_revision": str(after_revision + 1),
            }
        }
        inbox: asyncio.Queue[Json | Exception] = asyncio.Queue()
        self._watches[inbox] = asyncio.create_task(self._follow(request, after_revision, inbox))
        try:
            while True:
                result = await inbox.get()
                if isinstance(result, Exception):
                    raise result
                for event in result.get("events", ()):
                    kv = event["kv"]
                    value = None if event.get("type") == "DELETE" else unb64(kv.get("value", ""))
                    yield Change(self._unkey(kv["key"]), value, int(kv["mod_revision"]))
        finally:
            reader = self._watches.pop(inbox, None)
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def close(self) -> None:
        """Close the connections; later calls and waiting watchers raise StoreUnavailable."""
        for inbox, reader in self._watches.items():
            reader.cancel()
            inbox.put_nowait(StoreUnavailable("the config store is closed"))
        await self._http.aclose()

    async def _follow(
        self, request: Json, after_revision: int, inbox: asyncio.Queue[Json | Exception]
    ) -> None:
        try:
            async for result in self._http.stream("/v3/watch", request):
                compacted = int(result.get("compact_revision", 0))
                if compacted:
                    raise WatchCompacted(after_revision, compacted)
                if result.get("canceled"):
                    reason = result.get("cancel_reason") or "no reason given"
                    raise StoreUnavailable(f"etcd canceled the watch: {reason}")
                if result.get("events"):
                    inbox.put_nowait(result)
        except Exception as error:  # handed to the watcher, which raises it
            inbox.put_nowait(error)

    async def _range(self, key: bytes, end: bytes | None = None, **options: int | bool) -> Json:
        body: Json = {"key": b64(key), **{name: value for name, value in options.items() if value}}
        if end is not None:
            body["range_end"] = b64(end)
        return await self._http.call("/v3/kv/range", body, idempotent=True)

    async def _txn(self, key: bytes, compare: list[Json], success: Json) -> Json:
        """A transaction on one key: `success` if every comparison holds, else read the key."""
        encoded = b64(key)
        return await self._http.call(
            "/v3/kv/txn",
            {
                "compare": [{"key": encoded, "result": "EQUAL", **part} for part in compare],
                "success": [success],
                "failure": [{"request_range": {"key": encoded}}],
            },
        )

    def _key(self, key: str) -> bytes:
        return self._prefix + key.encode()

    def _unkey(self, encoded: str) -> str:
        return unb64(encoded)[len(self._prefix) :].decode()

    def _entry(self, kv: Json) -> Entry:
        return Entry(self._unkey(kv["key"]), unb64(kv.get("value", "")), int(kv["mod_revision"]))


def _current_revision(failed_txn: Json) -> int:
    """The key's mod_revision as read by a failed transaction (0: the key is not there)."""
    kvs = failed_txn["responses"][0]["response_range"].get("kvs")
    return int(kvs[0]["mod_revision"]) if kvs else 0


def _mismatch(key: str, current: int, expected: int | None) -> RevisionMismatch:
    return RevisionMismatch(f"key {key!r} is at revision {current}, not the expected {expected}")
