"""Helpers for python function tests through a real node: sources, images, functions, calls.

`PythonNode` is an `eventgate serve` subprocess with sync clients for both ports. The session
node (fixture `python_node` in conftest) has the image `python3`, whose requirements install the
wheel `tinygreet` built by the test itself (a local path: no network).
"""

import base64
import textwrap
from pathlib import Path
from typing import Any

import httpx

from eventgate.runtime import pack_directory
from tests.processes import EventgateProcess, wait_until
from tests.test_runtime_support import make_wheel, write_function

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "python3"
WAIT = 20.0
IMAGE = "python3"
GREETER = """
def greet(name):
    return "Hello, " + name + " from a wheel"
"""


def source(directory: Path, files: dict[str, str]) -> str:
    """The base64 `.tar.gz` of a folder holding `files` (dedented)."""
    write_function(directory, {name: textwrap.dedent(text) for name, text in files.items()})
    return base64.b64encode(pack_directory(directory)).decode("ascii")


def greeter_requirements(directory: Path) -> str:
    """A requirements text naming the `tinygreet` wheel, built into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    return f"{make_wheel(directory, 'tinygreet', '0.1', GREETER)}\n"


class PythonNode:
    """A node for python functions, with helpers that assert what must go right."""

    def __init__(self, directory: Path, **env: str) -> None:
        self.directory = directory
        self.process = EventgateProcess(directory / "data", extra_env=env)
        self._sources = 0

    def start(self) -> "PythonNode":
        self.process.start()
        self.config = httpx.Client(
            base_url=f"{self.process.config_url}/v1/spaces/default", timeout=30
        )
        self.events = httpx.Client(base_url=self.process.events_url, timeout=30)
        return self

    def stop(self) -> None:
        self.config.close()
        self.events.close()
        self.process.stop()

    @property
    def config_url(self) -> str:
        return self.process.config_url

    def image(self, name: str, requirements: str = "") -> dict[str, Any]:
        """Create an image and wait for its build to end (READY or ERROR)."""
        created = self.config.post("/images", json={"name": name, "requirements": requirements})
        assert created.status_code == 202, created.text
        return self.wait_image(name)

    def wait_image(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def built() -> bool:
            found.update(self.config.get(f"/images/{name}").json())
            return found["status"] != "CREATING"

        wait_until(built, WAIT, f"image {name} to build")
        return found

    def source(self, files: dict[str, str]) -> str:
        self._sources += 1
        return source(self.directory / "sources" / str(self._sources), files)

    def function(
        self,
        name: str,
        files: dict[str, str] | None = None,
        *,
        folder: Path | None = None,
        handler: str = "main.handle",
        image: str = IMAGE,
        status: int = 201,
        **provider: Any,
    ) -> dict[str, Any]:
        """Create a python function from `files` (or a folder); returns the API's answer."""
        if folder is not None:
            code = base64.b64encode(pack_directory(folder)).decode("ascii")
        else:
            code = self.source(files or {})
        body = {
            "functionId": name,
            "type": "python",
            "provider": {"image": image, "handler": handler, "source": code, **provider},
        }
        response = self.config.post("/functions", json=body)
        assert response.status_code == status, response.text
        return dict(response.json())

    def update(
        self, name: str, files: dict[str, str], *, handler: str = "main.handle", **provider: Any
    ) -> dict[str, Any]:
        body = {
            "type": "python",
            "provider": {
                "image": IMAGE,
                "handler": handler,
                "source": self.source(files),
                **provider,
            },
        }
        response = self.config.put(f"/functions/{name}", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def invoke(self, name: str, payload: Any = None, **params: str) -> httpx.Response:
        content = b"" if payload is None else httpx.Request("POST", "/", json=payload).content
        return self.config.post(f"/functions/{name}/invocations", content=content, params=params)

    def invocation(self, invocation_id: str) -> httpx.Response:
        return self.config.get(f"/invocations/{invocation_id}")

    def invocations(self, function_id: str, limit: int = 50) -> list[dict[str, Any]]:
        response = self.config.get(
            "/invocations", params={"functionId": function_id, "limit": str(limit)}
        )
        assert response.status_code == 200, response.text
        return list(response.json()["invocations"])
