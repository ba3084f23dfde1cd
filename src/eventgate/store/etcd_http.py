"""etcd v3 over its JSON gRPC gateway: endpoints, failover, timeouts and error mapping.

etcd serves its gRPC API as JSON on the client port (`POST /v3/kv/range`, `/v3/kv/txn`,
`/v3/watch`, ...). In that mapping bytes fields are base64, 64-bit integers are strings, and
fields at their default value (0, false, empty) are left out. Every call here is bounded by a
timeout; every failure to reach etcd becomes StoreUnavailable with the endpoints and the reason.
A call that could not connect moves on to the next endpoint, and so does a read that broke on the
way; a write that broke after it was sent is not repeated, since etcd may have applied it.
"""

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from eventgate.errors import EventgateError
from eventgate.store.base import StoreUnavailable

Json = dict[str, Any]
DEFAULT_PORT = 2379

# gRPC status codes that mean "etcd could not serve this now": Unavailable, DeadlineExceeded,
# OutOfRange (a paged list whose revision was compacted under it: list again).
_RETRYABLE_CODES = {14, 4, 11}
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout)
# Notice a peer that vanished without closing (a cut cable, a dead VM) within ~25 s, even on an
# idle watch stream; Linux names these options, other systems keep their defaults.
_KEEPALIVE = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)] + [
    (socket.IPPROTO_TCP, getattr(socket, name), value)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def parse_endpoints(spec: str) -> list[str]:
    """`etcd://host[:port][,host[:port]...]` as base URLs; the scheme is optional and the port
    defaults to 2379. Raises ValueError with the expected form."""
    expected = "expected etcd://host:port[,host:port...]"
    endpoints = []
    for host in spec.removeprefix("etcd://").rstrip("/").split(","):
        try:
            url = httpx.URL(f"http://{host.strip()}")
        except httpx.InvalidURL as error:
            raise ValueError(
                f"bad etcd endpoint {host!r} in {spec!r} ({error}); {expected}"
            ) from None
        if url.host:
            endpoints.append(str(url.copy_with(port=url.port or DEFAULT_PORT)))
    if not endpoints:
        raise ValueError(f"no etcd endpoint in {spec!r}; {expected}")
    return endpoints


class EtcdHttp:
    """POSTs JSON to one of the endpoints of `spec` (see `parse_endpoints`), sticking to the one
    that last answered; a failure moves the next call on to the next endpoint."""

    def __init__(self, spec: str, *, timeout: float, connect_timeout: float) -> None:
        self.endpoints = parse_endpoints(spec)
        self.timeout = timeout
        self._current = 0
        self._closed = False
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
            transport=httpx.AsyncHTTPTransport(socket_options=_KEEPALIVE),
        )

    async def call(self, path: str, body: Json, *, idempotent: bool = False) -> Json:
        """One unary call. `idempotent` calls (reads) are retried on another endpoint after any
        transport error, others only when the request could not be sent."""
        endpoint, response = await self._send(path, body, idempotent=idempotent)
        if response.status_code != 200:
            raise self._failure(endpoint, path, response)
        return orjson.loads(response.content)

    async def stream(self, path: str, body: Json) -> AsyncIterator[Json]:
        """A streaming call (the watch): each message's `result`, as etcd sends them. Raises
        StoreUnavailable when the stream cannot be opened within the timeout, breaks or ends."""
        endpoint, response = await self._send(path, body, idempotent=True, stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
                raise self._failure(endpoint, path, response)
            async for line in response.aiter_lines():
                if line.strip():
                    message = orjson.loads(line)
                    if "error" in message:
                        raise self._error(endpoint, path, message["error"])
                    yield message["result"]
            raise StoreUnavailable(f"etcd at {endpoint} ended the {path} stream")
        except httpx.TransportError as error:
            self._avoid(endpoint)
            raise StoreUnavailable(
                f"etcd at {endpoint}: the {path} stream broke: {error!r}"
            ) from error
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self._client.aclose()

    async def _send(
        self, path: str, body: Json, *, idempotent: bool, stream: bool = False
    ) -> tuple[str, httpx.Response]:
        """Send within the timeout, to the current endpoint and then the next ones while that is
        safe: always for `idempotent` calls, else only when nothing was sent."""
        if self._closed:
            raise StoreUnavailable("the config store is closed")
        content = orjson.dumps(body)
        failures: list[str] = []
        endpoint = self.endpoints[self._current]
        try:
            async with asyncio.timeout(self.timeout):
                for _ in self.endpoints:
                    endpoint = self.endpoints[self._current]
                    request = self._client.build_request("POST", endpoint + path, content=content)
                    if stream:
                        _for_streaming(request)
                    try:
                        return endpoint, await self._client.send(request, stream=stream)
                    except httpx.TransportError as error:
                        self._avoid(endpoint)
                        if not (idempotent or isinstance(error, _UNSENT)):
                            raise StoreUnavailable(
                                f"etcd at {endpoint}: {path} failed after it was sent, so it may "
                                f"or may not have been applied: {error!r}"
                            ) from error
                        failures.append(f"{endpoint}: {error!r}")
        except TimeoutError:
            self._avoid(endpoint)
            raise StoreUnavailable(
                f"etcd at {endpoint} did not answer {path} within {self.timeout:g}s"
            ) from None
        raise StoreUnavailable(f"etcd is unreachable ({'; '.join(failures)})")

    def _avoid(self, endpoint: str) -> None:
        """Move on from `endpoint`, unless another call already did."""
        if self.endpoints[self._current] == endpoint:
            self._current = (self._current + 1) % len(self.endpoints)

    def _failure(self, endpoint: str, path: str, response: httpx.Response) -> Exception:
        try:
            error = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            error = {"message": response.text[:200]}
        error.setdefault("http_code", response.status_code)
        return self._error(endpoint, path, error)

    def _error(self, endpoint: str, path: str, error: Json) -> Exception:
        """etcd's error JSON ({code|grpc_code, message, http_code}) as the matching exception."""
        code = error.get("code", error.get("grpc_code"))
        message = f"etcd at {endpoint}: {path}: {error.get('message') or error}"
        if code in _RETRYABLE_CODES or error.get("http_code", 0) >= 500:
            self._avoid(endpoint)  # this member cannot serve now; another one may
            return StoreUnavailable(message)
        if "too large" in message:
            return EventgateError(message, status=413)
        return EventgateError(message)


def _for_streaming(request: httpx.Request) -> None:
    """An idle watch sends nothing for as long as nothing changes, so it has no read timeout;
    and etcd should end it if its member loses the cluster's leader (a partition), rather than
    leave it silent."""
    request.extensions["timeout"] = {**request.extensions["timeout"], "read": None}
    request.headers["Grpc-Metadata-hasleader"] = "true"
