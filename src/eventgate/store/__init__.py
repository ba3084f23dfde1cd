"""The config store: one small interface, with an embedded SQLite backend (and etcd in a cluster)."""

from eventgate.store.base import Change, Entry, KeyExists, RevisionMismatch, Store, StoreUnavailable

__all__ = ["Change", "Entry", "KeyExists", "RevisionMismatch", "Store", "StoreUnavailable"]
