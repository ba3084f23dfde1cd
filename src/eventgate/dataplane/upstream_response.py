"""The handle on an upstream's answer: status and headers at once, the body read whole or
streamed; the connection goes back to its pool once the body has been consumed."""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from eventgate.dataplane.types import Headers
from eventgate.dataplane.upstream_errors import UpstreamProtocolError

if TYPE_CHECKING:
    from eventgate.dataplane.upstream_conn import UpstreamConnection


class UpstreamResponse:
    """An upstream's answer: status and headers now, the body read whole or streamed.

    The connection goes back to the pool as soon as the body has been consumed; `aclose`
    discards an unread body (closing the connection). Header names are lower-case; `headers`
    holds the end-to-end ones and the framing (Content-Length, Transfer-Encoding), not the
    connection's own (HOP_BY_HOP); `listed` names the further headers `Connection` listed as
    hop-by-hop (usually none), which are still in `headers`.
    """

    __slots__ = ("_conn", "_max_body", "_timeout", "headers", "listed", "status")

    def __init__(self, conn: "UpstreamConnection", timeout: float, max_body: int) -> None:
        self.status = conn.status
        self.headers: Headers = conn.headers
        self.listed = conn.listed
        self._timeout = timeout
        self._max_body = max_body
        self._conn: UpstreamConnection | None = conn
        if conn.done and not conn.chunks:
            self._release()

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived already (reading it will not wait)."""
        return self._conn is None or self._conn.done

    async def read(self) -> bytes:
        """The whole body; UpstreamProtocolError past the pool's `max_body_bytes`."""
        conn = self._conn
        if conn is not None and not conn.done:
            await self._read_rest(conn)
        return self.take_body()

    def take_body(self) -> bytes:
        """The whole body once it has arrived (`complete`), without waiting; the connection goes
        back to the pool. UpstreamProtocolError past the pool's `max_body_bytes`."""
        conn = self._conn
        if conn is None:
            return b""
        if conn.buffered > self._max_body:
            self._abandon()
            raise UpstreamProtocolError(f"upstream body is larger than {self._max_body} bytes")
        chunks = conn.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        conn.buffered = 0
        self._conn = None
        conn.finish()
        return data

    async def _read_rest(self, conn: "UpstreamConnection") -> None:
        try:
            conn.want_all()
            while not conn.done:
                self._check_size(conn)
                await conn.wait_gap(self._timeout)
            self._check_size(conn)
        except BaseException:
            self._abandon()
            raise

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        if not conn.chunks:
            try:
                while not conn.chunks and not conn.done:
                    await conn.wait_gap(self._timeout)
            except BaseException:
                self._abandon()
                raise
            if not conn.chunks:
                self._release()
                raise StopAsyncIteration
        chunk = conn.take()
        if conn.done and not conn.chunks:
            self._release()
        return chunk

    async def aclose(self) -> None:
        """Discard the rest of the body; the connection closes unless it was all read."""
        self._abandon()

    def _check_size(self, conn: "UpstreamConnection") -> None:
        if conn.buffered > self._max_body:
            raise UpstreamProtocolError(f"upstream body is larger than {self._max_body} bytes")

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish()

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
