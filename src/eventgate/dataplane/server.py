"""The events port's HTTP/1.1 server: uvloop/asyncio transports and httptools, no framework.

`DataPlaneServer` owns the listening socket, the set of connections (`connection.Connection`,
one protocol object each), the in-flight count a graceful drain waits on, and the `Date` header
it refreshes once a second.
"""

import asyncio
import socket
from email.utils import formatdate

from eventgate.dataplane.connection import Connection
from eventgate.dataplane.response_writer import MANAGED, HeaderLines
from eventgate.dataplane.types import Handler, Lane


class DataPlaneServer:
    """The events port: accepts connections and serves `handler` on each."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_header_bytes: int,
        max_body_bytes: int,
        read_timeout: float,
        idle_timeout: float,
        server_header: bytes | None = None,
    ) -> None:
        self.handler = handler
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.managed = MANAGED | {b"server"} if server_header else MANAGED
        self.header_lines = HeaderLines(self.managed)
        self._server_line = b"Server: %s\r\n" % server_header if server_header else b""
        self.default_headers = b""
        """`Date` (refreshed each second) and `server` lines, ready to join into a head."""
        self.draining = False
        self.lane: Lane | None = None
        """The fast lane, offered each read that begins a request first (`passthrough.py`)."""
        self.connections: set[Connection] = set()
        self.in_flight_count = 0
        """Kept by the connections; read it through `in_flight`."""
        self.drain_waiters: list[asyncio.Future[None]] = []
        """Waiting in `wait_drained` for `in_flight_count` to reach zero."""
        self._listener: asyncio.Server | None = None
        self._clock: asyncio.TimerHandle | None = None
        self._port = 0

    async def start(
        self, host: str, port: int, *, sock: socket.socket | None = None, reuse_port: bool = False
    ) -> None:
        """Listen on `host:port` (0 picks a free port) or on an already bound `sock`;
        `reuse_port` lets other processes listen on the same port (SO_REUSEPORT)."""
        loop = asyncio.get_running_loop()
        self._tick()
        if sock is not None:
            self._listener = await loop.create_server(lambda: Connection(self), sock=sock)
        else:
            self._listener = await loop.create_server(
                lambda: Connection(self),
                host,
                port,
                reuse_address=True,
                reuse_port=reuse_port,
                backlog=1024,
            )
        self._port = self._listener.sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        return self._port

    @property
    def in_flight(self) -> int:
        """Requests parsed and not yet answered (including pipelined ones waiting their turn)."""
        return self.in_flight_count

    def stop_accepting(self) -> None:
        """Close the listening socket and idle connections; busy ones close after their answer."""
        self.draining = True
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            conn.close_if_idle()

    async def wait_drained(self) -> None:
        """Return once no request is in flight."""
        if self.in_flight_count:
            waiter = asyncio.get_running_loop().create_future()
            self.drain_waiters.append(waiter)
            await waiter

    async def close(self) -> None:
        """Close idle keep-alive connections, then abort the rest and cancel their handlers."""
        self.stop_accepting()
        tasks = [task for conn in list(self.connections) if (task := conn.abort()) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        if self._listener is not None:
            await self._listener.wait_closed()

    def notify_drained(self) -> None:
        """Called by connections when `in_flight_count` drops to zero and `drain_waiters` wait."""
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()

    def _tick(self) -> None:
        date = formatdate(usegmt=True).encode()
        self.default_headers = b"Date: " + date + b"\r\n" + self._server_line
        self._clock = asyncio.get_running_loop().call_later(1.0, self._tick)
