"""A lock between the processes sharing one runtime directory: flock(2) on a lock file.

`eventgate serve --workers N` runs N processes on one data dir, each with its own `Runtime` on
the same `runtime/` folder. Work that writes a shared directory in place (an image's build) takes
the lock of that directory first, then looks again whether another process did it meanwhile.

The lock belongs to the open file, so it also excludes other holders in the same process, and
the kernel releases it when its holder closes it or dies (a killed build leaves no stale lock).
Lock files are left in place: removing one would let two processes lock two different files.
The wait polls (a blocking flock cannot be cancelled), so a waiter stops at once on cancellation.
"""

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

_FIRST_WAIT = 0.005
_LONGEST_WAIT = 0.1


@contextlib.asynccontextmanager
async def file_lock(path: Path) -> AsyncIterator[None]:
    """Hold the exclusive lock of `path` (created if missing) inside the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        wait = _FIRST_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(wait)
                wait = min(wait * 2, _LONGEST_WAIT)
        yield
    finally:
        os.close(fd)  # releases the lock
