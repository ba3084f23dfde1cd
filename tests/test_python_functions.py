"""Python functions through the config API of a real node: the Dispatch flow (image, function
from a folder, executions with logs), requirements, statuses, every error type, schemas,
secrets, limits and invocation records."""

import asyncio
import base64
import os
from pathlib import Path

import httpx
import pytest

from tests.processes import wait_until
from tests.python_helpers import EXAMPLE, IMAGE, WAIT, PythonNode
from tests.test_runtime_support import Gate

HELLO_LINE = "messages to stdout show up in logs"

ERRORS = """
import os
import time

def handle(ctx, payload):
    kind = payload["kind"]
    print("about to", kind)
    if kind == "value":
        raise ValueError("name must be a string")
    if kind == "type":
        raise TypeError("payload must be an object")
    if kind == "runtime":
        raise RuntimeError("the database is down")
    if kind == "set":
        return {1, 2}
    if kind == "crash":
        os._exit(3)
    if kind == "sleep":
        time.sleep(30)
    if kind == "allocate":
        return len(bytearray(payload["mb"] * 1024 * 1024))
    return "fine"
"""


def test_the_dispatch_flow_through_the_api(python_node: PythonNode) -> None:
    created = python_node.function("hello", folder=EXAMPLE, handler="hello.handle")
    assert created["status"] == "READY", created
    assert created["provider"]["handler"] == "hello.handle"

    default = python_node.invoke("hello")
    named = python_node.invoke("hello", {"name": "Jon", "place": "Winterfell"})

    assert default.status_code == 200, default.text
    body = default.json()
    assert body["payload"] == {"myField": "Hello, Noone from Nowhere"}
    assert body["context"]["logs"] == {"stdout": [HELLO_LINE], "stderr": []}
    assert body["context"]["error"] is None
    assert body["status"] == "READY" and body["functionId"] == "hello"
    assert body["context"]["durationMs"] > 0
    assert isinstance(body["context"]["coldStart"], bool)
    assert named.status_code == 200
    assert named.json()["payload"] == {"myField": "Hello, Jon from Winterfell"}
    assert named.json()["context"]["coldStart"] is False  # the first call's worker served it

    record = python_node.invocation(named.json()["invocationId"])
    assert record.status_code == 200
    assert record.json()["input"] == {"name": "Jon", "place": "Winterfell"}
    assert record.json()["payload"] == {"myField": "Hello, Jon from Winterfell"}
    assert record.json()["context"]["logs"]["stdout"] == [HELLO_LINE]
    assert record.json()["trigger"] == "api"
    listed = python_node.invocations("hello")
    assert [each["invocationId"] for each in listed[:2]] == [
        named.json()["invocationId"],
        body["invocationId"],
    ]


def test_a_requirement_installed_in_the_image_is_imported(python_node: PythonNode) -> None:
    image = python_node.config.get(f"/images/{IMAGE}").json()
    assert image["status"] == "READY"
    assert "tinygreet" in image["log"]
    python_node.function(
        "wheel-user",
        {"main.py": "import tinygreet\ndef handle(ctx, p):\n    return tinygreet.greet(p)\n"},
    )

    answer = python_node.invoke("wheel-user", "Sansa")

    assert answer.status_code == 200, answer.text
    assert answer.json()["payload"] == "Hello, Sansa from a wheel"


