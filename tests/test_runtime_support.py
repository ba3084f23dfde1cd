"""Helpers shared by the runtime tests (no tests here): images, function folders, gates, wheels.

The base image is built once per session under pytest's base temp dir; test modules that ask for
it again get the finished build back from the image store's disk cache.
"""

import asyncio
import base64
import hashlib
import os
import textwrap
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from eventgate.runtime import FunctionSpec, ImageStatus, ImageStore

WAIT = 10.0  # seconds a condition may take in these tests

HELLO = """
def handle(ctx, payload):
    name = "Noone"
    place = "Nowhere"
    if payload:
        name = payload.get("name", name)
        place = payload.get("place", place)
    print("messages to stdout show up in logs")
    return {"myField": "Hello, %s from %s" % (name, place)}
"""

# Blocks until the test releases it: connects to a Gate and waits for one byte.
GATED = """
import os
import socket

VERSION = {version!r}


def handle(ctx, payload):
    if payload and payload.get("gate"):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect("\\0" + payload["gate"])
            sock.recv(1)
    return {{"version": VERSION, "pid": os.getpid(), "server": os.getppid()}}
"""


def build_base_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of an image with no requirements (built once per session)."""
    store = ImageStore(tmp_path_factory.getbasetemp() / "runtime-images")
    image = asyncio.run(store.build("base", ""))
    assert image.status is ImageStatus.READY, image.log
    return image.python


def write_function(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return directory


def function_spec(python: Path, bundle: Path, **fields: object) -> FunctionSpec:
    values: dict[str, object] = {
        "space": "default",
        "name": "hello",
        "version": "v1",
        "python": python,
        "handler": "hello.handle",
        "bundle": bundle,
    }
    values.update(fields)
    return FunctionSpec(**values)  # type: ignore[arg-type]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail with `what` after WAIT seconds."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {WAIT}s waiting for {what}") from None


def process_exists(pid: int) -> bool:
    """Whether a process (not yet reaped) has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Gate:
    """An abstract unix socket that gated handlers connect to; they return once released."""

    def __init__(self) -> None:
        self.name = f"eventgate-test-{uuid.uuid4().hex}"
        self.arrived: list[asyncio.StreamWriter] = []
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> "Gate":
        self._server = await asyncio.start_unix_server(self._accept, path="\0" + self.name)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.arrived.append(writer)

    async def wait_for(self, count: int) -> None:
        await eventually(lambda: len(self.arrived) >= count, f"{count} calls at the gate")

    def release(self) -> None:
        """Let every call waiting at the gate return."""
        while self.arrived:
            writer = self.arrived.pop()
            writer.write(b"x")
            writer.close()


def make_wheel(directory: Path, name: str, version: str, module_source: str) -> Path:
    """A pure-Python wheel with one module, written by hand: no build backend, no network."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": textwrap.dedent(module_source),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: eventgate-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel
