"""The seed tutorial, request by request, with curl as it is written there.

Sections "Routing Events to Google Cloud Functions" and "Routing Events to Kubernetes Services"
of the Event Gateway on Kubernetes guide, against one node on 127.0.0.1 with the two echo
functions running locally.
"""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.processes import EchoProcess, EventgateProcess


def curl(*args: str, cwd: Path | None = None) -> tuple[int, dict[str, str], bytes, list[str]]:
    """Run curl with `-i` and split its output into status, headers (by lower-case name), body
    and the header names as written."""
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "-i", *args],
        capture_output=True,
        check=True,
        cwd=cwd,
        timeout=30,
    )
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers, names = {}, []
    for line in header_lines:
        name, _, value = line.partition(":")
        names.append(name.strip())
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body, names


def test_seed_tutorial_routes_to_the_function_then_to_the_container(
    eventgate: EventgateProcess,
    echo_function: Callable[[str], EchoProcess],
    tmp_path: Path,
) -> None:
    cloud_function = echo_function("function")
    container = echo_function("container")
    gateway_ip = "127.0.0.1"
    config = f"http://{gateway_ip}:{eventgate.config_port}"
    events = f"http://{gateway_ip}:{eventgate.events_port}/"

    # Register the echo cloud function from register-function.json.
    (tmp_path / "register-function.json").write_text(
        json.dumps({"functionId": "echo", "type": "http", "provider": {"url": cloud_function.url}})
    )
    status, _, body, _ = curl(
        "--request", "POST",
        "--url", f"{config}/v1/spaces/default/functions",
        "--header", "content-type: application/json",
        "--data", "@register-function.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 201, body
    assert json.loads(body)["functionId"] == "echo"

    subscription = '{"functionId": "echo", "event": "http", "method": "POST", "path": "/"}'
    status, _, body, _ = curl(
        "--request", "POST",
        "--url", f"{config}/v1/spaces/default/subscriptions",
        "--header", "content-type: application/json",
        "--data", subscription,
    )  # fmt: skip
    assert status == 201, body
    assert json.loads(body)["subscriptionId"] == "http,POST,%2F"

    status, headers, body, names = curl(
        "--request", "POST", "--url", events, "--data", '{"message": "Hello world!"}'
    )
    assert status == 200, body
    assert headers["compute-type"] == "function"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == "27"
    assert "date" in headers
    assert {"Date", "Content-Length", "Content-Type"} <= set(names), names  # as the seed shows
    assert body == b'{"message": "Hello world!"}'

    # Routing events to the Kubernetes service instead.
    status, _, body, _ = curl(
        "--request", "POST",
        "--url", f"{config}/v1/spaces/default/functions",
        "--header", "content-type: application/json",
        "--data", json.dumps(
            {"functionId": "echo-service", "type": "http", "provider": {"url": container.url}}
        ),
    )  # fmt: skip
    assert status == 201, body

    status, _, body, _ = curl(
        "-X", "DELETE", f"{config}/v1/spaces/default/subscriptions/http,POST,%2F"
    )
    assert status == 204, body

    status, _, body, _ = curl(
        "--request", "POST",
        "--url", f"{config}/v1/spaces/default/subscriptions",
        "--header", "content-type: application/json",
        "--data", subscription.replace('"echo"', '"echo-service"'),
    )  # fmt: skip
    assert status == 201, body

    status, headers, body, _ = curl(
        "--request", "POST", "--url", events, "--data", '{"message": "Hello World!"}'
    )
    assert status == 200, body
    assert headers["compute-type"] == "container"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body == b'{"message": "Hello World!"}'

    assert "Handling HTTP event" in container.stop()