def test_images_share_builds_report_failures_and_are_protected_while_used(
    python_node: PythonNode, tmp_path: Path
) -> None:
    requirements = python_node.config.get(f"/images/{IMAGE}").json()["requirements"]
    same = python_node.image("same-as-python3", requirements)
    missing = tmp_path / "nowhere" / "absent-1.0-py3-none-any.whl"
    broken = python_node.image("broken", f"{missing}\n")
    used = python_node.function("uses-broken", {"main.py": "def handle(c, p):\n    return 1\n"},
                                image="broken")  # fmt: skip
    listed = python_node.config.get("/images").json()["images"]

    assert same["status"] == "READY"
    assert same["digest"] == python_node.config.get("/images/python3").json()["digest"]
    assert broken["status"] == "ERROR"
    assert "absent-1.0-py3-none-any.whl" in broken["reason"]  # the installer's own words
    assert used["status"] == "ERROR" and 'image "broken" failed to build' in used["reason"]
    assert {"same-as-python3", "broken", IMAGE} <= {each["name"] for each in listed}
    refused = python_node.config.delete("/images/broken")
    assert refused.status_code == 400
    assert "uses-broken" in refused.json()["errors"][0]["message"]
    assert python_node.config.delete("/functions/uses-broken").status_code == 204
    assert python_node.config.delete("/images/broken").status_code == 204
    assert python_node.config.get("/images/broken").status_code == 404
    assert python_node.config.delete("/images/same-as-python3").status_code == 204
    assert python_node.config.get(f"/images/{IMAGE}").json()["status"] == "READY"


@pytest.mark.parametrize(
    ("files", "handler", "reason"),
    [
        ({"main.py": "import not_installed_anywhere\n"}, "main.handle", "ModuleNotFoundError"),
        ({"main.py": "def other(c, p):\n    return 1\n"}, "main.handle", "handle"),
        ({"main.py": "x = 1 / 0\n"}, "main.handle", "ZeroDivisionError"),
    ],
)
def test_a_handler_that_does_not_load_shows_error_with_its_traceback_at_once(
    python_node: PythonNode, files: dict[str, str], handler: str, reason: str
) -> None:
    name = f"broken-{reason.lower()}"
    created = python_node.function(name, files, handler=handler)
    shown = python_node.config.get(f"/functions/{name}").json()
    called = python_node.invoke(name)

    assert created["status"] == "ERROR" and reason in created["reason"]
    assert shown["status"] == "ERROR" and shown["reason"] == created["reason"]
    if reason != "handle":
        assert shown["traceback"][0] == "Traceback (most recent call last):"
        assert any("main.py" in line for line in shown["traceback"])
    assert called.status_code == 500
    assert called.json()["context"]["error"]["type"] == "FunctionError"


@pytest.mark.parametrize(
    ("payload", "status", "error_type", "says"),
    [
        ({"kind": "value"}, 400, "InputError", "name must be a string"),
        ({"kind": "type"}, 400, "InputError", "payload must be an object"),
        ({"kind": "runtime"}, 500, "FunctionError", "the database is down"),
        ({"kind": "set"}, 500, "FunctionError", "JSON"),
        ({"kind": "crash"}, 502, "SystemError", "exited with code 3"),
        ({"kind": "sleep"}, 504, "SystemError", "timed out after 0.5s"),
        ({"kind": "allocate", "mb": 1024}, 502, "SystemError", "out of memory"),
    ],
)
def test_each_error_type_has_its_status_and_the_next_call_works(
    python_node: PythonNode, payload: dict[str, object], status: int, error_type: str, says: str
) -> None:
    if python_node.config.get("/functions/errors").status_code == 404:
        python_node.function("errors", {"main.py": ERRORS}, timeout="PT0.5S", memoryMB=64)

    failed = python_node.invoke("errors", payload)
    after = python_node.invoke("errors", {"kind": "allocate", "mb": 8})

    assert failed.status_code == status, failed.text
    error = failed.json()["context"]["error"]
    assert error["type"] == error_type and says in error["message"]
    assert failed.json()["payload"] is None
    if error_type != "SystemError":
        assert failed.json()["context"]["logs"]["stdout"] == [f"about to {payload['kind']}"]
    if payload["kind"] in ("value", "type", "runtime"):
        assert error["traceback"][0] == "Traceback (most recent call last):"
    assert after.status_code == 200 and after.json()["payload"] == 8 * 1024 * 1024
    record = python_node.invocation(failed.json()["invocationId"]).json()
    assert record["status"] == "ERROR" and record["context"]["error"]["type"] == error_type


