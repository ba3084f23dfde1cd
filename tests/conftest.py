"""Shared fixtures: eventgate nodes and echo functions as real processes on free loopback ports."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.processes import EchoProcess, EventgateProcess


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
