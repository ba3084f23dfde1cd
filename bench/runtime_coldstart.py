"""Cold starts and call overhead of the python runtime, beside `python -c pass` in the same run.

    python bench/runtime_coldstart.py [--calls 200] [--cold 50] [--json results.json]

Figures (p50, with p90 beside):
- interpreter start: `<image python> -I -c pass`, the floor of any start that is not a fork;
- deploy: a new version's fork server (interpreter start, shim, handler import);
- cold call, warm fork server: the call forks a new worker (idle workers are reaped at once);
- cold call after scale to zero: the fork server starts again, then forks;
- warm call, and its overhead against calling the handler in-process;
- warm throughput with as many concurrent callers as workers.
"""

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import uvloop

from eventgate.runtime import FunctionSpec, Runtime, RuntimeOptions

# Dispatch's hello, also saying which fork server ran it (to wait for that one to be gone).
HELLO = """
import os

def handle(ctx, payload):
    name = "Noone"
    place = "Nowhere"
    if payload:
        name = payload.get("name", name)
        place = payload.get("place", place)
    print("messages to stdout show up in logs")
    return {"myField": "Hello, %s from %s" % (name, place), "server": os.getppid()}
"""
PAYLOAD = {"name": "Jon", "place": "Winterfell"}


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1], 3),
        "n": len(ordered),
    }


def interpreter_start(python: Path, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(python), "-I", "-c", "pass"], check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def in_process_call(bundle: Path, runs: int) -> list[float]:
    spec = importlib.util.spec_from_file_location("bench_hello", bundle / "hello.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    samples = []
    with open(os.devnull, "w") as devnull:
        stdout, sys.stdout = sys.stdout, devnull
        try:
            for _ in range(runs):
                started = time.perf_counter()
                module.handle({}, PAYLOAD)
                samples.append((time.perf_counter() - started) * 1000)
        finally:
            sys.stdout = stdout
    return samples


def exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await asyncio.sleep(0.001)


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, float]]:
    setup = Runtime(workdir / "data")
    image = await setup.images.build("python3", "")
    bundle = workdir / "src"
    bundle.mkdir()
    (bundle / "hello.py").write_text(HELLO)
    spec = FunctionSpec(
        space="bench", name="hello", version="v0", python=image.python, handler="hello.handle",
        bundle=bundle, concurrency=os.cpu_count() or 2,
    )  # fmt: skip
    results = {"interpreter start (python -I -c pass)": interpreter_start(image.python, args.cold)}

    deploys, first_calls = [], []
    for version in range(args.cold):
        versioned = replace(spec, version=f"v{version}")
        deploys.append(await timed(lambda: setup.deploy(versioned)))  # noqa: B023
        first_calls.append(await timed(lambda: setup.invoke("bench", "hello", PAYLOAD)))
    results["deploy (fork server start + import)"] = deploys
    results["first call after deploy"] = first_calls

    warm = [await timed(lambda: setup.invoke("bench", "hello", PAYLOAD)) for _ in range(args.calls)]
    results["warm call"] = warm
    results["handler called in-process"] = in_process_call(bundle, args.calls)
    callers = spec.concurrency
    started = time.perf_counter()
    for _ in range(args.calls // callers):
        await asyncio.gather(*(setup.invoke("bench", "hello", PAYLOAD) for _ in range(callers)))
    elapsed = time.perf_counter() - started
    await setup.close()

    reaping = Runtime(workdir / "data", RuntimeOptions(worker_idle_timeout=0.0))
    await reaping.deploy(spec)
    cold = []
    for _ in range(args.cold):
        await until(lambda: reaping.stats("bench", "hello").workers == 0)
        cold.append(await timed(lambda: reaping.invoke("bench", "hello", PAYLOAD)))
    results["cold call, warm fork server (fork)"] = cold
    await reaping.close()

    zero = Runtime(workdir / "data", RuntimeOptions(server_idle_timeout=0.0))
    await zero.deploy(spec)
    server = (await zero.invoke("bench", "hello", PAYLOAD)).payload["server"]
    from_zero = []
    for _ in range(args.cold):
        await until(lambda: not exists(server))  # noqa: B023
        started = time.perf_counter()
        server = (await zero.invoke("bench", "hello", PAYLOAD)).payload["server"]
        from_zero.append((time.perf_counter() - started) * 1000)
    results["cold call after scale to zero"] = from_zero
    await zero.close()

    figures = {name: percentiles(samples) for name, samples in results.items()}
    overhead = figures["warm call"]["p50_ms"] - figures["handler called in-process"]["p50_ms"]
    figures["warm call overhead (p50 difference)"] = {"p50_ms": round(overhead, 3)}
    figures[f"warm throughput, {callers} callers"] = {
        "calls_per_s": round((args.calls // callers) * callers / elapsed)
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="warm calls to time")
    parser.add_argument("--cold", type=int, default=30, help="cold starts of each kind to time")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eventgate-bench-") as workdir:
        figures = uvloop.run(measure(args, Path(workdir)))
    width = max(len(name) for name in figures)
    for name, figure in figures.items():
        values = "  ".join(f"{key}={value}" for key, value in figure.items())
        print(f"{name:<{width}}  {values}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
