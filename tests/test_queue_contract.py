"""The contract every delivery queue backend keeps, written against the `Queue` interface.

Add a backend by adding a parameter to the `backend` fixture and a branch to `open_queue`: a
factory that opens the same queue again (same directory, cluster or stream) each time it is
called, on the test's clock.

Both backends run every test but those that travel in time with the test's clock (`time_travel`),
which run on the SQLite queue alone: JetStream keeps leases, backoffs and the dedupe window on the
server's clock. Each of those properties is also checked in real time, with short durations, on
both backends (the `*_in_real_time` tests).
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from eventgate.delivery import (
    Attempt,
    NewEvent,
    Queue,
    Retention,
    SqliteQueue,
    State,
    Target,
)
from eventgate.delivery.natsqueue import NatsQueue
from tests.nats_server import nats_server  # noqa: F401 - a fixture


class Clock:
    """A clock the test moves by hand, so leases and backoffs expire without sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


QueueOpener = Callable[..., Awaitable[Queue]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "nats"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# For tests that move the test's clock to expire leases, backoffs or windows: the SQLite queue
# alone (JetStream times those on the server's clock; see the *_in_real_time tests).
time_travel = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
async def open_queue(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[QueueOpener]:
    opened: list[Queue] = []
    name = f"t{uuid.uuid4().hex[:12]}"

    async def open_again(dedupe_window: float = 60.0, *, real_time: bool = False) -> Queue:
        ticks = time.time if real_time else clock
        queue: Queue
        if backend == "sqlite":
            queue = await SqliteQueue.open(
                tmp_path / "queue", dedupe_window=dedupe_window, clock=ticks
            )
        else:
            server = request.getfixturevalue("nats_server")
            queue = await NatsQueue.open(
                server.url, name=name, dedupe_window=dedupe_window, clock=ticks
            )
        opened.append(queue)
        return queue

    yield open_again
    for queue in opened:
        await queue.close()


@pytest.fixture
async def queue(open_queue: QueueOpener) -> Queue:
    return await open_queue()


def event(
    event_id: str, *subscriptions: str, space: str = "default", source: str = "/s"
) -> NewEvent:
    targets = [Target(subscription, f"fn-{subscription}") for subscription in subscriptions]
    return NewEvent(
        space, source, event_id, "user.created", f'{{"n":"{event_id}"}}'.encode(), targets
    )


def attempt(clock: Clock, status: int | None = 200, error: str | None = None) -> Attempt:
    return Attempt(at=clock(), target="http://fn.local/", latency=0.004, status=status, error=error)


async def test_append_claim_ack(queue: Queue, clock: Clock) -> None:
    accepted = await queue.append([event("e1", "a", "b"), event("e2", "a"), event("e3")])
    assert [(a.duplicate, a.deliveries) for a in accepted] == [(False, 2), (False, 1), (False, 0)]
    claimed = await queue.claim(10, lease_seconds=30)
    assert sorted((d.event.id, d.subscription_id) for d in claimed) == [
        ("e1", "a"),
        ("e1", "b"),
        ("e2", "a"),
    ]
    first = claimed[0]
    assert (first.space, first.function_id, first.tries) == (
        "default",
        f"fn-{first.subscription_id}",
        0,
    )
    assert first.event.payload == f'{{"n":"{first.event.id}"}}'.encode()
    assert first.event.received_at == clock()
    assert await queue.claim(10, lease_seconds=30) == []  # all leased
    for delivery in claimed:
        assert await queue.ack(delivery, attempt(clock))
    clock.advance(3600)
    assert await queue.claim(10, lease_seconds=30) == []  # acked ones never come back
    assert await queue.depth() == {}


async def test_claim_by_subscription_and_limit(queue: Queue) -> None:
    await queue.append([event(f"e{n}", "a", "b") for n in range(5)])
    await queue.append([event("other", "a", space="other")])
    claimed = await queue.claim(3, 30, space="default", subscription_id="b")
    assert [(d.subscription_id, d.event.id) for d in claimed] == [
        ("b", "e0"),
        ("b", "e1"),
        ("b", "e2"),
    ]
    assert {d.space for d in await queue.claim(100, 30, space="other")} == {"other"}
    with pytest.raises(ValueError, match="needs its space"):
        await queue.claim(1, 30, subscription_id="a")


async def test_depth_per_subscription(queue: Queue) -> None:
    await queue.append([event("e1", "a", "b"), event("e2", "a"), event("e3", "a", space="s2")])
    assert await queue.depth() == {("default", "a"): 2, ("default", "b"): 1, ("s2", "a"): 1}
    [delivery] = await queue.claim(1, 30, space="default", subscription_id="b")
    assert await queue.depth() == {("default", "a"): 2, ("default", "b"): 1, ("s2", "a"): 1}
    await queue.ack(delivery, Attempt(0, "t", 0.1, 200))
    assert await queue.depth() == {("default", "a"): 2, ("s2", "a"): 1}


async def test_durable_across_close_and_reopen(open_queue: QueueOpener) -> None:
    first = await open_queue()
    await first.append([event("e1", "a"), event("e2", "a")])
    await first.close()
    again = await open_queue()
    claimed = await again.claim(10, 30)
    assert sorted(d.event.id for d in claimed) == ["e1", "e2"]
    assert (await again.append([event("e1", "a")]))[0].duplicate  # dedupe survives a restart


@time_travel
async def test_unsettled_claim_is_redelivered_after_its_lease(
    open_queue: QueueOpener, clock: Clock
) -> None:
    crashed = await open_queue()
    await crashed.append([event("e1", "a")])
    [lost] = await crashed.claim(1, lease_seconds=30)
    await crashed.close()  # the dispatcher died holding the lease
    again = await open_queue()
    clock.advance(29)
    assert await again.claim(1, 30) == []
    clock.advance(2)
    [redelivered] = await again.claim(1, 30)
    assert (redelivered.id, redelivered.event.id) == (lost.id, "e1")
    assert redelivered.lease != lost.lease


@time_travel
async def test_stale_claim_records_its_attempt_but_changes_nothing(
    queue: Queue, clock: Clock
) -> None:
    await queue.append([event("e1", "a")])
    [slow] = await queue.claim(1, lease_seconds=10)
    clock.advance(11)
    [current] = await queue.claim(1, lease_seconds=10)
    assert not await queue.ack(slow, attempt(clock, status=200))
    assert not await queue.dead_letter(slow, None, "too late")
    assert await queue.retry(current, clock() + 5, attempt(clock, status=503))
    [life] = await queue.life("default", "e1")
    [record] = life.deliveries
    assert record.state is State.PENDING
    assert [a.status for a in record.attempts] == [200, 503]


@time_travel
async def test_retry_waits_for_not_before(queue: Queue, clock: Clock) -> None:
    await queue.append([event("e1", "a")])
    [delivery] = await queue.claim(1, 30)
    assert await queue.retry(delivery, clock() + 10, attempt(clock, status=None, error="timeout"))
    assert await queue.claim(1, 30) == []
    clock.advance(9.9)
    assert await queue.claim(1, 30) == []
    clock.advance(0.1)
    [again] = await queue.claim(1, 30)
    assert (again.id, again.tries) == (delivery.id, 1)


@time_travel
async def test_dedupe_window(open_queue: QueueOpener, clock: Clock) -> None:
    queue = await open_queue(dedupe_window=60)
    assert not (await queue.append([event("e1", "a", "b")]))[0].duplicate
    clock.advance(59)
    duplicate, same_batch_first, same_batch_second = await queue.append(
        [event("e1", "x"), event("e2", "a"), event("e2", "a")]
    )
    assert (duplicate.duplicate, duplicate.deliveries) == (True, 2)  # the original's fan-out
    assert (same_batch_first.duplicate, same_batch_second.duplicate) == (False, True)
    other_source, other_space = await queue.append(
        [event("e1", "a", source="/other"), event("e1", "a", space="s2")]
    )
    assert not other_source.duplicate and not other_space.duplicate
    clock.advance(2)  # the first e1 is now outside the window
    assert not (await queue.append([event("e1", "a")]))[0].duplicate
    assert len(await queue.life("default", "e1", source="/s")) == 2
    stats = queue.stats()
    assert (stats.appended, stats.duplicates) == (5, 2)


async def test_dedupe_can_be_turned_off(open_queue: QueueOpener) -> None:
    queue = await open_queue(dedupe_window=0)
    results = await queue.append([event("e1", "a"), event("e1", "a")])
    assert [r.duplicate for r in results] == [False, False]


async def test_group_commit_batches_concurrent_appends(queue: Queue) -> None:
    before = queue.stats().commits
    results = await asyncio.gather(*(queue.append([event(f"e{n}", "a")]) for n in range(1000)))
    commits = queue.stats().commits - before
    assert all(not r.duplicate for [r] in results)
    assert 1 <= commits <= 100, f"{commits} transactions for 1000 concurrent appends"
    assert await queue.depth() == {("default", "a"): 1000}


async def test_dead_letter_list_get_delete(queue: Queue, clock: Clock) -> None:
    await queue.append([event("e1", "a", "b"), event("e2", "a")])
    claimed = {(d.event.id, d.subscription_id): d for d in await queue.claim(10, 30)}
    await queue.dead_letter(claimed["e1", "a"], attempt(clock, status=400), "status 400: bad input")
    await queue.dead_letter(claimed["e1", "b"], None, "subscription removed")
    await queue.ack(claimed["e2", "a"], attempt(clock))
    letters = await queue.dead_letters("default")
    assert [(d.event.id, d.delivery.subscription_id) for d in letters] == [("e1", "b"), ("e1", "a")]
    [only_a] = await queue.dead_letters("default", subscription_id="a")
    assert only_a.delivery.error == "status 400: bad input"
    assert [a.status for a in only_a.delivery.attempts] == [400]
    assert only_a.event.payload == b'{"n":"e1"}'
    assert await queue.dead_letters("other") == []
    assert await queue.dead_letter_get("default", only_a.delivery.id) == only_a
    assert await queue.dead_letter_get("other", only_a.delivery.id) is None
    assert await queue.dead_letter_get("default", "not-an-id") is None
    assert await queue.dead_letter_delete("default", only_a.delivery.id)
    assert not await queue.dead_letter_delete("default", only_a.delivery.id)
    assert await queue.dead_letter_get("default", only_a.delivery.id) is None
    [life] = await queue.life("default", "e1")
    assert {d.subscription_id: d.state for d in life.deliveries} == {
        "a": State.DISCARDED,
        "b": State.DEAD,
    }


async def test_redrive(queue: Queue, clock: Clock) -> None:
    await queue.append([event("e1", "a", "b"), event("e2", "a")])
    for delivery in await queue.claim(10, 30):
        await queue.retry(delivery, clock(), attempt(clock, status=500))
    for delivery in await queue.claim(10, 30):
        await queue.dead_letter(delivery, attempt(clock, status=500), "retries exhausted")
    assert await queue.claim(10, 30) == []
    assert await queue.redrive("other") == 0
    assert await queue.redrive("default", subscription_id="b") == 1
    [again] = await queue.claim(10, 30)
    assert (again.subscription_id, again.tries) == ("b", 0)
    assert len(await queue.dead_letters("default")) == 2
    assert await queue.redrive("default") == 2
    assert len(await queue.claim(10, 30)) == 2
    assert await queue.dead_letters("default") == []
    [life] = await queue.life("default", "e1")
    assert all(len(d.attempts) == 2 for d in life.deliveries)  # history survives a redrive


async def test_life_of_an_event(queue: Queue, clock: Clock) -> None:
    await queue.append([event("e1", "a", "b"), event("e1", "a", source="/other"), event("e2")])
    for delivery in await queue.claim(10, 30):
        if delivery.subscription_id == "a":
            await queue.ack(delivery, attempt(clock, status=202))
        else:
            await queue.retry(delivery, clock() + 60, attempt(clock, status=None, error="refused"))
    lives = await queue.life("default", "e1")
    assert [life.event.source for life in lives] == ["/s", "/other"]
    [mine] = await queue.life("default", "e1", source="/s")
    states = {d.subscription_id: (d.state, d.due, d.attempts) for d in mine.deliveries}
    assert states["a"][0] is State.DELIVERED
    assert states["b"][:2] == (State.PENDING, clock() + 60)
    assert states["b"][2] == (attempt(clock, status=None, error="refused"),)
    [no_subscribers] = await queue.life("default", "e2")
    assert no_subscribers.deliveries == ()
    assert await queue.life("default", "missing") == []
    assert await queue.life("other", "e1") == []


@time_travel
async def test_retention_by_age_keeps_pending(queue: Queue, clock: Clock) -> None:
    await queue.append([event("old-done", "a"), event("old-pending", "a"), event("old-none")])
    claimed = {d.event.id: d for d in await queue.claim(10, 30)}
    await queue.ack(claimed["old-done"], attempt(clock))
    await queue.retry(claimed["old-pending"], clock() + 1000, attempt(clock, status=500))
    clock.advance(100)
    await queue.append([event("new-done", "a")])
    [new] = await queue.claim(10, 30)
    await queue.ack(new, attempt(clock))
    assert await queue.purge(Retention(max_age=50, max_events=1000)) == 2
    names = ("old-done", "old-pending", "old-none", "new-done")
    assert [name for name in names if await queue.life("default", name)] == [
        "old-pending",
        "new-done",
    ]
    assert await queue.depth() == {("default", "a"): 1}


@time_travel
async def test_retention_by_count_deletes_oldest_finished(queue: Queue, clock: Clock) -> None:
    for n in range(6):
        await queue.append([event(f"e{n}", *(["a"] if n == 0 else []))])
        clock.advance(1)
    assert await queue.purge(Retention(max_age=3600, max_events=3)) == 3
    kept = [n for n in range(6) if await queue.life("default", f"e{n}")]
    assert kept == [0, 4, 5]  # e0 is still pending, so it stays
    assert await queue.purge(Retention(max_age=3600, max_events=3)) == 0


CRASH_CHILD = """
import asyncio, sys
from pathlib import Path
from eventgate.delivery import NewEvent, SqliteQueue, Target

async def appender(queue, worker):
    n = 0
    while True:
        event_id = f"w{worker}-{n}"
        new = NewEvent("default", "/crash", event_id, "t", b"{}", [Target("a", "f")])
        await queue.append([new])
        sys.stdout.write(event_id + "\\n")
        sys.stdout.flush()
        n += 1

async def main():
    queue = await SqliteQueue.open(Path(sys.argv[1]))
    await asyncio.gather(*(appender(queue, worker) for worker in range(32)))

asyncio.run(main())
"""


def test_every_acknowledged_append_survives_sigkill(tmp_path: Path) -> None:
    directory = tmp_path / "crash"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(directory)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    acknowledged = [child.stdout.readline() for _ in range(3000)]
    child.send_signal(signal.SIGKILL)  # mid-stream: 32 appenders never stop on their own
    acknowledged += child.stdout.read().splitlines(keepends=True)
    child.wait()
    ids = [line.decode().strip() for line in acknowledged if line.endswith(b"\n")]
    assert len(ids) >= 3000

    async def missing_after_reopen() -> tuple[list[str], int]:
        queue = await SqliteQueue.open(directory)
        try:
            missing = [i for i in ids if not await queue.life("default", i, source="/crash")]
            return missing, (await queue.depth())["default", "a"]
        finally:
            await queue.close()

    missing, depth = asyncio.run(missing_after_reopen())
    assert missing == []
    assert depth >= len(ids)  # appends that committed after the last printed line count too


async def test_rejected_events_are_recorded_but_never_delivered_nor_originals(
    queue: Queue,
) -> None:
    refused = NewEvent("default", "/s", "r1", "user.created", b"{}", [Target("a", "f")], '{"m":1}')
    await queue.reject(refused, 403, "denied by the authorizer")
    assert await queue.claim(10, 30) == []
    [life] = await queue.life("default", "r1")
    assert (life.event.rejected_status, life.event.rejected) == (403, "denied by the authorizer")
    assert (life.event.origin, life.deliveries) == ('{"m":1}', ())
    [accepted] = await queue.append([event("r1", "a")])  # a refusal is not an original
    assert not accepted.duplicate


async def test_duplicates_are_counted_on_the_original(queue: Queue) -> None:
    await queue.append([event("e1", "a")])
    await queue.append([event("e1", "a"), event("e1", "a")])
    [life] = await queue.life("default", "e1")
    assert life.event.duplicates == 2


async def test_listeners_hear_of_new_due_work(queue: Queue, clock: Clock) -> None:
    heard: list[set[tuple[str, str]]] = []
    queue.listen(heard.append)
    await queue.append([event("e1", "a", "b"), event("e2")])
    await queue.append([event("e1", "a")])  # a duplicate brings no work
    assert heard == [{("default", "a"), ("default", "b")}]
    [delivery, *_] = await queue.claim(10, 30, space="default", subscription_id="a")
    await queue.dead_letter(delivery, attempt(clock, status=400), "no")
    await queue.redrive("default")
    assert heard[-1] == {("default", "a")}


@time_travel
async def test_due_times_and_release(queue: Queue, clock: Clock) -> None:
    await queue.append([event("e1", "a"), event("e2", "b")])
    start = clock()
    assert await queue.due_times() == {("default", "a"): start, ("default", "b"): start}
    [held] = await queue.claim(1, 30, space="default", subscription_id="a")
    assert (await queue.due_times("default", "a")) == {("default", "a"): start + 30}
    assert await queue.release([held]) == 1
    assert await queue.release([held]) == 1  # still the same claim: harmless
    [again] = await queue.claim(1, 30, space="default", subscription_id="a")
    assert (again.id, again.tries) == (held.id, 0)
    assert await queue.release([held]) == 0  # a stale claim releases nothing


async def claim_within(queue: Queue, seconds: float, lease: float = 30) -> list:
    """Claim until something comes, or `seconds` pass (a backend may keep one lease per
    subscription: claim with the lease the test uses throughout)."""
    deadline = time.monotonic() + seconds
    while True:
        claimed = await queue.claim(10, lease)
        if claimed or time.monotonic() > deadline:
            return claimed
        await asyncio.sleep(0.02)


async def test_lease_runs_out_in_real_time(open_queue: QueueOpener) -> None:
    crashed = await open_queue(real_time=True)
    await crashed.append([event("e1", "a")])
    [lost] = await crashed.claim(1, lease_seconds=1.0)
    started = time.monotonic()
    await crashed.close()  # the dispatcher died holding the lease
    again = await open_queue(real_time=True)
    assert await again.claim(1, 1.0) == []
    [redelivered] = await claim_within(again, 5.0, lease=1.0)
    assert time.monotonic() - started > 0.8
    assert (redelivered.id, redelivered.event.id) == (lost.id, "e1")
    assert redelivered.lease != lost.lease


async def test_stale_claim_in_real_time(open_queue: QueueOpener) -> None:
    queue = await open_queue(real_time=True)
    await queue.append([event("e1", "a")])
    [slow] = await queue.claim(1, lease_seconds=1.0)
    [current] = await claim_within(queue, 5.0, lease=1.0)
    assert current.id == slow.id and current.lease != slow.lease
    assert not await queue.ack(slow, Attempt(time.time(), "t", 0.6, 200))
    assert await queue.retry(current, time.time() + 60, Attempt(time.time(), "t", 0.1, 503))
    [life] = await queue.life("default", "e1")
    [record] = life.deliveries
    assert record.state is State.PENDING
    assert [a.status for a in record.attempts] == [200, 503]


async def test_retry_waits_for_not_before_in_real_time(open_queue: QueueOpener) -> None:
    queue = await open_queue(real_time=True)
    await queue.append([event("e1", "a")])
    [delivery] = await queue.claim(1, 30)
    started = time.monotonic()
    await queue.retry(delivery, time.time() + 0.6, Attempt(time.time(), "t", 0.1, None, "timeout"))
    assert await queue.claim(1, 30) == []
    [again] = await claim_within(queue, 5.0)
    assert time.monotonic() - started > 0.5
    assert (again.id, again.tries) == (delivery.id, 1)


async def test_dedupe_window_in_real_time(open_queue: QueueOpener) -> None:
    queue = await open_queue(dedupe_window=1.0, real_time=True)
    assert not (await queue.append([event("e1", "a", "b")]))[0].duplicate
    duplicate, first, second = await queue.append(
        [event("e1", "x"), event("e2", "a"), event("e2", "a")]
    )
    assert (duplicate.duplicate, duplicate.deliveries) == (True, 2)
    assert (first.duplicate, second.duplicate) == (False, True)
    await asyncio.sleep(1.3)  # the first e1 is now outside the window
    assert not (await queue.append([event("e1", "a")]))[0].duplicate
    assert len(await queue.life("default", "e1", source="/s")) == 2


async def test_release_gives_claims_back(queue: Queue) -> None:
    await queue.append([event("e1", "a"), event("e2", "b")])
    assert set(await queue.due_times()) == {("default", "a"), ("default", "b")}
    [held] = await queue.claim(1, 30, space="default", subscription_id="a")
    assert await queue.release([held]) == 1
    assert await queue.release([held]) == 1  # still the same claim: harmless
    [again] = await queue.claim(1, 30, space="default", subscription_id="a")
    assert (again.id, again.tries) == (held.id, 0)
    assert await queue.release([held]) == 0  # a stale claim releases nothing
    assert await queue.depth() == {("default", "a"): 1, ("default", "b"): 1}
