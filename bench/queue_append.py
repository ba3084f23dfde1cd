"""Durable append throughput of the embedded queue, beside SQLite's own one-row-per-commit rate.

    .venv/bin/python bench/queue_append.py [--appenders 64] [--seconds 5] [--dir /some/disk]

Both runs use the same directory (so the same disk), WAL and `synchronous=FULL`: every commit
is fsynced. The reference commits one row per transaction from one thread; the queue takes
appends from many concurrent tasks, each waiting until its event is on disk (group commit).
"""

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import uvloop

from eventgate.delivery import NewEvent, SqliteQueue, Target


def percentiles(latencies: list[float]) -> str:
    cuts = statistics.quantiles(latencies, n=100)
    return f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms"


def reference(directory: Path, seconds: float, payload: bytes) -> tuple[float, list[float]]:
    """SQLite alone: one INSERT per transaction, fsynced, for `seconds`."""
    connection = sqlite3.connect(directory / "reference.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload BLOB)")
    latencies = []
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO rows (payload) VALUES (?)", (payload,))
        connection.execute("COMMIT")
        latencies.append(time.perf_counter() - now)
    elapsed = time.perf_counter() - start
    connection.close()
    return len(latencies) / elapsed, latencies


async def queue_run(
    directory: Path, appenders: int, seconds: float, targets: int, payload: bytes
) -> tuple[float, list[float], int]:
    """Many concurrent appenders, one event (random UUID id, as producers send) per append."""
    queue = await SqliteQueue.open(directory / "queue")
    fanout = [Target(f"sub{n}", f"fn{n}") for n in range(targets)]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def appender() -> None:
        while time.perf_counter() < deadline:
            event = NewEvent("default", "/bench", str(uuid.uuid4()), "bench", payload, fanout)
            begin = time.perf_counter()
            await queue.append([event])
            latencies.append(time.perf_counter() - begin)

    start = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(appenders)))
    elapsed = time.perf_counter() - start
    commits = queue.stats().commits
    await queue.close()
    return len(latencies) / elapsed, latencies, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appenders", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--targets", type=int, default=1, help="subscriptions per event")
    parser.add_argument("--payload", type=int, default=256, help="event size in bytes")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    args = parser.parse_args()
    payload = b"x" * args.payload
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        directory = Path(name)
        rate, latencies = reference(directory, args.seconds, payload)
        label = "reference: SQLite, one row per fsynced commit"
        print(f"{label:48} {rate:>9,.0f} /s   {percentiles(latencies)}")
        rate, latencies, commits = uvloop.run(
            queue_run(directory, args.appenders, args.seconds, args.targets, payload)
        )
        label = f"queue: {args.appenders} appenders, group commit"
        print(f"{label:48} {rate:>9,.0f} /s   {percentiles(latencies)}", end="   ")
        print(f"({len(latencies) / commits:.0f} events per commit)")


if __name__ == "__main__":
    main()
