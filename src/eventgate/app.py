"""The composition root: one node wired from one Settings object, and its life cycle.

A node is the config store, the routing table fed by the store's watch, the events port (our own
HTTP/1.1 server in front of the Gateway handler) and the config port (the FastAPI app on uvicorn),
all on one uvloop event loop.
"""

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

import uvicorn

from eventgate.api.app import create_config_app
from eventgate.dataplane.gateway import Gateway
from eventgate.dataplane.ingress import Ingress
from eventgate.dataplane.passthrough import Passthrough
from eventgate.dataplane.server import DataPlaneServer
from eventgate.dataplane.upstream import UpstreamPool
from eventgate.delivery import Queue, Retention, SqliteQueue
from eventgate.delivery.dispatcher import Dispatcher
from eventgate.functions.node import start_python_functions
from eventgate.observability.metrics import Metrics
from eventgate.providers.base import Deliverer
from eventgate.providers.http_delivery import HttpDeliverer
from eventgate.providers.python import PythonCaller, PythonDeliverer
from eventgate.routing.table import RoutingTable
from eventgate.settings import Settings
from eventgate.store import Store
from eventgate.store.etcd import EtcdStore
from eventgate.store.sqlite import SqliteStore

log = logging.getLogger("eventgate")
SETTLE_TIMEOUT = 2.0


