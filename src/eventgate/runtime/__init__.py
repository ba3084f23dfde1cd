"""The local Python function runtime: images, function bundles, fork servers and workers.

`Runtime` is the one object the rest of eventgate uses. Files under its data dir:
`images/<digest>/` (virtual environments), `functions/<space>/<name>/<version>/` (unpacked
sources) and `homes/<space>/<name>/` (each function's writable HOME).

Several processes may each run a `Runtime` on one data dir (`eventgate serve --workers N`): an
image is built under a lock file, once (`images.py`), a version's source is unpacked elsewhere
and renamed into place whole (`bundles.py`), and fork servers leave nothing on disk.
"""

import asyncio
import shutil
import uuid
from collections import defaultdict
from pathlib import Path

from eventgate.runtime.bundles import (
    Bundle,
    BundleError,
    BundleTooLarge,
    decode_source,
    pack_directory,
    unpack,
)
from eventgate.runtime.executions import (
    DeployStatus,
    ErrorType,
    Execution,
    ExecutionError,
    NotDeployed,
    TooManyRequests,
)
from eventgate.runtime.forkserver import StartFailed
from eventgate.runtime.images import Image, ImageStatus, ImageStore, Installer
from eventgate.runtime.pool import FunctionPool, PoolStats
from eventgate.runtime.spec import FunctionSpec, RuntimeOptions

__all__ = [
    "Bundle",
    "BundleError",
    "BundleTooLarge",
    "DeployStatus",
    "ErrorType",
    "Execution",
    "ExecutionError",
    "FunctionSpec",
    "Image",
    "ImageStatus",
    "ImageStore",
    "NotDeployed",
    "PoolStats",
    "Runtime",
    "RuntimeOptions",
    "TooManyRequests",
    "pack_directory",
]


class Runtime:
    """Deploys python functions and runs calls in their workers."""

    def __init__(
        self,
        data_dir: Path,
        options: RuntimeOptions | None = None,
        *,
        installer: Installer = "auto",
    ) -> None:
        self._data_dir = data_dir
        self._options = options or RuntimeOptions()
        self.images = ImageStore(data_dir / "images", installer)
        self._pools: dict[tuple[str, str], FunctionPool] = {}
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._retiring: set[asyncio.Task[None]] = set()

    async def unpack(self, space: str, name: str, source: str) -> Bundle:
        """Unpack a base64 `.tar.gz` source into the function's folder for that version."""
        archive = decode_source(source)
        root = self._data_dir / "functions" / _segment(space) / _segment(name)
        return await asyncio.to_thread(unpack, archive, root)

    async def deploy(self, spec: FunctionSpec) -> DeployStatus:
        """Start the version's fork server (the handler is imported now) and route calls to it.

        On READY, calls in flight on the previous version finish there before it stops. On
        ERROR, the previous version (if any) keeps serving.
        """
        async with self._locks[spec.key]:
            current = self._pools.get(spec.key)
            if current is not None and current.spec == spec:
                return DeployStatus("READY", spec.version)
            home = self._data_dir / "homes" / _segment(spec.space) / _segment(spec.name)
            home.mkdir(parents=True, exist_ok=True)
            pool = FunctionPool(spec, self._options, home)
            try:
                output = await pool.start()
            except StartFailed as failed:
                return DeployStatus(
                    "ERROR", spec.version, failed.reason, failed.traceback, failed.output
                )
            self._pools[spec.key] = pool
            if current is not None:
                self._retire(current)
            return DeployStatus("READY", spec.version, output=output)

    async def invoke(
        self,
        space: str,
        name: str,
        payload: object,
        context: dict[str, object] | None = None,
        *,
        invocation_id: str | None = None,
    ) -> Execution:
        """Run one call. Raises NotDeployed, or TooManyRequests when the wait queue is full."""
        pool = self._pools.get((space, name))
        if pool is None:
            raise NotDeployed(f"function {name!r} is not deployed in space {space!r}")
        call_id = invocation_id or str(uuid.uuid4())
        return await pool.invoke(payload, context or {}, call_id)

    def stats(self, space: str, name: str) -> PoolStats:
        pool = self._pools.get((space, name))
        if pool is None:
            raise NotDeployed(f"function {name!r} is not deployed in space {space!r}")
        return pool.stats()

    async def undeploy(self, space: str, name: str) -> None:
        """Stop the function (calls in flight finish first) and remove its files (every version)."""
        key = (space, name)
        async with self._locks[key]:
            pool = self._pools.pop(key, None)
            if pool is not None:
                await pool.stop()
            for folder in ("functions", "homes"):
                path = self._data_dir / folder / _segment(space) / _segment(name)
                await asyncio.to_thread(shutil.rmtree, path, True)

    async def close(self) -> None:
        """Stop every function (calls in flight finish first) and every image build."""
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.stop() for pool in pools), *self._retiring)
        await self.images.close()

    def _retire(self, pool: FunctionPool) -> None:
        """Stop a replaced version in the background once its calls are done."""
        task = asyncio.create_task(pool.stop())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def _segment(value: str) -> str:
    """A space or function name used as one path segment."""
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise BundleError(f"{value!r} cannot be used as a name")
    return value
