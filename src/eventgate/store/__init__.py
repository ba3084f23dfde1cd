"""The config store: one small interface, an embedded SQLite backend, etcd in a cluster."""

from eventgate.store.base import (
    Change,
    Entry,
    KeyExists,
    RevisionMismatch,
    Store,
    StoreUnavailable,
    WatchCompacted,
)

__all__ = [
    "Change",
    "Entry",
    "KeyExists",
    "RevisionMismatch",
    "Store",
    "StoreUnavailable",
    "WatchCompacted",
]
