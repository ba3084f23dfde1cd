"""The `routing` scenario: does the size of the routing table slow the events port down?

Nodes with 10, 1,000 and 10,000 sync subscriptions (half static paths `/r<n>`, half with a
parameter `/p<n>/:id`, all to one proxy-mode function) are each loaded by wrk with requests
spread at random over all their routes, once each route has been asked for (the steady state:
a node remembers what it worked out for a request it has seen). Figure: throughput against the
10-route node's, in the same run (the aim: 10,000 within 5% of 10); each size runs twice,
interleaved, and keeps its best (other work on the machine comes and goes). Then, with
valgrind, the instructions per request at 10,000 against 10 (`instructions.py`): what the
routing code does, whatever the neighbours do (the caches a larger table spills are not in that
count). The subscriptions are written to the node's SQLite store before it starts (on /dev/shm
when there is one: fsyncs would only slow the seeding).
"""

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import instructions
import orjson
from harness import Processes, run_wrk
from table import row

from eventgate.model import Function, Subscription, store_key
from eventgate.store.sqlite import SqliteStore

SIZES = (10, 1_000, 10_000)
LUA = """
local paths = {}
for line in io.lines("PATHS") do paths[#paths + 1] = line end
math.randomseed(42)
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
"""


async def seed(data_dir: Path, backend: int, count: int) -> list[str]:
    """Write one function and `count` subscriptions to the store in `data_dir`; return a path
    each subscription matches."""
    store = await SqliteStore.open(data_dir / "config.db")
    try:
        function = Function.model_validate(
            {
                "functionId": "bench",
                "type": "http",
                "provider": {"url": f"http://127.0.0.1:{backend}", "mode": "proxy"},
            }
        )
        await store.put(
            store_key("functions", "default", "bench"), orjson.dumps(function.to_json())
        )
        paths = []
        for index in range(count):
            pattern, path = (
                (f"/r{index}", f"/r{index}") if index % 2 else (f"/p{index}/:id", f"/p{index}/7")
            )
            subscription = Subscription.model_validate(
                {"functionId": "bench", "method": "GET", "path": pattern}
            )
            key = store_key("subscriptions", "default", subscription.subscription_id or "")
            await store.put(key, orjson.dumps(subscription.to_json()))
            paths.append(path)
        return paths
    finally:
        await store.close()


def routing_scenario(seconds: int, connections: int, rounds: int = 2) -> dict[str, Any]:
    processes = Processes()
    shm = Path("/dev/shm")
    stores = Path(tempfile.mkdtemp(prefix="eventgate-bench-", dir=shm if shm.is_dir() else None))
    figures: dict[int, float] = dict.fromkeys(SIZES, 0.0)
    counted: dict[int, float] = {}
    try:
        backend = processes.backend()
        scripts = {}
        listed: dict[int, list[str]] = {}
        for count in SIZES:
            (stores / f"routes-{count}").mkdir()
            paths = asyncio.run(seed(stores / f"routes-{count}", backend, count))
            listing = processes.scratch / f"paths-{count}.txt"
            listing.write_text("\n".join(paths) + "\n")
            listed[count] = paths
            scripts[count] = processes.scratch / f"routes-{count}.lua"
            scripts[count].write_text(LUA.replace("PATHS", str(listing)))
        for _ in range(rounds):  # interleaved, best of each: neighbours' load comes and goes
            for count in SIZES:
                figures[count] = max(
                    figures[count], measure(stores / f"routes-{count}", scripts[count],
                                            listed[count], seconds, connections),
                )  # fmt: skip
        if instructions.available():  # the same, counted: no neighbour moves these
            for count in (SIZES[0], SIZES[-1]):
                node = Processes()
                try:
                    counted[count] = instructions.eventgate_per_request(
                        node,
                        stores / f"routes-{count}",
                        seconds,
                        script=scripts[count],
                        warm=listed[count],
                    )
                finally:
                    node.close()
    finally:
        processes.close()
        shutil.rmtree(stores, ignore_errors=True)
    reference = figures[SIZES[0]]
    rows = [
        row("routing", f"{count:,} subscriptions", figures[count], reference,
            f"{SIZES[0]} subscriptions", unit="req/s",
            aim=">= 0.95" if count == SIZES[-1] else "")
        for count in SIZES[1:]
    ]  # fmt: skip
    if counted:
        rows.append(
            row("routing", f"{SIZES[-1]:,} subscriptions, instructions", counted[SIZES[-1]],
                counted[SIZES[0]], f"{SIZES[0]} subscriptions", aim="<= 1.05")
        )  # fmt: skip
    return {
        "scenario": "routing",
        "requests_per_second": figures,
        "instructions_per_request": counted,
        "rows": rows,
    }


def measure(
    data_dir: Path, script: Path, paths: list[str], seconds: int, connections: int
) -> float:
    """Requests/s of a node started on `data_dir`, alone (stopped after), once it has seen
    each of `paths`."""
    node = Processes()
    try:
        events, _ = node.eventgate(data_dir=data_dir)
        instructions.visit(events, paths)
        result = run_wrk(
            f"http://127.0.0.1:{events}/", connections=connections, seconds=seconds, script=script
        )
    finally:
        node.close()
    if result.errors:
        raise RuntimeError(f"{result.errors} errors on {data_dir.name}")
    return result.requests_per_second