def test_bad_requests_are_refused_with_what_to_do(python_node: PythonNode) -> None:
    def create(name: str, **provider: object) -> httpx.Response:
        body = {"image": IMAGE, "handler": "main.handle", "source": "", **provider}
        return python_node.config.post(
            "/functions", json={"functionId": name, "type": "python", "provider": body}
        )

    code = python_node.source({"main.py": "def handle(c, p):\n    return 1\n"})
    big = base64.b64encode(os.urandom(1024 * 1024 + 1)).decode()  # over the 1 MiB default

    too_big = create("too-big", source=big)
    not_tar = create("not-tar", source=base64.b64encode(b"not an archive").decode())
    no_image = create("no-image", source=code, image="nope")
    no_secret = create("no-secret", source=code, secrets=["nope"])
    bad_handler = create("bad-handler", source=code, handler="main")
    bad_timeout = create("bad-timeout", source=code, timeout="30s")
    http_invoked = python_node.config.post(
        "/functions", json={"functionId": "an-http-one", "type": "http",
                            "provider": {"url": "http://127.0.0.1:9"}},
    )  # fmt: skip

    assert too_big.status_code == 413, too_big.text
    assert not_tar.status_code == 400 and "archive" in not_tar.json()["errors"][0]["message"]
    assert no_image.status_code == 400
    assert "eventgate image create nope" in no_image.json()["errors"][0]["message"]
    assert no_secret.status_code == 400
    assert "eventgate secret create nope" in no_secret.json()["errors"][0]["message"]
    assert bad_handler.status_code == 400
    assert "provider.handler" in bad_handler.json()["errors"][0]["message"]
    assert bad_timeout.status_code == 400
    assert "provider.timeout" in bad_timeout.json()["errors"][0]["message"]
    assert http_invoked.status_code == 201
    assert python_node.invoke("an-http-one").status_code == 400
    assert python_node.invoke("no-such-function").status_code == 404
    not_json = python_node.config.post("/functions/an-http-one/invocations", content=b"{")
    assert not_json.status_code == 400


SCHEMAS = {
    "in": {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    },
    "out": {
        "type": "object",
        "properties": {"greeting": {"type": "string"}},
        "required": ["greeting"],
    },
}


def test_schemas_are_checked_before_and_after_the_call(python_node: PythonNode) -> None:
    python_node.function(
        "checked",
        {
            "main.py": """
            def handle(ctx, payload):
                print("ran")
                if payload["name"] == "wrong":
                    return {"greeting": 42}
                return {"greeting": "Hi " + payload["name"]}
            """
        },
        schema=SCHEMAS,
    )
    bad_schema = python_node.config.post(
        "/functions",
        json={"functionId": "bad-schema", "type": "python", "provider": {
            "image": IMAGE, "handler": "main.handle", "source": "x",
            "schema": {"in": {"type": "nonsense"}}}},
    )  # fmt: skip

    good = python_node.invoke("checked", {"name": "Bran"})
    bad_input = python_node.invoke("checked", {"name": 7})
    bad_output = python_node.invoke("checked", {"name": "wrong"})

    assert good.status_code == 200 and good.json()["payload"] == {"greeting": "Hi Bran"}
    assert bad_input.status_code == 400
    error = bad_input.json()["context"]["error"]
    assert error["type"] == "InputError" and "schema" in error["message"]
    assert bad_input.json()["context"]["logs"]["stdout"] == []  # refused before the call
    assert bad_output.status_code == 500
    error = bad_output.json()["context"]["error"]
    assert error["type"] == "FunctionError" and "output schema" in error["message"]
    assert bad_output.json()["context"]["logs"]["stdout"] == ["ran"]
    assert bad_schema.status_code == 400
    assert "provider.schema.in" in bad_schema.json()["errors"][0]["message"]


