"""The composition root: one node wired from one Settings object, and its life cycle.

A node is the config store, the routing table fed by the store's watch, the events port (our own
HTTP/1.1 server in front of the Gateway handler) and the config port (the FastAPI app on uvicorn),
all on one uvloop event loop.
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from eventgate.api.app import create_config_app
from eventgate.dataplane.gateway import Gateway
from eventgate.dataplane.server import DataPlaneServer
from eventgate.dataplane.upstream import UpstreamPool
from eventgate.observability.metrics import Metrics
from eventgate.routing.table import RoutingTable
from eventgate.settings import Settings
from eventgate.store.sqlite import SqliteStore

log = logging.getLogger("eventgate")


class _ConfigServer(uvicorn.Server):
    """uvicorn without its own signal handling: the node owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Node:
    """One eventgate node. `start()` binds both ports; `stop()` drains and releases everything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._config_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = await SqliteStore.open(settings.data_dir / "config.db")
        self.routing = RoutingTable(self.store, self.metrics)
        await self.routing.start()
        self.upstream = UpstreamPool(max_body_bytes=settings.max_body_bytes)
        self.gateway = Gateway(self.routing, self.upstream, self.metrics, settings)
        self.events_server = DataPlaneServer(
            self.gateway.handle,
            max_header_bytes=settings.max_header_bytes,
            max_body_bytes=settings.max_body_bytes,
            read_timeout=settings.read_timeout,
            idle_timeout=settings.idle_timeout,
        )
        await self.events_server.start(settings.host, settings.events_port)
        config_app = create_config_app(self.store, self.metrics, status=self.status)
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

    def status(self) -> dict[str, object]:
        """What `/v1/status` reports about this node."""
        return {
            "status": "draining" if self.gateway.draining else "ok",
            "routing": self.routing.describe(),
        }

    async def stop(self) -> None:
        """Drain: new events get 503, in-flight requests finish (bounded), then close."""
        self.gateway.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout
        while self.events_server.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        self.events_server.stop_accepting()
        await self.events_server.close()
        self.config_server.should_exit = True
        if self._config_task is not None:
            await self._config_task
        await self.routing.stop()
        await self.upstream.close()
        await self.store.close()


async def serve(settings: Settings) -> None:
    """Run a node until SIGTERM or SIGINT, then drain and return."""
    node = Node(settings)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("eventgate draining")
    await node.stop()
    log.info("eventgate stopped")
