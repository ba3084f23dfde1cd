"""Back-pressure for one transport, shared by the server and the upstream client.

Reading is paused while the consumer of a body is slower than the peer sending it; writing
waits (`drain`) while the transport's write buffer is above its high-water mark.
"""

import asyncio

HIGH_WATER = 64 * 1024
"""Buffered body bytes above which a connection stops reading from its socket."""

LOW_WATER = 16 * 1024
"""Buffered body bytes below which a paused connection reads again."""


class FlowControl:
    """Pause and resume one transport's reading and writing, idempotently."""

    __slots__ = ("_drain_waiter", "_transport", "read_paused", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._drain_waiter: asyncio.Future[None] | None = None
        self.read_paused = False
        self.write_paused = False

    def pause_reading(self) -> None:
        if not self.read_paused and not self._transport.is_closing():
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def pause_writing(self) -> None:
        """The transport's `pause_writing` callback: its write buffer is full."""
        self.write_paused = True

    def resume_writing(self) -> None:
        """The transport's `resume_writing` callback, and the connection's end: wake writers."""
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport accepts writes again (or the connection is gone)."""
        if not self.write_paused:
            return
        waiter = self._drain_waiter
        if waiter is None or waiter.done():
            waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
        await waiter
