"""The runtime with real fork servers and workers: the Dispatch hello flow, deploy errors, each
error type, timeouts, memory limits, crashes, the function's environment and secrets."""

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop

from eventgate.runtime import Runtime, RuntimeOptions, pack_directory
from tests.test_runtime_support import (
    HELLO,
    build_base_image,
    eventually,
    function_spec,
    process_exists,
    write_function,
)


@pytest.fixture(scope="session")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base_image(tmp_path_factory)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = Runtime(tmp_path / "data", RuntimeOptions(log_limit=200))
    yield runtime
    await runtime.close()


async def deploy(
    runtime: Runtime, python: Path, folder: Path, source: str, **fields: object
) -> None:
    bundle = write_function(folder, {"hello.py": source})
    status = await runtime.deploy(function_spec(python, bundle, **fields))
    assert status.ready, (status.reason, status.traceback)


async def test_hello_returns_the_greeting_and_what_it_printed(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy(runtime, python, tmp_path / "src", HELLO)

    first = await runtime.invoke("default", "hello", None)
    jon = await runtime.invoke("default", "hello", {"name": "Jon", "place": "Winterfell"})

    assert first.to_json()["payload"] == {"myField": "Hello, Noone from Nowhere"}
    assert first.to_json()["context"]["logs"] == {
        "stdout": ["messages to stdout show up in logs"],
        "stderr": [],
    }
    assert first.error is None and first.http_status == 200
    assert first.cold_start and not jon.cold_start
    assert jon.payload == {"myField": "Hello, Jon from Winterfell"}
    assert first.id != jon.id


async def test_the_source_can_come_as_a_base64_archive(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    folder = write_function(tmp_path / "src", {"hello.py": HELLO, "lib/__init__.py": ""})
    source = base64.b64encode(pack_directory(folder)).decode()

    bundle = await runtime.unpack("default", "hello", source)
    status = await runtime.deploy(function_spec(python, bundle.path, version=bundle.version))
    execution = await runtime.invoke("default", "hello", {"name": "Arya"})

    assert status.ready
    assert bundle.path.is_relative_to(tmp_path / "data" / "functions" / "default" / "hello")
    assert execution.payload == {"myField": "Hello, Arya from Nowhere"}


@pytest.mark.parametrize(
    ("source", "handler", "expected"),
    [
        ("import no_such_module\n", "hello.handle", "ModuleNotFoundError"),
        ("print('loading')\nraise RuntimeError('bad config')\n", "hello.handle", "bad config"),
        ("def other(ctx, payload):\n    pass\n", "hello.handle", "no attribute 'handle'"),
        ("handle = 42\n", "hello.handle", "not a function"),
        ("def handle(ctx, payload):\n    return (\n", "hello.handle", "SyntaxError"),
        (HELLO, "missing.handle", "No module named 'missing'"),
    ],
)
async def test_an_import_error_shows_at_deploy_with_its_traceback(
    runtime: Runtime, python: Path, tmp_path: Path, source: str, handler: str, expected: str
) -> None:
    bundle = write_function(tmp_path / "src", {"hello.py": source})

    status = await runtime.deploy(function_spec(python, bundle, handler=handler))

    assert status.status == "ERROR"
    assert expected in status.reason + "\n".join(status.traceback)
    assert not any("shim.py" in line for line in status.traceback)
    with pytest.raises(Exception, match="not deployed"):
        await runtime.invoke("default", "hello", {})


async def test_a_module_error_traceback_points_at_the_function(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    bundle = write_function(tmp_path / "src", {"hello.py": "print('loading')\n1 / 0\n"})

    status = await runtime.deploy(function_spec(python, bundle))

    assert status.reason == "ZeroDivisionError: division by zero"
    assert any("hello.py" in line and "line 2" in line for line in status.traceback)
    assert status.output == ["loading"]


ERRORS = """
import math

def handle(ctx, payload):
    kind = payload["kind"]
    print("about to fail")
    if kind == "value":
        raise ValueError("name must be a string")
    if kind == "type":
        return len(5)
    if kind == "key":
        return {}["missing"]
    if kind == "exit":
        raise SystemExit(3)
    if kind == "set":
        return {1, 2}
    if kind == "nan":
        return math.nan
    return "fine"
"""


@pytest.mark.parametrize(
    ("kind", "error_type", "exception", "status"),
    [
        ("value", "InputError", "ValueError", 400),
        ("type", "InputError", "TypeError", 400),
        ("key", "FunctionError", "KeyError", 500),
        ("exit", "FunctionError", "SystemExit", 500),
        ("set", "FunctionError", "TypeError", 500),
        ("nan", "FunctionError", "ValueError", 500),
    ],
)
async def test_errors_are_typed(
    runtime: Runtime,
    python: Path,
    tmp_path: Path,
    kind: str,
    error_type: str,
    exception: str,
    status: int,
) -> None:
    await deploy(runtime, python, tmp_path / "src", ERRORS)

    failed = await runtime.invoke("default", "hello", {"kind": kind})
    after = await runtime.invoke("default", "hello", {"kind": "none"})

    assert failed.error is not None
    assert (failed.error.type, failed.error.exception, failed.http_status) == (
        error_type,
        exception,
        status,
    )
    assert failed.payload is None
    assert failed.stdout == ["about to fail"]
    assert after.payload == "fine" and not after.cold_start


async def test_a_function_error_carries_the_message_and_the_handlers_traceback(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy(runtime, python, tmp_path / "src", ERRORS)

    failed = await runtime.invoke("default", "hello", {"kind": "key"})

    assert failed.error is not None
    body = failed.to_json()["context"]["error"]
    assert body["type"] == "FunctionError" and body["message"] == "'missing'"
    assert body["traceback"][0] == "Traceback (most recent call last):"
    assert any('hello.py", line 12, in handle' in line for line in body["traceback"])
    assert not any("shim.py" in line for line in body["traceback"])


CRASHES = """
import ctypes
import os
import signal
import time

def handle(ctx, payload):
    how = payload.get("how")
    if how == "exit":
        os._exit(3)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "sleep":
        time.sleep(60)
    if how == "allocate":
        return len(bytearray(payload["mb"] * 1024 * 1024))
    return os.getpid()
"""


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("exit", "exited with code 3"),
        ("kill", "killed by SIGKILL"),
        ("segfault", "killed by SIGSEGV"),
    ],
)
async def test_a_crash_is_a_system_error_and_the_next_call_works(
    runtime: Runtime, python: Path, tmp_path: Path, how: str, message: str
) -> None:
    await deploy(runtime, python, tmp_path / "src", CRASHES)
    before = await runtime.invoke("default", "hello", {})

    crashed = await runtime.invoke("default", "hello", {"how": how})
    after = await runtime.invoke("default", "hello", {})

    assert crashed.error is not None and crashed.error.type == "SystemError"
    assert message in crashed.error.message
    assert crashed.http_status == 502
    assert after.error is None and after.cold_start and after.payload != before.payload


async def test_a_timeout_kills_the_worker_and_the_next_call_works(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy(runtime, python, tmp_path / "src", CRASHES, timeout=0.3)
    slow_pid = (await runtime.invoke("default", "hello", {})).payload

    timed_out = await runtime.invoke("default", "hello", {"how": "sleep"})
    after = await runtime.invoke("default", "hello", {})

    assert timed_out.error is not None
    assert timed_out.error.type == "SystemError" and timed_out.http_status == 504
    assert "timed out after 0.3s" in timed_out.error.message
    assert 300 <= timed_out.duration_ms < 5000
    assert after.error is None and after.payload != slow_pid
    assert isinstance(slow_pid, int)
    await eventually(lambda: not process_exists(slow_pid), "the timed-out worker to be gone")


async def test_memory_is_limited(runtime: Runtime, python: Path, tmp_path: Path) -> None:
    await deploy(runtime, python, tmp_path / "src", CRASHES, memory_mb=64)

    small = await runtime.invoke("default", "hello", {"how": "allocate", "mb": 16})
    large = await runtime.invoke("default", "hello", {"how": "allocate", "mb": 512})
    after = await runtime.invoke("default", "hello", {"how": "allocate", "mb": 16})

    assert small.payload == 16 * 1024 * 1024
    assert large.error is not None and large.error.type == "SystemError"
    assert "out of memory" in large.error.message
    assert after.payload == 16 * 1024 * 1024


LOGS = """
import sys

def handle(ctx, payload):
    print("first", "line")
    print("second line\\nthird line", end="")
    sys.stderr.write("warning: on stderr\\n")
    print("x" * payload.get("spam", 0))
    return None
"""


async def test_stdout_and_stderr_are_captured_line_by_line_and_bounded(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy(runtime, python, tmp_path / "src", LOGS)

    quiet = await runtime.invoke("default", "hello", {})
    loud = await runtime.invoke("default", "hello", {"spam": 1000})

    assert quiet.stdout == ["first line", "second line", "third line"]
    assert quiet.stderr == ["warning: on stderr"]
    assert quiet.payload is None and quiet.error is None
    assert sum(len(line) for line in loud.stdout[:-1]) <= 200  # log_limit of the fixture
    assert loud.stdout[-1].startswith("[") and "characters dropped" in loud.stdout[-1]


ENVIRONMENT = """
import os
import sys

def handle(ctx, payload):
    importable = {}
    for module in ("eventgate", "orjson"):
        try:
            __import__(module)
            importable[module] = True
        except ImportError:
            importable[module] = False
    return {
        "env": dict(os.environ),
        "secrets": ctx["secrets"],
        "http": ctx.get("httpContext"),
        "importable": importable,
        "cwd": os.getcwd(),
        "executable": sys.executable,
    }
"""


async def test_the_function_sees_only_its_own_environment_and_secrets(
    runtime: Runtime, python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTGATE_TEST_PRIVATE", "must not leak")
    await deploy(
        runtime,
        python,
        tmp_path / "src",
        ENVIRONMENT,
        env={"GREETING": "hi"},
        secrets={"apiKey": "s3cr3t", "region": "north"},
    )

    result = await runtime.invoke(
        "default",
        "hello",
        {},
        {"secrets": {"region": "south", "token": "t"}, "httpContext": {"method": "POST"}},
    )

    assert result.error is None, result.error
    body = result.payload
    assert isinstance(body, dict)
    env = body["env"]
    assert env["GREETING"] == "hi"
    assert "EVENTGATE_TEST_PRIVATE" not in env
    assert set(env) <= {"GREETING", "PATH", "HOME", "LANG"}
    assert env["PATH"].startswith(str(python.parent))
    assert body["secrets"] == {"apiKey": "s3cr3t", "region": "south", "token": "t"}
    assert "s3cr3t" not in str(env)
    assert body["http"] == {"method": "POST"}
    assert body["importable"] == {"eventgate": False, "orjson": False}
    assert body["cwd"] == str(tmp_path / "src")
    assert body["executable"] == str(python)


async def test_a_payload_that_is_not_json_is_an_input_error(
    runtime: Runtime, python: Path, tmp_path: Path
) -> None:
    await deploy(runtime, python, tmp_path / "src", HELLO)

    execution = await runtime.invoke("default", "hello", {"when": object()})

    assert execution.error is not None and execution.error.type == "InputError"
    assert execution.http_status == 400


def test_the_runtime_works_on_uvloop(python: Path, tmp_path: Path) -> None:
    async def flow() -> list[object]:
        runtime = Runtime(tmp_path / "data", RuntimeOptions(worker_idle_timeout=0.0))
        try:
            bundle = write_function(tmp_path / "src", {"hello.py": HELLO})
            assert (await runtime.deploy(function_spec(python, bundle))).ready
            first = await runtime.invoke("default", "hello", {"name": "Bran"})
            await eventually(lambda: runtime.stats("default", "hello").workers == 0, "reaping")
            second = await runtime.invoke("default", "hello", {})
            return [first.payload, second.payload, second.cold_start]
        finally:
            await runtime.close()

    assert uvloop.run(flow()) == [
        {"myField": "Hello, Bran from Nowhere"},
        {"myField": "Hello, Noone from Nowhere"},
        True,
    ]


async def test_an_unknown_function_is_not_deployed(runtime: Runtime) -> None:
    with pytest.raises(Exception, match="not deployed") as raised:
        await runtime.invoke("default", "nobody", {})

    assert getattr(raised.value, "status", None) == 404
