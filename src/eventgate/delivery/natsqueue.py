"""The cluster delivery queue: the `Queue` contract on NATS JetStream (`--bus nats://...`).

Every node of a cluster opens the same bus; nothing of it lives on a node, so a node can die at
any moment and another one carries on. Four streams (names from `jetstream.Names`):

- `<NAME>_EVENTS`, subjects `<name>.e.<space>.<digest of id>.<digest of source>`: one head per
  received event; limits retention (the retention's age and count) and the dedupe window;
- `<NAME>_DELIVERIES`, subjects `<name>.d.<space>.<subscription>`: one work item per (event,
  target); work-queue retention, so an item is gone once acknowledged and never aged out;
- `<NAME>_HISTORY`, subjects `<name>.h.<head sequence>`: facts (attempts, outcomes, redrives,
  discards, duplicates), appended by whichever node saw them; the retention's age;
- `<NAME>_DEAD`, subjects `<name>.x.<space>.<subscription>.<delivery id>`: dead letters, one
  per subject (deleting or redriving one purges its subject); the retention's age.

- **append**: the heads are published with `Nats-Msg-Id` = the event's (space, source, id), so
  JetStream's duplicate window does the dedupe across every node; then one work item per target,
  each with its own message id (`<head sequence>-<index>`). The call returns (and the node answers
  202) once JetStream has acknowledged them all. A duplicate's original work items are published
  again under the same ids: a no-op, unless a node died between the head and its work items, in
  which case the client's retry completes the event.
- **claim**: one durable pull consumer per subscription with explicit acks; `ack_wait` is the
  lease, `max_ack_pending` the subscription's `concurrency` (so it bounds the whole cluster's
  calls, not one node's); JetStream redelivers what a dead node held once its lease runs out.
- **settle**: `ack` acknowledges; `retry` naks with the backoff as the delay (JetStream holds the
  message until then); `dead_letter` stores a dead letter and acknowledges. Each also appends a
  fact to the history. A claim whose lease ran out is stale: its attempt is recorded, but the
  message (now someone else's) is left alone.
- **tries**: the work item's `tries` plus JetStream's delivery count less one; `release` (a node
  stopping) and `redrive` publish the work item again with the count to carry on from, so
  neither counts as an attempt. A claim lost with a dead node counts as one.
- **life, dead letters**: read back from the streams (heads, facts, dead letters), whichever node
  wrote them; redrive publishes the dead letters' work items again (message ids keyed by the dead
  letter, so two nodes redriving at once queue each only once).
- **retention**: JetStream applies it continuously through the streams' limits (`purge` only
  brings the limits up to date). Work items are never aged out.

Replicate the streams (`replicas`, with a NATS cluster of three) to survive the loss of a NATS
server too; JetStream then acknowledges a publish once a majority stored it.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError

from eventgate.delivery import history
from eventgate.delivery.base import (
    Accepted,
    Attempt,
    DeadLetter,
    Delivery,
    DeliveryRecord,
    EventLife,
    EventRecord,
    NewEvent,
    Queue,
    QueueStats,
    Retention,
    State,
)
from eventgate.delivery.jetstream import (
    BusUnavailable,
    Names,
    Publisher,
    connect,
    ensure_stream,
    messages_by_subject,
    pull,
    reply,
    subjects,
    translated,
)

log = logging.getLogger(__name__)
DEFAULT_IN_FLIGHT = 1000  # max_ack_pending of a consumer claimed without a concurrency
MAX_CLAIMS = 100_000  # claims remembered before the expired ones are dropped


@dataclass(slots=True)
class _Claim:
    msg: Msg
    lease: int
    deadline: float


class NatsQueue(Queue):
    """The `Queue` contract on NATS JetStream. Use `await NatsQueue.open("nats://host:port")`."""

    def __init__(
        self,
        nc: Client,
        names: Names,
        *,
        dedupe_window: float,
        clock: Callable[[], float],
        retention: Retention,
        poll_interval: float | None,
        replicas: int,
        timeout: float,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout)
        self._names = names
        self._dedupe_window = dedupe_window
        self._clock = clock
        self._retention = retention
        self._poll_interval = poll_interval
        self._replicas = replicas
        self._timeout = timeout
        self._publisher = Publisher(nc, self._js, timeout)
        self._consumers: dict[tuple[str, str], tuple[float | None, int | None]] = {}
        self._claims: dict[str, _Claim] = {}
        self._listeners: list[Callable[[set[tuple[str, str]]], None]] = []
        self._poller: asyncio.Task[None] | None = None
        self._appended = 0
        self._duplicates = 0
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        name: str = "eventgate",
        dedupe_window: float = 300.0,
        clock: Callable[[], float] = time.time,
        retention: Retention | None = None,
        poll_interval: float | None = None,
        replicas: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - bounds each call, not this one
        connect_timeout: float = 5.0,
    ) -> "NatsQueue":
        """Connect to `url` (`nats://host:port[,host:port...]`) and make sure the streams exist.
        `name` prefixes the streams and subjects; `poll_interval` (seconds) makes listeners also
        hear of work that other nodes queued or that came due on the server; `timeout` bounds
        every call to NATS."""
        names = Names(name)
        nc = await connect(url, connect_timeout)
        queue = cls(
            nc,
            names,
            dedupe_window=dedupe_window,
            clock=clock,
            retention=retention or Retention(),
            poll_interval=poll_interval,
            replicas=replicas,
            timeout=timeout,
        )
        try:
            await queue._ensure_streams()
        except BaseException:
            await nc.close()
            raise
        return queue

    # -- streams ---------------------------------------------------------------------------

    async def _ensure_streams(self) -> None:
        names, retention = self._names, self._retention
        window = self._dedupe_window if self._dedupe_window > 0 else 120.0
        common: dict[str, Any] = {
            "storage": api.StorageType.FILE,
            "num_replicas": self._replicas,
            "allow_direct": True,
        }
        kept = {"max_age": max(retention.max_age, window)}
        configs = [
            api.StreamConfig(
                name=names.events,
                subjects=[f"{names.name}.e.>"],
                duplicate_window=window,
                max_msgs=retention.max_events,
                **kept,
                **common,
            ),
            api.StreamConfig(
                name=names.deliveries,
                subjects=[f"{names.name}.d.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                duplicate_window=window,
                **common,
            ),
            api.StreamConfig(name=names.history, subjects=[f"{names.name}.h.>"], **kept, **common),
            api.StreamConfig(
                name=names.dead,
                subjects=[f"{names.name}.x.>"],
                max_msgs_per_subject=1,
                **kept,
                **common,
            ),
        ]
        for config in configs:
            await ensure_stream(self._js, config)

    # -- appending -------------------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent]) -> list[Accepted]:
        with translated("accept events"):
            self._check_open()
            now = self._clock()
            names = self._names
            heads = []
            for event in events:
                headers = None
                if self._dedupe_window > 0:
                    identity = f"{event.space}\0{event.source}\0{event.id}"
                    headers = {"Nats-Msg-Id": history.digest_identity(identity)}
                subject = names.head_subject(event.space, event.id, event.source)
                heads.append((subject, history.head(event, now), headers))
            acks = await self._publisher.publish(heads)
            work: list[tuple[str, bytes, dict | None]] = []
            facts: list[tuple[str, bytes, dict | None]] = []
            results: list[Accepted] = []
            due: set[tuple[str, str]] = set()
            originals = await asyncio.gather(
                *(self._head(ack.seq) for ack in acks if ack.duplicate)
            )
            found = iter(originals)
            for event, ack in zip(events, acks, strict=True):
                if ack.duplicate:
                    original = next(found)
                    fanout = len(original.targets) if original is not None else 0
                    results.append(Accepted(duplicate=True, deliveries=fanout))
                    if original is not None:  # complete an event whose node died mid-append
                        work += self._work_items(ack.seq, original.event, original.targets)
                    counted = history.fact(-1, history.DUPLICATE)
                    facts.append((names.fact_subject(ack.seq), counted, None))
                    continue
                targets = tuple((t.subscription_id, t.function_id) for t in event.targets)
                work += self._work_items(ack.seq, history.event_record(event, now), targets)
                due.update((event.space, sub) for sub, _ in targets)
                results.append(Accepted(duplicate=False, deliveries=len(targets)))
            await self._publisher.publish(work + facts)
            duplicates = sum(result.duplicate for result in results)
            self._duplicates += duplicates
            self._appended += len(results) - duplicates
            self._notify(due)
            return results

    def _work_items(
        self, head_seq: int, event: EventRecord, targets: Sequence[tuple[str, str]]
    ) -> list[tuple[str, bytes, dict | None]]:
        items = []
        for index, (sub, fn) in enumerate(targets):
            item_id = history.delivery_id(head_seq, index)
            data = history.work_item(history.WorkItem(item_id, sub, fn, event, 0))
            subject = self._names.delivery_subject(event.space, sub)
            items.append((subject, data, {"Nats-Msg-Id": item_id}))
        return items

    async def _head(self, seq: int) -> history.Head | None:
        try:
            msg = await self._js.get_msg(self._names.events, seq=seq, direct=True)
        except NotFoundError:
            return None
        return history.parse_head(msg.data or b"")

    async def reject(self, event: NewEvent, status: int, reason: str) -> None:
        with translated("record a refused event"):
            self._check_open()
            subject = self._names.head_subject(event.space, event.id, event.source)
            refused = NewEvent(
                event.space, event.source, event.id, event.type, event.payload, (), event.origin
            )
            data = history.head(refused, self._clock(), (status, reason))
            await self._publisher.publish([(subject, data, None)])

    # -- listening -------------------------------------------------------------------------

    def listen(self, listener: Callable[[set[tuple[str, str]]], None]) -> None:
        self._listeners.append(listener)
        if self._poll_interval is not None and self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="bus-poll")

    def _notify(self, keys: set[tuple[str, str]]) -> None:
        if keys:
            for listener in self._listeners:
                listener(keys)

    async def _poll(self) -> None:
        """Tell listeners, every `poll_interval`, which subscriptions have work on the bus:
        queued by other nodes, due again after a backoff, or left by a node that died."""
        assert self._poll_interval is not None
        while not self._closed:
            await asyncio.sleep(self._poll_interval)
            try:
                self._notify(set((await self.depth()).keys()))
            except Exception as error:
                log.debug("bus: polling for work failed: %s", error)

    # -- claiming and settling -------------------------------------------------------------

    async def claim(
        self,
        limit: int,
        lease_seconds: float,
        *,
        space: str | None = None,
        subscription_id: str | None = None,
        in_flight: int | None = None,
    ) -> list[Delivery]:
        with translated("hand out deliveries"):
            if subscription_id is not None and space is None:
                raise ValueError("claiming for a subscription needs its space")
            self._check_open()
            if subscription_id is not None:
                assert space is not None
                keys = [(space, subscription_id)]
            else:
                keys = sorted(k for k in await self.depth() if space is None or k[0] == space)
            claimed: list[Delivery] = []
            for key in keys:
                if len(claimed) >= limit:
                    break
                consumer = await self._consumer(key, lease_seconds, in_flight)
                for msg in await pull(
                    self._nc, self._names.deliveries, consumer, limit - len(claimed), self._timeout
                ):
                    claimed.append(self._delivery(msg, key, lease_seconds))
            return claimed

    async def _consumer(self, key: tuple[str, str], lease: float, in_flight: int | None) -> str:
        """The subscription's durable consumer, created or brought to this lease and limit.
        A claim without `in_flight` (a node that does not know the subscription yet) takes the
        consumer as it is: updating a consumer resets the timers of the messages it holds, so
        only the subscription's own policy ever changes it."""
        name = self._names.consumer(*key)
        known = self._consumers.get(key)
        if known is not None and (in_flight is None or known == (lease, in_flight)):
            return name
        if known is None and in_flight is None:
            try:
                info = await self._js.consumer_info(self._names.deliveries, name)
            except NotFoundError:
                pass
            else:
                self._consumers[key] = (info.config.ack_wait, info.config.max_ack_pending)
                return name
        limit = in_flight or DEFAULT_IN_FLIGHT
        await self._js.add_consumer(
            self._names.deliveries,
            api.ConsumerConfig(
                durable_name=name,
                filter_subject=self._names.delivery_subject(*key),
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=lease,
                max_ack_pending=limit,
                max_deliver=-1,
                max_waiting=512,
                num_replicas=self._replicas,
            ),
        )
        self._consumers[key] = (lease, limit)
        return name

    def _delivery(self, msg: Msg, key: tuple[str, str], lease_seconds: float) -> Delivery:
        item = history.parse_work_item(msg.data)
        metadata = msg.metadata
        lease = metadata.sequence.consumer
        now = self._clock()
        if len(self._claims) > MAX_CLAIMS:  # claims never settled (a failed attempt): forget
            self._claims = {k: c for k, c in self._claims.items() if c.deadline > now}
        self._claims[item.id] = _Claim(msg, lease, now + lease_seconds)
        tries = item.tries + metadata.num_delivered - 1
        return Delivery(item.id, key[0], key[1], item.function_id, item.event, tries, lease)

    def _current(self, delivery: Delivery) -> _Claim | None:
        """The claim behind `delivery` if it is still this node's: same lease, not run out."""
        claim = self._claims.get(delivery.id)
        if claim is None or claim.lease != delivery.lease or self._clock() >= claim.deadline:
            return None
        return claim

    async def ack(self, delivery: Delivery, attempt: Attempt) -> bool:
        return await self._settle(delivery, attempt, b"+ACK", State.DELIVERED)

    async def retry(self, delivery: Delivery, not_before: float, attempt: Attempt | None) -> bool:
        delay = int((not_before - self._clock()) * 1e9)
        # A delay, even of zero, goes through the server's timers: due now is a plain NAK.
        nak = b"-NAK " + orjson.dumps({"delay": delay}) if delay > 0 else b"-NAK"
        return await self._settle(delivery, attempt, nak, State.PENDING, due=not_before)

    async def dead_letter(self, delivery: Delivery, attempt: Attempt | None, error: str) -> bool:
        claim = self._current(delivery)
        if claim is not None:  # kept first: the message is only acknowledged once it is stored
            subject = self._names.dead_subject(
                delivery.space, delivery.subscription_id, delivery.id
            )
            item = history.WorkItem(
                delivery.id, delivery.subscription_id, delivery.function_id, delivery.event, 0
            )
            letter = history.dead_letter(item, error)
            await self._publisher.publish([(subject, letter, None)])
        return await self._settle(delivery, attempt, b"+ACK", State.DEAD, error=error)

    async def _settle(
        self,
        delivery: Delivery,
        attempt: Attempt | None,
        answer: bytes,
        state: State,
        **fields: object,
    ) -> bool:
        self._check_open()
        claim = self._current(delivery)
        head_seq, index = history.parse_delivery_id(delivery.id) or (0, 0)
        recorded = history.fact(
            index,
            history.ATTEMPT,
            a=history.attempt_fields(attempt),
            s=state.value if claim is not None else None,
            **(fields if claim is not None else {}),
        )
        facts = [(self._names.fact_subject(head_seq), recorded, None)]
        if claim is None:
            if attempt is not None:
                await self._publisher.publish(facts)
            return False
        del self._claims[delivery.id]
        await asyncio.gather(self._publisher.publish(facts), self._answer(claim.msg, answer))
        return True

    async def _answer(self, msg: Msg, body: bytes) -> None:
        try:
            await reply(self._nc, msg, body, self._timeout)
        except Exception as error:  # the lease will run out and JetStream redelivers
            log.warning("bus: could not settle a delivery (%s); it will be redelivered", error)

    async def release(self, deliveries: Sequence[Delivery]) -> int:
        held = [(d, c) for d in deliveries if (c := self._current(d)) is not None]
        if not held:
            return 0
        again = []
        for delivery, claim in held:
            item = history.WorkItem(
                delivery.id,
                delivery.subscription_id,
                delivery.function_id,
                delivery.event,
                delivery.tries,
            )
            subject = self._names.delivery_subject(delivery.space, delivery.subscription_id)
            msg_id = f"{delivery.id}/release/{claim.lease}"
            again.append((subject, history.work_item(item), {"Nats-Msg-Id": msg_id}))
        await self._publisher.publish(again)  # first: a crash now delivers twice, never zero times
        await asyncio.gather(*(self._answer(claim.msg, b"+ACK") for _, claim in held))
        self._notify({(d.space, d.subscription_id) for d, _ in held})
        return len(held)

    # -- reading ---------------------------------------------------------------------------

    async def depth(self) -> dict[tuple[str, str], int]:
        with translated("count the deliveries waiting"):
            self._check_open()
            names = self._names
            found = await subjects(self._js, names.deliveries, f"{names.name}.d.>")
            depth: dict[tuple[str, str], int] = {}
            for subject, count in found.items():
                key = names.delivery_key(subject)
                depth[key] = depth.get(key, 0) + count
            return depth

    async def due_times(
        self, space: str | None = None, subscription_id: str | None = None
    ) -> dict[tuple[str, str], float]:
        """Every subscription with work on the bus counts as due now: JetStream alone knows
        when a held or backed-off message comes back, and a claim made early just finds none."""
        now = self._clock()
        return {
            key: now
            for key in await self.depth()
            if subscription_id is None or key == (space, subscription_id)
        }

    async def life(self, space: str, event_id: str, source: str | None = None) -> list[EventLife]:
        with translated("read the life of an event"):
            self._check_open()
            subject = self._names.head_subject(space, event_id, source)
            heads = await messages_by_subject(self._js, self._names.events, subject)
            lives = []
            for seq, data in heads:
                found = history.parse_head(data)
                event = found.event
                if event.space != space or event.id != event_id:
                    continue  # a digest collision
                if source is not None and event.source != source:
                    continue
                lives.append(history.life(seq, found, await self._facts(seq)))
            return lives

    async def _facts(self, head_seq: int) -> list[bytes]:
        subject = self._names.fact_subject(head_seq)
        found = await messages_by_subject(self._js, self._names.history, subject)
        return [data for _, data in found]

    async def _letters(
        self, space: str, subscription_id: str | None, delivery_id: str = "*"
    ) -> dict[str, str]:
        """Dead letter subjects by delivery id."""
        names = self._names
        found = await subjects(
            self._js, names.dead, names.dead_subject(space, subscription_id, delivery_id)
        )
        return {subject.rsplit(".", 1)[1]: subject for subject, count in found.items() if count}

    async def _letter(self, subject: str) -> tuple[int, DeadLetter] | None:
        """A dead letter (and its message sequence), with its attempts from the history."""
        try:
            msg = await self._js.get_last_msg(self._names.dead, subject, direct=True)
        except NotFoundError:
            return None
        item, error = history.parse_dead_letter(msg.data or b"")
        head_seq, index = history.parse_delivery_id(item.id) or (0, 0)
        attempts = history.attempts_of(index, await self._facts(head_seq))
        last = attempts[-1].at if attempts else item.event.received_at
        record = DeliveryRecord(
            item.id, item.subscription_id, item.function_id, State.DEAD, last, attempts, error
        )
        return msg.seq, DeadLetter(item.event, record)

    async def dead_letters(
        self, space: str, subscription_id: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        with translated("list dead letters"):
            self._check_open()
            letters = await self._letters(space, subscription_id)
            newest = history.newest_first(list(letters))[:limit]
            found = await asyncio.gather(*(self._letter(letters[i]) for i in newest))
            return [letter for _, letter in filter(None, found)]

    async def dead_letter_get(self, space: str, delivery_id: str) -> DeadLetter | None:
        with translated("read a dead letter"):
            self._check_open()
            if history.parse_delivery_id(delivery_id) is None:
                return None
            letters = await self._letters(space, None, delivery_id)
            if delivery_id not in letters:
                return None
            found = await self._letter(letters[delivery_id])
            return found[1] if found else None

    async def dead_letter_delete(self, space: str, delivery_id: str) -> bool:
        with translated("delete a dead letter"):
            self._check_open()
            if history.parse_delivery_id(delivery_id) is None:
                return False
            letters = await self._letters(space, None, delivery_id)
            if delivery_id not in letters:
                return False
            head_seq, index = history.parse_delivery_id(delivery_id) or (0, 0)
            discarded = history.fact(index, history.DISCARDED)
            await self._publisher.publish([(self._names.fact_subject(head_seq), discarded, None)])
            await self._js.purge_stream(self._names.dead, subject=letters[delivery_id])
            return True

    async def redrive(self, space: str, subscription_id: str | None = None) -> int:
        with translated("redrive dead letters"):
            self._check_open()
            letters = await self._letters(space, subscription_id)
            found = await asyncio.gather(*(self._letter(subject) for subject in letters.values()))
            now = self._clock()
            messages: list[tuple[str, bytes, dict | None]] = []
            redriven: list[tuple[str, DeadLetter]] = []
            for subject, each in zip(letters.values(), found, strict=True):
                if each is None:
                    continue
                seq, letter = each
                record = letter.delivery
                item = history.WorkItem(
                    record.id, record.subscription_id, record.function_id, letter.event, 0
                )
                target = self._names.delivery_subject(space, record.subscription_id)
                headers = {"Nats-Msg-Id": f"{record.id}/redrive/{seq}"}
                messages.append((target, history.work_item(item), headers))
                head_seq, index = history.parse_delivery_id(record.id) or (0, 0)
                again = history.fact(index, history.REDRIVEN, due=now)
                messages.append((self._names.fact_subject(head_seq), again, None))
                redriven.append((subject, letter))
            await self._publisher.publish(messages)
            for subject, _ in redriven:
                await self._js.purge_stream(self._names.dead, subject=subject)
            self._notify({(space, letter.delivery.subscription_id) for _, letter in redriven})
            return len(redriven)

    async def purge(self, retention: Retention) -> int:
        """JetStream applies the retention itself (stream limits); this only updates them."""
        with translated("update the streams' retention"):
            self._check_open()
            if retention != self._retention:
                self._retention = retention
                await self._ensure_streams()
            return 0

    def stats(self) -> QueueStats:
        return QueueStats(self._appended, self._duplicates, self._publisher.flushes)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        with contextlib.suppress(Exception):
            await self._nc.drain()
        with contextlib.suppress(Exception):
            await self._nc.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BusUnavailable("the event bus is closed")
