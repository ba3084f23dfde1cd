"""Counting and timing config API requests (`eventgateway_config_*` metrics)."""

import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventgate.model import NAME_PATTERN
from eventgate.observability.metrics import Metrics

_RESOURCES = frozenset(
    {"functions", "subscriptions", "cors", "eventtypes", "events", "deadletters"}
)
_WRITES = {"POST": "create", "PUT": "update", "DELETE": "delete"}
_SPACE = re.compile(NAME_PATTERN)


def classify(method: str, path: str) -> tuple[str, str, str]:
    """`(space, resource, operation)` labels for a request, from a small fixed set of values
    (apart from the space name), so that odd URLs cannot blow up the metrics' cardinality."""
    parts = path.split("/", 5)  # "", "v1", "spaces", space, resource, id
    if (
        len(parts) >= 5
        and parts[1:3] == ["v1", "spaces"]
        and parts[4] in _RESOURCES
        and _SPACE.match(parts[3])
    ):
        if method == "GET":
            operation = "get" if len(parts) == 6 and parts[5] else "list"
        else:
            operation = _WRITES.get(method, "other")
        return parts[3], parts[4], operation
    if path in ("/v1/status", "/v1/metrics") and method == "GET":
        return "", path.removeprefix("/v1/"), "get"
    return "", "other", "other"


class ConfigMetrics:
    """ASGI middleware recording `config_requests` and `config_latency` for every request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        space, resource, operation = classify(scope["method"], scope["path"])
        status = 500  # unless a response starts: an exception escaped every handler

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.config_requests.labels(space, resource, operation, str(status)).inc()
            self.metrics.config_latency.labels(resource, operation).observe(elapsed)