def test_secrets_reach_the_function_and_are_never_returned(python_node: PythonNode) -> None:
    created = python_node.config.post(
        "/secrets", json={"name": "db", "secrets": {"password": "OpenSesame", "user": "arya"}}
    )
    python_node.function(
        "secretive",
        {"main.py": "def handle(ctx, p):\n    return ctx['secrets']\n"},
        secrets=["db"],
    )

    first = python_node.invoke("secretive")
    updated = python_node.config.put(
        "/secrets/db", json={"secrets": {"password": "Changed", "user": "arya"}}
    )
    second = python_node.invoke("secretive")
    shown = [
        created,
        updated,
        python_node.config.get("/secrets/db"),
        python_node.config.get("/secrets"),
        python_node.config.get("/functions/secretive"),
    ]
    in_use = python_node.config.delete("/secrets/db")

    assert created.status_code == 201
    assert created.json() == {"space": "default", "name": "db", "keys": ["password", "user"],
                              "metadata": {}}  # fmt: skip
    assert first.json()["payload"] == {"password": "OpenSesame", "user": "arya"}
    assert second.json()["payload"] == {"password": "Changed", "user": "arya"}
    for response in shown:
        assert response.status_code in (200, 201)
        assert "OpenSesame" not in response.text and "Changed" not in response.text
    assert in_use.status_code == 400 and "secretive" in in_use.json()["errors"][0]["message"]
    assert python_node.config.delete("/functions/secretive").status_code == 204
    assert python_node.config.delete("/secrets/db").status_code == 204


def test_a_call_can_run_in_the_background(python_node: PythonNode) -> None:
    python_node.function("background", {"main.py": "def handle(c, p):\n    return p * 2\n"})

    started = python_node.invoke("background", 21, blocking="false")

    assert started.status_code == 202, started.text
    invocation_id = started.json()["invocationId"]
    assert started.headers["location"] == f"/v1/spaces/default/invocations/{invocation_id}"
    record: dict[str, object] = {}

    def finished() -> bool:
        record.update(python_node.invocation(invocation_id).json())
        return record["status"] != "RUNNING"

    wait_until(finished, WAIT, "the background call to finish")
    assert record["status"] == "READY" and record["payload"] == 42
    assert python_node.invoke("nothing-here", blocking="false").status_code == 404


async def test_an_update_replaces_workers_without_dropping_calls_in_flight(
    python_node: PythonNode,
) -> None:
    gated = """
    import socket

    VERSION = {version!r}

    def handle(ctx, payload):
        if payload and payload.get("gate"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect("\\0" + payload["gate"])
                sock.recv(1)
        return VERSION
    """
    python_node.function("versioned", {"main.py": gated.format(version="v1")})
    async with (
        Gate() as gate,
        httpx.AsyncClient(base_url=python_node.config.base_url, timeout=30) as client,
    ):
        in_flight = client.post("/functions/versioned/invocations", json={"gate": gate.name})
        call = asyncio.create_task(in_flight)
        await gate.wait_for(1)
        body = {
            "type": "python",
            "provider": {
                "image": IMAGE,
                "handler": "main.handle",
                "source": python_node.source({"main.py": gated.format(version="v2")}),
            },
        }
        updated = await client.put("/functions/versioned", json=body)
        after = await client.post("/functions/versioned/invocations")
        gate.release()
        finished = await call

    assert updated.status_code == 200 and updated.json()["status"] == "READY"
    assert after.json()["payload"] == "v2"
    assert finished.status_code == 200 and finished.json()["payload"] == "v1"


def test_large_inputs_and_results_are_left_out_of_stored_records(python_node: PythonNode) -> None:
    python_node.function("big", {"main.py": "def handle(c, p):\n    return p + p\n"})
    text = "x" * 50_000

    answer = python_node.invoke("big", text)
    invocation_id = answer.json()["invocationId"]

    assert answer.status_code == 200 and answer.json()["payload"] == text + text

    def stored() -> bool:  # once written, the record is read from the file
        return "payloadTruncated" in python_node.invocation(invocation_id).json()

    wait_until(stored, WAIT, "the record to be stored")
    record = python_node.invocation(invocation_id).json()
    assert record["input"] == text  # under the 64 KiB bound
    assert record["payload"] is None and record["payloadTruncated"] == 100_002
