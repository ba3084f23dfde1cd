"""Workers over time: the concurrency limit and its queue, idle reaping and scale to zero, updates
that let calls in flight finish, undeploy and close."""

import asyncio
import base64
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventgate.runtime import (
    NotDeployed,
    Runtime,
    RuntimeOptions,
    TooManyRequests,
    pack_directory,
)
from tests.test_runtime_support import (
    GATED,
    Gate,
    build_base_image,
    eventually,
    function_spec,
    process_exists,
    write_function,
)

SERVER_IDLE_TIMEOUT = 0.6


@pytest.fixture(scope="session")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base_image(tmp_path_factory)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    options = RuntimeOptions(
        queue_limit=1,
        worker_idle_timeout=0.2,
        server_idle_timeout=SERVER_IDLE_TIMEOUT,
        drain_timeout=10.0,
    )
    runtime = Runtime(tmp_path / "data", options)
    yield runtime
    await runtime.close()


async def deploy_gated(
    runtime: Runtime, python: Path, folder: Path, version: str = "v1", **fields: object
) -> None:
    bundle = write_function(folder, {"hello.py": GATED.format(version=version)})
    status = await runtime.deploy(function_spec(python, bundle, version=version, **fields))
    assert status.ready, (status.reason, status.traceback)


async def test_calls_over_the_concurrency_wait_then_get_too_many_requests(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy_gated(runtime, python, tmp_path / "src", concurrency=2)
    async with Gate() as gate:
        running = [
            asyncio.create_task(runtime.invoke("default", "hello", {"gate": gate.name}))
            for _ in range(2)
        ]
        await gate.wait_for(2)
        queued = asyncio.create_task(runtime.invoke("default", "hello", {"gate": gate.name}))
        await eventually(lambda: runtime.stats("default", "hello").waiting == 1, "a queued call")

        with pytest.raises(TooManyRequests) as refused:
            await runtime.invoke("default", "hello", {})
        stats = runtime.stats("default", "hello")
        gate.release()
        await gate.wait_for(1)  # the queued call got a worker
        gate.release()
        results = await asyncio.gather(*running, queued)

    assert refused.value.status == 429
    assert (stats.busy, stats.workers, stats.waiting) == (2, 2, 1)
    assert all(result.error is None for result in results)
    assert len({result.payload["pid"] for result in results}) == 2  # type: ignore[index]
    assert not results[2].cold_start  # it reused a worker that finished


async def test_idle_workers_are_reaped_then_the_fork_server_and_the_next_call_wakes_it(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy_gated(runtime, python, tmp_path / "src")
    first = await runtime.invoke("default", "hello", {})
    worker, server = first.payload["pid"], first.payload["server"]  # type: ignore[index]

    await eventually(lambda: not process_exists(worker), "the idle worker to exit")
    assert process_exists(server)
    await eventually(lambda: not runtime.stats("default", "hello").server_running, "scale to zero")
    await eventually(lambda: not process_exists(server), "the fork server to exit")
    woken = await runtime.invoke("default", "hello", {})

    assert first.cold_start and woken.cold_start and woken.error is None
    assert woken.payload["server"] != server  # type: ignore[index]
    assert runtime.stats("default", "hello").server_running


async def test_a_busy_function_is_not_scaled_to_zero(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy_gated(runtime, python, tmp_path / "src")
    async with Gate() as gate:
        call = asyncio.create_task(runtime.invoke("default", "hello", {"gate": gate.name}))
        await gate.wait_for(1)
        await asyncio.sleep(SERVER_IDLE_TIMEOUT * 2)  # time passing is what is under test
        assert runtime.stats("default", "hello").server_running
        gate.release()
        result = await call

    assert result.error is None


async def test_an_update_lets_calls_in_flight_finish_on_the_old_version(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy_gated(runtime, python, tmp_path / "v1", "v1")
    async with Gate() as gate:
        in_flight = asyncio.create_task(runtime.invoke("default", "hello", {"gate": gate.name}))
        await gate.wait_for(1)

        await deploy_gated(runtime, python, tmp_path / "v2", "v2")
        updated = await runtime.invoke("default", "hello", {})
        gate.release()
        old = await in_flight

    assert old.error is None and old.payload["version"] == "v1"  # type: ignore[index]
    assert updated.payload["version"] == "v2"  # type: ignore[index]
    old_server = old.payload["server"]  # type: ignore[index]
    assert old_server != updated.payload["server"]  # type: ignore[index]
    await eventually(lambda: not process_exists(old_server), "the old fork server to stop")


async def test_a_failed_update_keeps_the_previous_version(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy_gated(runtime, python, tmp_path / "v1", "v1")
    broken = write_function(tmp_path / "v2", {"hello.py": "raise ImportError('nope')\n"})

    status = await runtime.deploy(function_spec(python, broken, version="v2"))
    result = await runtime.invoke("default", "hello", {})

    assert status.status == "ERROR" and "nope" in (status.reason or "")
    assert result.payload["version"] == "v1"  # type: ignore[index]


async def test_deploying_the_same_spec_again_keeps_the_running_workers(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy_gated(runtime, python, tmp_path / "src")
    first = await runtime.invoke("default", "hello", {})

    await deploy_gated(runtime, python, tmp_path / "src")
    second = await runtime.invoke("default", "hello", {})

    assert second.payload == first.payload and not second.cold_start


async def test_a_cancelled_call_kills_its_worker(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy_gated(runtime, python, tmp_path / "src")
    async with Gate() as gate:
        call = asyncio.create_task(runtime.invoke("default", "hello", {"gate": gate.name}))
        await gate.wait_for(1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        after = await runtime.invoke("default", "hello", {})

    assert after.error is None and after.cold_start
    assert runtime.stats("default", "hello").busy == 0


async def test_a_killed_fork_server_takes_its_workers_and_the_next_call_restarts_it(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy_gated(runtime, python, tmp_path / "src")
    first = await runtime.invoke("default", "hello", {})
    worker, server = first.payload["pid"], first.payload["server"]  # type: ignore[index]

    os.kill(server, signal.SIGKILL)
    await eventually(lambda: not process_exists(worker), "the worker to die with its server")
    await eventually(
        lambda: not runtime.stats("default", "hello").server_running, "the loss to be seen"
    )
    after = await runtime.invoke("default", "hello", {})

    assert after.error is None and after.cold_start
    assert after.payload["server"] != server  # type: ignore[index]


async def test_undeploy_stops_the_processes_and_removes_the_files(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    bundle = await runtime.unpack("default", "hello", _archive(tmp_path))
    status = await runtime.deploy(function_spec(python, bundle.path, version=bundle.version))
    result = await runtime.invoke("default", "hello", {})

    await runtime.undeploy("default", "hello")

    assert status.ready
    assert not process_exists(result.payload["server"])  # type: ignore[index]
    assert not bundle.path.exists()
    with pytest.raises(NotDeployed):
        await runtime.invoke("default", "hello", {})


async def test_close_stops_every_function(python: Path, tmp_path: Path) -> None:
    runtime = Runtime(tmp_path / "data")
    servers = []
    for name in ("one", "two"):
        bundle = write_function(tmp_path / name, {"hello.py": GATED.format(version=name)})
        await runtime.deploy(function_spec(python, bundle, name=name))
        servers.append((await runtime.invoke("default", name, {})).payload["server"])  # type: ignore[index]

    await runtime.close()

    assert not any(process_exists(server) for server in servers)


def _archive(tmp_path: Path) -> str:
    folder = write_function(tmp_path / "src", {"hello.py": GATED.format(version="v1")})
    return base64.b64encode(pack_directory(folder)).decode()
