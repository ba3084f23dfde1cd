"""The JetStream plumbing the NATS bus stands on: the connection, the streams and their names,
subject tokens, pipelined publishes, pull requests and acknowledgements that wait for the server.

Kept free of delivery semantics (those are in `natsqueue.py`), so each piece reads on its own.
"""

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError

from eventgate.delivery.base import QueueUnavailable

log = logging.getLogger(__name__)

_PLAIN = re.compile(r"[A-Za-z0-9-]+")
NAME = re.compile(r"[A-Za-z0-9_-]+")


class BusUnavailable(QueueUnavailable):
    """NATS did not answer in time (or the bus is closed); nothing is known to be stored."""


def token(name: str) -> str:
    """`name` as one subject token: itself when it is plain, else `_` and its base64url."""
    if _PLAIN.fullmatch(name):
        return name
    return "_" + base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def untoken(text: str) -> str:
    if not text.startswith("_"):
        return text
    body = text[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def digest(text: str) -> str:
    """A short, subject-safe digest of any text (event ids and sources can hold anything)."""
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def parse_servers(url: str) -> list[str]:
    """`nats://h:p[,h:p...]` as the client's server list."""
    rest = url.removeprefix("nats://")
    servers = [part.strip() for part in rest.split(",") if part.strip()]
    if not servers:
        raise ValueError(f"--bus {url!r}: no NATS server named")
    return [s if "://" in s else f"nats://{s}" for s in servers]


@dataclass(frozen=True, slots=True)
class Names:
    """Stream names and subjects of one bus (`name` keeps clusters, or tests, apart)."""

    name: str

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ValueError(f"bus name {self.name!r}: use letters, digits, '-' and '_'")

    @property
    def events(self) -> str:
        return f"{self.name.upper()}_EVENTS"

    @property
    def deliveries(self) -> str:
        return f"{self.name.upper()}_DELIVERIES"

    @property
    def history(self) -> str:
        return f"{self.name.upper()}_HISTORY"

    @property
    def dead(self) -> str:
        return f"{self.name.upper()}_DEAD"

    def head_subject(self, space: str, event_id: str, source: str | None) -> str:
        return f"{self.name}.e.{token(space)}.{digest(event_id)}." + (
            digest(source) if source is not None else "*"
        )

    def delivery_subject(self, space: str, subscription_id: str) -> str:
        return f"{self.name}.d.{token(space)}.{token(subscription_id)}"

    def delivery_key(self, subject: str) -> tuple[str, str]:
        *_, space, subscription = subject.split(".")
        return untoken(space), untoken(subscription)

    def fact_subject(self, head_seq: int) -> str:
        return f"{self.name}.h.{head_seq}"

    def dead_subject(self, space: str, subscription_id: str | None, delivery_id: str) -> str:
        sub = token(subscription_id) if subscription_id is not None else "*"
        return f"{self.name}.x.{token(space)}.{sub}.{delivery_id}"

    def consumer(self, space: str, subscription_id: str) -> str:
        return "d" + digest(f"{space}\0{subscription_id}")


async def connect(url: str, connect_timeout: float) -> Client:
    """A client that reconnects forever (with backoff and jitter), logging the changes."""

    async def disconnected() -> None:
        if not client.is_draining and not client.is_closed:
            log.warning("bus: disconnected from NATS; reconnecting")

    async def reconnected() -> None:
        log.info("bus: reconnected to NATS")

    async def error(problem: Exception) -> None:
        log.warning("bus: NATS client error: %s", problem)

    client = Client()
    await client.connect(
        servers=parse_servers(url),
        name="eventgate",
        connect_timeout=connect_timeout,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
    )
    return client


async def ensure_stream(js: Any, config: api.StreamConfig) -> None:
    """Create the stream, or bring an existing one to `config`."""
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise NATS's own failures (timeouts, no responders, a lost connection) as BusUnavailable,
    which both ports answer with 503."""
    try:
        yield
    except BusUnavailable:
        raise
    except (nats.errors.Error, TimeoutError) as error:
        detail = f"{type(error).__name__} {error}".strip()
        raise BusUnavailable(f"the event bus (NATS) could not {what}: {detail}") from error


class Publisher:
    """Publishes many messages at once, waiting for every acknowledgement (bounded in time).
    Messages submitted in the same turn of the event loop go out together: `flushes` counts
    those rounds (the bus's counterpart of group commit). While the client is disconnected it
    fails at once rather than waiting out the timeout."""

    def __init__(self, nc: Client, js: Any, timeout: float) -> None:
        self._nc = nc
        self._js = js
        self._timeout = timeout
        self._pending: list[tuple[list[tuple[str, bytes, dict | None]], asyncio.Future]] = []
        self._scheduled = False
        self.flushes = 0

    async def publish(self, messages: Sequence[tuple[str, bytes, dict | None]]) -> list[Any]:
        """Publish (subject, data, headers) messages; their acks, in order. Raises
        BusUnavailable when they are not all acknowledged within the timeout."""
        if not messages:
            return []
        if not self._nc.is_connected:
            raise BusUnavailable("the event bus (NATS) is not connected; reconnecting")
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((list(messages), future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
        return await future

    async def _flush(self) -> None:
        batch, self._pending, self._scheduled = self._pending, [], False
        self.flushes += 1
        try:
            async with asyncio.timeout(self._timeout):
                acks: list[asyncio.Future] = []
                for messages, _ in batch:
                    for subject, data, headers in messages:
                        acks.append(await self._js.publish_async(subject, data, headers=headers))
                results = await asyncio.gather(*acks, return_exceptions=True)
        except Exception as error:
            failure = BusUnavailable(
                f"the event bus (NATS) did not acknowledge in {self._timeout:g}s: "
                f"{type(error).__name__} {error}".rstrip()
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        position = 0
        for messages, future in batch:
            mine = results[position : position + len(messages)]
            position += len(messages)
            problem = next((r for r in mine if isinstance(r, BaseException)), None)
            if future.done():
                continue
            if problem is not None:
                future.set_exception(BusUnavailable(f"the event bus refused a message: {problem}"))
            else:
                future.set_result(mine)


async def pull(
    nc: Client,
    stream: str,
    consumer: str,
    batch: int,
    timeout: float,  # noqa: ASYNC109
    wait: float = 0.1,
) -> list[Msg]:
    """Up to `batch` messages the consumer has for us, waiting at most `wait` seconds for them.

    The request always ends on the server's side (`expires`), and its inbox is read until it
    does (a status: 404 no messages, 408 expired, 409 a limit) or the batch is full. A request
    that found the consumer at its `max_ack_pending` stays open on the server even with
    `no_wait`, and would hand a message freed later to an inbox nobody reads (lost until its
    lease runs out): so no request is ever left open."""
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox)
    request = orjson.dumps({"batch": batch, "no_wait": True, "expires": int(wait * 1e9)})
    found: list[Msg] = []
    try:
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", request, reply=inbox)
        while len(found) < batch:
            msg = await subscription.next_msg(timeout=wait + timeout)
            if msg.headers and msg.headers.get("Status"):
                break
            found.append(msg)
    except (TimeoutError, nats.errors.TimeoutError):
        log.warning(
            "bus: a pull from %s got no answer; its messages come back after the lease", consumer
        )
    finally:
        await subscription.unsubscribe()
    return found


async def reply(nc: Client, msg: Msg, body: bytes, timeout: float) -> None:  # noqa: ASYNC109
    """Acknowledge (`+ACK`), give back (`-NAK`) or stop (`+TERM`) a message, waiting until the
    server has it, so that what follows (a depth, a claim) sees the change."""
    await nc.request(msg.reply, body, timeout=timeout)


async def messages_by_subject(js: Any, stream: str, subject: str) -> list[tuple[int, bytes]]:
    """Every message of `stream` on `subject` (wildcards allowed): (sequence, data), in order."""
    found: list[tuple[int, bytes]] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True, direct=True)
        except NotFoundError:
            return found
        found.append((msg.seq, msg.data or b""))
        seq = msg.seq + 1


async def subjects(js: Any, stream: str, subject_filter: str) -> dict[str, int]:
    """Message counts per subject of `stream` under `subject_filter`."""
    info = await js.stream_info(stream, subjects_filter=subject_filter)
    return dict(info.state.subjects or {})
