"""Images: real virtual environments, a requirement installed from a wheel built in the test (no
network), shared builds (also between processes on one root), build errors with the installer's
own words, and isolation."""

import asyncio
import multiprocessing
import subprocess
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import pytest

from eventgate.errors import NotFound
from eventgate.runtime import ImageStatus, ImageStore, Runtime, images
from eventgate.runtime.images import installer_env
from tests.test_runtime_support import function_spec, make_wheel, write_function

GREETER = """
def greet(name):
    return "Hello, " + name + " from a wheel"
"""

USES_WHEEL = """
import tinygreet

def handle(ctx, payload):
    return tinygreet.greet(payload["name"])
"""


def imports(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], check=False).returncode == 0


@pytest.mark.parametrize("installer", ["uv", "pip"])
async def test_a_requirement_is_installed_and_imported_by_a_function(
    tmp_path: Path, installer: str
) -> None:
    wheel = make_wheel(tmp_path, "tinygreet", "0.1", GREETER)
    runtime = Runtime(tmp_path / "data", installer=installer)  # type: ignore[arg-type]
    try:
        image = await runtime.images.build("python3", f"{wheel}\n")
        bundle = write_function(tmp_path / "src", {"hello.py": USES_WHEEL})
        status = await runtime.deploy(function_spec(image.python, bundle))
        execution = await runtime.invoke("default", "hello", {"name": "Sansa"})
    finally:
        await runtime.close()

    assert image.status is ImageStatus.READY, image.log
    assert "tinygreet" in image.log
    assert image.python == tmp_path / "data" / "images" / image.digest / "bin" / "python"
    assert status.ready, status.traceback
    assert execution.payload == "Hello, Sansa from a wheel"


async def test_an_image_does_not_see_eventgates_packages(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)

    image = await store.build("bare", "")

    assert image.status is ImageStatus.READY
    assert imports(image.python, "json")
    assert not imports(image.python, "orjson")
    assert not imports(image.python, "eventgate")


async def test_identical_requirements_share_one_build(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "tinygreet", "0.1", GREETER)
    store = ImageStore(tmp_path / "images")

    submitted = store.submit("first", f"{wheel}\n")
    first = await store.wait("first")
    second = store.submit("second", f"\n  {wheel}  \n")
    after_restart = ImageStore(tmp_path / "images").submit("third", str(wheel))

    assert submitted.status is ImageStatus.CREATING
    assert first.status is ImageStatus.READY
    assert second.status is ImageStatus.READY and second.digest == first.digest
    assert after_restart.status is ImageStatus.READY and after_restart.log == first.log
    assert [image.name for image in store.all()] == ["first", "second"]


async def test_a_failed_build_says_why_in_the_installers_words(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)

    image = await store.build("broken", f"{tmp_path / 'missing-1.0-py3-none-any.whl'}\n")

    assert image.status is ImageStatus.ERROR
    assert "missing-1.0-py3-none-any.whl" in image.log
    assert "exited with code" in image.log


async def test_deleting_the_last_name_removes_the_build(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    first = await store.build("first", "")
    await store.build("second", "")

    await store.delete("first")
    kept = first.python.exists()
    await store.delete("second")

    assert kept and not first.python.parent.parent.exists()
    with pytest.raises(NotFound):
        store.get("first")


def test_the_installer_gets_only_what_an_installer_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTGATE_TEST_TOKEN", "private")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")

    env = installer_env()

    assert "EVENTGATE_TEST_TOKEN" not in env
    assert env["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert env["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert "PATH" in env


def build_in_a_process(
    root: Path, requirements: str, submitted: Barrier, go: Event, steps: Path, results: Any
) -> None:
    """A worker process's side: ask for the image, say so, and wait for it. Every build step
    run here is written to `steps`, and waits for `go` (both processes have asked by then)."""
    run = images._run

    async def counted(command: list[str], cwd: Path, log: list[str]) -> bool:
        await asyncio.to_thread(go.wait, 60)
        with steps.open("a") as out:
            out.write(f"{' '.join(command)}\n")
        return await run(command, cwd, log)

    images._run = counted

    async def main() -> None:
        store = ImageStore(root)
        asked = store.submit("python3", requirements)
        await asyncio.to_thread(submitted.wait, 60)
        image = await store.wait("python3")
        results.put((asked.status.value, image.status.value, str(image.python), image.log))

    asyncio.run(main())


def test_two_processes_asking_for_one_image_at_once_build_it_once(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "tinygreet", "0.1", GREETER)
    steps = tmp_path / "steps.txt"
    context = multiprocessing.get_context("spawn")
    submitted, go, results = context.Barrier(3), context.Event(), context.Queue()
    workers = [
        context.Process(
            target=build_in_a_process,
            args=(tmp_path / "images", f"{wheel}\n", submitted, go, steps, results),
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        submitted.wait(60)  # both asked before either could have built anything
        go.set()
        found = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(60)

    assert [worker.exitcode for worker in workers] == [0, 0]
    assert [(asked, status) for asked, status, _, _ in found] == [("CREATING", "READY")] * 2
    (python, log), (other_python, other_log) = [(python, log) for _, _, python, log in found]
    assert python == other_python and log == other_log
    ran = steps.read_text().splitlines()
    assert len(ran) == 2, ran  # one venv, one install: the second process reused the build
    assert " -m venv " in ran[0] and " install " in ran[1]
    assert imports(Path(python), "tinygreet")