class _ConfigServer(uvicorn.Server):
    """uvicorn without its own signal handling: the node owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Node:
    """One eventgate node. `start()` binds both ports; `stop()` drains and releases everything."""

    def __init__(self, settings: Settings, *, worker: int = 0) -> None:
        self.settings = settings
        self.worker = worker
        """0 for the primary; other `--workers` serve the events port only (`workers.py`)."""
        self.metrics = Metrics()
        self._config_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = await open_store(settings)
        self.routing = RoutingTable(self.store, self.metrics)
        await self.routing.start()
        self.upstream = UpstreamPool(max_body_bytes=settings.max_body_bytes)
        self.queue = await open_queue(settings)
        self.python = await start_python_functions(settings, self.store, worker=self.worker)
        deliverers: dict[str, Deliverer] = {
            "http": HttpDeliverer(self.upstream),
            "python": PythonDeliverer(self.python),
        }
        self.dispatcher = Dispatcher(
            self.queue,
            self.routing,
            deliverers,
            self.metrics,
            function_timeout=settings.function_timeout,
            lease=settings.delivery_lease,
            retention=Retention(settings.retention, settings.retention_events),
            orphan_grace=0.0 if settings.bus == "sqlite" else 10.0,
        )
        await self.dispatcher.start()
        ingress = Ingress(
            self.queue,
            deliverers,
            self.metrics,
            function_timeout=settings.function_timeout,
            max_batch=settings.max_batch,
        )
        self.gateway = Gateway(
            self.routing, self.upstream, self.metrics, settings, ingress, PythonCaller(self.python)
        )
        self.events_server = DataPlaneServer(
            self.gateway.handle,
            max_header_bytes=settings.max_header_bytes,
            max_body_bytes=settings.max_body_bytes,
            read_timeout=settings.read_timeout,
            idle_timeout=settings.idle_timeout,
        )
        if settings.fast_lane:
            self.events_server.lane = Passthrough(self.gateway, self.upstream, self.events_server)
        await self.events_server.start(
            settings.host, settings.events_port, reuse_port=settings.workers > 1
        )
        if self.worker:
            log.info("worker %d serving events on port %d", self.worker, self.events_server.port)
            return
        config_app = create_config_app(
            self.store,
            self.metrics,
            status=self.status,
            settle=self._routed,
            queue=self.queue,
            python=self.python,
        )
        self.config_server = _ConfigServer(
            uvicorn.Config(
                config_app,
                host=settings.host,
                port=settings.config_port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=settings.drain_timeout,
            )
        )
        self._config_task = asyncio.create_task(self.config_server.serve())
        while not self.config_server.started:
            if self._config_task.done():
                self._config_task.result()
                raise RuntimeError(f"the config API could not bind port {settings.config_port}")
            await asyncio.sleep(0.01)
        log.info(
            "eventgate serving: events on http://%s:%d, config on http://%s:%d (data in %s)",
            settings.host,
            self.events_server.port,
            settings.host,
            self.config_port,
            settings.data_dir,
        )

    @property
    def config_port(self) -> int:
        return self.config_server.servers[0].sockets[0].getsockname()[1]

    async def _routed(self, revision: int) -> None:
        """Wait (bounded) until this node routes with the write at `revision`."""
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await self.routing.wait_for_revision(revision)
        except TimeoutError:
            log.warning(
                "routing has not caught up with revision %d after %ss", revision, SETTLE_TIMEOUT
            )

    def status(self) -> dict[str, object]:
        """What `/v1/status` reports: `ok`, `draining`, or `degraded` while the config store
        cannot be followed (the node keeps routing from its last snapshot)."""
        routing = self.routing.describe()
        if self.gateway.draining:
            state = "draining"
        elif not routing["following"]:
            state = "degraded"
        else:
            state = "ok"
        return {
            "status": state,
            "store": self.settings.store.split("://")[0],
            "bus": self.settings.bus.split("://")[0],
            "routing": routing,
        }

    async def stop(self) -> None:
        """Drain: new events get 503, in-flight requests finish (bounded); deliveries in flight
        finish within what is left of the drain timeout or are released for the next start;
        then everything closes."""
        self.gateway.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout
        try:
            async with asyncio.timeout(self.settings.drain_timeout):
                await self.events_server.wait_drained()
        except TimeoutError:
            log.warning("drain timed out with %d requests in flight", self.events_server.in_flight)
        self.events_server.stop_accepting()
        await self.events_server.close()
        await self.dispatcher.stop(max(0.0, deadline - loop.time()))
        if self._config_task is not None:
            self.config_server.should_exit = True
            await self._config_task
        await self.python.close()
        await self.routing.stop()
        await self.queue.close()
        await self.upstream.close()
        await self.store.close()


async def open_store(settings: Settings) -> Store:
    """The config store the settings name: embedded SQLite, or etcd for a cluster."""
    if settings.store == "sqlite":
        return await SqliteStore.open(settings.data_dir / "config.db")
    if settings.store.startswith("etcd://"):
        return await EtcdStore.open(settings.store, prefix=settings.store_prefix)
    raise ValueError(f"--store {settings.store!r}: use 'sqlite' or 'etcd://host:port[,...]'")


async def open_queue(settings: Settings) -> Queue:
    """The delivery queue the settings name: embedded SQLite, or NATS JetStream for a cluster
    (its listeners also hear, every second, of work other nodes queued)."""
    if settings.bus == "sqlite":
        return await SqliteQueue.open(
            settings.data_dir / "queue", dedupe_window=settings.dedupe_window
        )
    if settings.bus.startswith("nats://"):
        from eventgate.delivery.natsqueue import NatsQueue

        return await NatsQueue.open(
            settings.bus,
            name=settings.bus_name,
            dedupe_window=settings.dedupe_window,
            retention=Retention(settings.retention, settings.retention_events),
            poll_interval=1.0,
            replicas=settings.bus_replicas,
        )
    raise ValueError(f"--bus {settings.bus!r}: use 'sqlite' or 'nats://host:port[,...]'")


def keep_out_of_collections() -> None:
    """Move what the node has loaded so far (modules, the config app, the first snapshot: it
    lives as long as the node) out of the garbage collector's passes, which otherwise scan it
    again and again under load, pausing requests for milliseconds."""
    gc.collect()
    gc.freeze()


async def serve(settings: Settings) -> None:
    """Run a node (and its other workers, see `workers.py`) until SIGTERM or SIGINT, then drain
    and return."""
    from eventgate.workers import start_secondaries

    node = Node(settings)
    await node.start()
    keep_out_of_collections()
    secondaries = await start_secondaries(node) if settings.workers > 1 else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("eventgate draining")
    if secondaries is None:
        await node.stop()
    else:
        await asyncio.gather(node.stop(), secondaries.stop(settings.drain_timeout + 5.0))
    log.info("eventgate stopped")
