"""A node's life: configuration that survives kill -9, live routing changes, and a clean drain."""

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.processes import EchoProcess, EventgateProcess, wait_until


def register_echo(config_url: str, function_id: str, url: str, path: str = "/") -> None:
    functions = f"{config_url}/v1/spaces/default/functions"
    response = httpx.post(
        functions, json={"functionId": function_id, "type": "http", "provider": {"url": url}}
    )
    assert response.status_code == 201, response.text
    response = httpx.post(
        f"{config_url}/v1/spaces/default/subscriptions",
        json={"type": "sync", "eventType": "http.request", "functionId": function_id,
              "method": "POST", "path": path},
    )  # fmt: skip
    assert response.status_code == 201, response.text


def test_configuration_survives_kill_9_and_restart(
    tmp_path: Path, echo_function: Callable[[str], EchoProcess]
) -> None:
    echo = echo_function("function")
    node = EventgateProcess(tmp_path / "data").start()
    try:
        register_echo(node.config_url, "echo", echo.url)
        node.kill()
        node.start()
        response = httpx.post(
            node.events_url, content=b"still here", headers={"content-type": "text/plain"}
        )
        assert response.status_code == 200
        assert response.headers["compute-type"] == "function"
        assert response.text == "still here"
        functions = httpx.get(f"{node.config_url}/v1/spaces/default/functions").json()
        assert [f["functionId"] for f in functions["functions"]] == ["echo"]
    finally:
        node.stop()


def test_routing_changes_take_effect_without_restart(
    eventgate: EventgateProcess, echo_function: Callable[[str], EchoProcess]
) -> None:
    echo = echo_function("container")
    assert httpx.post(f"{eventgate.events_url}/live").status_code == 404
    register_echo(eventgate.config_url, "live", echo.url, path="/live")
    wait_until(
        lambda: httpx.post(f"{eventgate.events_url}/live").status_code == 200,
        timeout=1.0,
        what="the new subscription to route",
    )
    subscriptions = httpx.get(f"{eventgate.config_url}/v1/spaces/default/subscriptions").json()
    subscription_id = subscriptions["subscriptions"][0]["subscriptionId"]
    deleted = httpx.delete(
        f"{eventgate.config_url}/v1/spaces/default/subscriptions/{subscription_id}"
    )
    assert deleted.status_code == 204
    wait_until(
        lambda: httpx.post(f"{eventgate.events_url}/live").status_code == 404,
        timeout=1.0,
        what="the deleted subscription to stop routing",
    )


def test_sigterm_finishes_in_flight_requests_then_exits_zero(tmp_path: Path) -> None:
    slow_backend = SlowBackend()
    node = EventgateProcess(tmp_path / "data").start()
    try:
        register_echo(node.config_url, "slow", slow_backend.url)
        results: list[httpx.Response] = []
        caller = threading.Thread(
            target=lambda: results.append(httpx.post(node.events_url, content=b"x", timeout=10))
        )
        caller.start()
        assert slow_backend.request_arrived.wait(10)
        node.signal(signal.SIGTERM)
        wait_until(
            lambda: httpx.get(f"{node.config_url}/v1/status").json()["status"] == "draining",
            timeout=5,
            what="the node to report draining",
        )
        late = httpx.post(node.events_url, content=b"late")
        assert late.status_code == 503
        assert late.json() == {"errors": [{"message": "Service Unavailable"}]}
        slow_backend.release.set()
        caller.join(10)
        assert results and results[0].status_code == 200
        assert node.wait(20) == 0
    finally:
        slow_backend.release.set()
        node.kill()
        slow_backend.close()


class SlowBackend:
    """An eventgateway-mode function that holds each call until `release` is set."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.request_arrived = threading.Event()
        self.release = threading.Event()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                backend.request_arrived.set()
                backend.release.wait(10)
                body = b'{"statusCode": 200, "body": "done"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
