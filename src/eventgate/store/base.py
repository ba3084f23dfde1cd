"""The config store interface every backend implements, and the values it passes around.

Keys are strings such as `functions/default/echo`; values are JSON bytes. Every write gets a new,
store-wide, increasing revision, so a watcher can list everything at revision R and then follow
the changes after R without missing or repeating one.
"""

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

from eventgate.errors import Conflict, Unavailable


@dataclass(frozen=True, slots=True)
class Entry:
    """A key, its value and the revision that last wrote it."""

    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class Change:
    """One write seen by a watcher; `value` is None for a delete."""

    key: str
    value: bytes | None
    revision: int


class KeyExists(Conflict):
    """A create found the key already there."""


class RevisionMismatch(Conflict):
    """A conditional write found the key at another revision than expected."""


class StoreUnavailable(Unavailable):
    """The backend cannot be reached; reads of the routing snapshot still work."""


class WatchCompacted(Exception):
    """A watch asked for changes the store no longer keeps: list again, then watch from there."""

    def __init__(self, after_revision: int, compacted_revision: int) -> None:
        super().__init__(
            f"changes after revision {after_revision} are gone (history was compacted up to "
            f"revision {compacted_revision}); list again and watch from the listed revision"
        )
        self.after_revision = after_revision
        self.compacted_revision = compacted_revision


class Store(ABC):
    """get/put/delete/list/watch over string keys and bytes values."""

    @abstractmethod
    async def get(self, key: str) -> Entry | None:
        """The entry at `key`, or None."""

    @abstractmethod
    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        """Every entry under `prefix` (sorted by key) and the store revision they were read at."""

    @abstractmethod
    async def put(
        self, key: str, value: bytes, *, create: bool = False, expect_revision: int | None = None
    ) -> Entry:
        """Write `value`. `create` fails with KeyExists if the key is there; `expect_revision`
        fails with RevisionMismatch unless the key is at that revision."""

    @abstractmethod
    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        """Remove `key`: the store revision of the delete, or None if the key was not there."""

    @abstractmethod
    def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Change]:
        """Every change under `prefix` with a revision above `after_revision`, in order, forever.

        Raises WatchCompacted (when iterated) if those changes are no longer kept."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and files."""
