"""Shared fixtures: eventgate nodes and echo functions as real processes on free loopback ports."""

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.delivery_helpers import LocalNode
from tests.processes import EchoProcess, EventgateProcess
from tests.python_helpers import IMAGE, PythonNode, greeter_requirements


@pytest.fixture
def eventgate(tmp_path: Path) -> Iterator[EventgateProcess]:
    """A started `eventgate serve` with its own data dir; stopped after the test."""
    node = EventgateProcess(tmp_path / "data").start()
    yield node
    node.stop()


@pytest.fixture
def echo_function() -> Iterator[Callable[[str], EchoProcess]]:
    """Start echo functions (`function` or `container`); all are stopped after the test."""
    started: list[EchoProcess] = []

    def start(compute_type: str) -> EchoProcess:
        process = EchoProcess(compute_type)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def local_node(tmp_path: Path) -> AsyncIterator[LocalNode]:
    """A whole node in the test's event loop (see `tests/delivery_helpers.py`)."""
    node = await LocalNode(tmp_path / "node").start()
    yield node
    await node.close()


@pytest.fixture(scope="session")
def python_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonNode]:
    """One node for python function tests, shared by the session (tests use their own function
    names), with the image `python3` built once: its requirement is a wheel built here."""
    directory = tmp_path_factory.mktemp("python-node")
    node = PythonNode(directory).start()
    image = node.image(IMAGE, greeter_requirements(directory / "wheels"))
    assert image["status"] == "READY", image
    yield node
    node.stop()
