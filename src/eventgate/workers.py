"""Several processes serving one node's events port: `eventgate serve --workers N`.

- The process `eventgate serve` starts is worker 0, the primary: the whole node, config API
  included. Once it serves, it starts N-1 secondary workers (fresh interpreters running
  `python -m eventgate.workers`), each the same node without the config API. Every worker binds
  the events port itself with SO_REUSEPORT, and the kernel spreads new connections across them.
- Config: only the primary serves the config API. Each worker follows the config store with
  its own routing table, as separate nodes do: a write is answered once the primary routes it,
  and the others route it within the store's poll interval (SQLite, 0.1 s) or at once (etcd).
  Async delivery runs in every worker on the shared queue (a delivery is claimed by one), so a
  subscription's `concurrency` applies per worker.
- Python functions: each worker runs its own (`functions/node.py`) on the shared
  `<data_dir>/runtime` and `invocations.db`, deploying a function on its first call there. An
  image is built once: a build holds a lock file and a worker that wants an image another is
  building waits for it and reuses it (`runtime/images.py`); a source is unpacked into a
  temporary folder renamed into place (`runtime/bundles.py`); a function's HOME is shared by
  its processes in every worker; fork servers talk over socketpairs, nothing on disk. The
  config API reads the invocation records of every worker from `invocations.db` (SQLite in WAL
  mode): a secondary stores a call's record before it answers, so the id a caller got can be
  looked up at once. A function's `concurrency` and wait queue apply per worker, like a
  subscription's.
- Metrics: each secondary writes its registry to `<data_dir>/run/metrics-<n>.json` every
  second; the primary's `/v1/metrics` adds them to its own (counters and histograms summed,
  gauges as the primary sees them). A file older than `STALE_AFTER` (a worker gone) is left out.
- Life: SIGTERM or SIGINT on the primary stops every worker (each drains its own requests); a
  secondary whose primary died (its pipe from the primary closes) drains and exits; a secondary
  that dies is started again after `RESTART_DELAY`.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from eventgate.app import Node, keep_out_of_collections
from eventgate.settings import Settings

log = logging.getLogger("eventgate.workers")
PUBLISH_INTERVAL = 1.0
STALE_AFTER = 10.0
RESTART_DELAY = 1.0
_LENGTH = struct.Struct("!I")


def metrics_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


class Secondaries:
    """The primary's side: starts the secondary workers, restarts one that dies, stops them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._pipes: dict[int, int] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes.values()]

    async def start(self) -> None:
        directory = metrics_dir(self.settings)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("metrics-*.json"):
            stale.unlink()
        for index in range(1, self.settings.workers):
            await self._spawn(index)

    async def _spawn(self, index: int) -> None:
        """Start worker `index`, handing it the settings through a pipe it keeps open: when the
        primary dies, the pipe closes and the worker stops."""
        read_end, write_end = os.pipe()
        payload = pickle.dumps((index, self.settings))
        os.write(write_end, _LENGTH.pack(len(payload)) + payload)  # far below a pipe's buffer
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "eventgate.workers", str(read_end), pass_fds=(read_end,)
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._processes[index] = process
        self._pipes[index] = write_end
        watcher = asyncio.create_task(self._watch(index, process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, index: int, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        os.close(self._pipes.pop(index))
        if self._stopping:
            return
        log.error("worker %d exited with %s: starting it again", index, code)
        await asyncio.sleep(RESTART_DELAY)
        if not self._stopping:
            await self._spawn(index)

    async def stop(self, grace: float) -> None:
        """SIGTERM every worker and wait for them to drain (SIGKILL after `grace` seconds)."""
        self._stopping = True
        for process in self._processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        waits = [process.wait() for process in self._processes.values()]
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*waits)
        except TimeoutError:
            for process in self._processes.values():
                if process.returncode is None:
                    log.warning("worker %d did not drain in time: killing it", process.pid)
                    process.kill()
            await asyncio.gather(*(process.wait() for process in self._processes.values()))
        await asyncio.gather(*self._watchers, return_exceptions=True)


async def start_secondaries(node: Node) -> Secondaries:
    """Start the node's secondary workers on the port the primary bound, and make its
    `/v1/metrics` include theirs."""
    settings = dataclasses.replace(node.settings, events_port=node.events_server.port)
    node.metrics.view = WorkersView(node.metrics.registry, metrics_dir(settings))
    secondaries = Secondaries(settings)
    await secondaries.start()
    return secondaries


# Metrics across workers


def snapshot(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """A registry's families as JSON-ready data."""
    return [
        {
            "name": family.name,
            "documentation": family.documentation,
            "type": family.type,
            "unit": family.unit,
            "samples": [[sample.name, sample.labels, sample.value] for sample in family.samples],
        }
        for family in registry.collect()
    ]


class WorkersView:
    """What the primary's `/v1/metrics` collects: its registry plus the secondaries' latest
    snapshots. Counter, histogram and summary samples are summed (`_created`: the earliest);
    a gauge is the primary's value, or the largest a secondary has if the primary has none."""

    def __init__(self, registry: CollectorRegistry, directory: Path) -> None:
        self.registry = registry
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        own: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for family in self.registry.collect():
            families[family.name] = family
            merged = values[family.name] = {}
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                merged[key] = sample.value
                own.add(key)
        for data in self._snapshots():
            name = data["name"]
            if name not in families:
                families[name] = Metric(name, data["documentation"], data["type"], data["unit"])
                values[name] = {}
            merged = values[name]
            kind = families[name].type
            for sample_name, labels, value in data["samples"]:
                key = (sample_name, tuple(sorted(labels.items())))
                if key not in merged:
                    merged[key] = value
                elif sample_name.endswith("_created"):
                    merged[key] = min(merged[key], value)
                elif kind != "gauge":
                    merged[key] += value
                elif key not in own:
                    merged[key] = max(merged[key], value)
        for name, family in families.items():
            result = Metric(name, family.documentation, family.type, family.unit)
            for (sample_name, labels), value in values[name].items():
                result.add_sample(sample_name, dict(labels), value)
            yield result

    def _snapshots(self) -> Iterator[dict[str, Any]]:
        now = time.time()
        for path in sorted(self.directory.glob("metrics-*.json")):
            try:
                if now - path.stat().st_mtime > STALE_AFTER:
                    continue
                yield from json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue  # being replaced, or gone


async def _publish(registry: CollectorRegistry, path: Path) -> None:
    """Write the registry's snapshot to `path` every PUBLISH_INTERVAL (atomically)."""
    temporary = path.with_suffix(".tmp")
    while True:
        temporary.write_text(json.dumps(snapshot(registry)))
        os.replace(temporary, path)
        await asyncio.sleep(PUBLISH_INTERVAL)


# A secondary worker's process


async def run_secondary(index: int, settings: Settings, pipe: int) -> None:
    """Serve as worker `index` until SIGTERM, SIGINT or the primary's end, then drain."""
    node = Node(settings, worker=index)
    await node.start()
    keep_out_of_collections()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def primary_gone() -> None:
        if not os.read(pipe, 1):
            loop.remove_reader(pipe)
            log.warning("worker %d: the primary is gone, stopping", index)
            stop.set()

    loop.add_reader(pipe, primary_gone)
    path = metrics_dir(settings) / f"metrics-{index}.json"
    publisher = asyncio.create_task(_publish(node.metrics.registry, path))
    await stop.wait()
    await node.stop()
    publisher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publisher
    with contextlib.suppress(OSError):
        path.unlink()


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise SystemExit("eventgate worker: the primary closed the pipe before the settings")
        data += chunk
    return data


def main() -> None:
    """`python -m eventgate.workers <fd>`: read (index, settings) from the pipe, then serve."""
    import uvloop

    from eventgate.observability.logs import configure_logging

    pipe = int(sys.argv[1])
    (size,) = _LENGTH.unpack(_read_exactly(pipe, _LENGTH.size))
    index, settings = pickle.loads(_read_exactly(pipe, size))
    configure_logging(settings.log_level, settings.log_format)
    uvloop.run(run_secondary(index, settings, pipe))


if __name__ == "__main__":
    main()
