"""Python functions bound like any function: to a sync HTTP subscription on the events port, to
an async subscription (CloudEvents delivered by the dispatcher) and as an event type's
authorizer, on the shared node."""

from typing import Any

import orjson

from tests.processes import wait_until
from tests.python_helpers import WAIT, PythonNode

STRUCTURED = {"content-type": "application/cloudevents+json"}

ECHO = """
def handle(ctx, payload):
    if payload == "fail":
        raise ValueError("no failing here")
    if isinstance(payload, dict) and "statusCode" in payload:
        return payload
    return {"payload": payload, "http": ctx["httpContext"]}
"""

ON_EVENT = """
def handle(ctx, payload):
    print("got", ctx["event"]["id"])
    if payload.get("bad"):
        raise ValueError("bad event")
    return {"data": payload, "event": ctx["event"]}
"""

AUTHORIZER = """
def handle(ctx, payload):
    event = payload["event"]
    if event.get("data", {}).get("user") == "mallory":
        return {"error": {"message": "not you"}}
    return {"authorization": {"principalId": event["data"]["user"]}}
"""


def subscribe(node: PythonNode, **fields: Any) -> None:
    response = node.config.post("/subscriptions", json=fields)
    assert response.status_code == 201, response.text


def test_a_sync_http_subscription_calls_the_python_function(python_node: PythonNode) -> None:
    python_node.function("http-echo", {"main.py": ECHO})
    subscribe(python_node, type="sync", eventType="http.request", functionId="http-echo",
              method="POST", path="/users/:id")  # fmt: skip

    # curl -d sends a form content type: a body that parses as JSON is still given parsed.
    plain = python_node.events.post(
        "/users/7?verbose=1",
        content=b'{"name": "Jon"}',
        headers={"content-type": "application/x-www-form-urlencoded", "x-trace": "abc"},
    )
    described = python_node.events.post(
        "/users/8", json={"statusCode": 201, "headers": {"X-Made": "yes"}, "body": "made"}
    )
    failed = python_node.events.post("/users/9", json="fail")

    assert plain.status_code == 200, plain.text
    assert plain.headers["content-type"] == "application/json"
    body = plain.json()
    assert body["payload"] == {"name": "Jon"}
    http = body["http"]
    assert http["method"] == "POST" and http["path"] == "/users/7"
    assert http["params"] == {"id": "7"} and http["query"] == {"verbose": ["1"]}
    assert http["headers"]["X-Trace"] == "abc"
    assert described.status_code == 201 and described.text == "made"
    assert described.headers["x-made"] == "yes"
    assert failed.status_code == 400
    assert "no failing here" in failed.json()["errors"][0]["message"]
    record = python_node.invocation(failed.headers["x-eventgate-invocation-id"]).json()
    assert record["trigger"] == "http" and record["context"]["error"]["type"] == "InputError"


def test_an_async_subscription_delivers_events_to_the_python_function(
    python_node: PythonNode,
) -> None:
    python_node.function("on-user", {"main.py": ON_EVENT})
    subscribe(python_node, type="async", eventType="user.signedup", functionId="on-user")

    def emit(event_id: str, data: dict[str, Any]) -> None:
        event = {"specversion": "1.0", "id": event_id, "source": "/tests", "type":
                 "user.signedup", "tenant": "north", "data": data}  # fmt: skip
        response = python_node.events.post("/", content=orjson.dumps(event), headers=STRUCTURED)
        assert response.status_code == 202, response.text

    emit("signup-1", {"name": "Arya"})
    emit("signup-2", {"bad": True})

    def outcome(event_id: str) -> str | None:
        response = python_node.config.get(f"/events/{event_id}")
        return response.json()["events"][0]["outcome"] if response.status_code == 200 else None

    wait_until(lambda: outcome("signup-1") == "delivered", WAIT, "the event to be delivered")
    wait_until(lambda: outcome("signup-2") == "dead-lettered", WAIT, "the bad one to fail")
    records = {record["eventId"]: record for record in python_node.invocations("on-user")}
    delivered = records["signup-1"]
    assert delivered["trigger"] == "event" and delivered["status"] == "READY"
    assert delivered["input"] == {"name": "Arya"}
    assert delivered["payload"]["data"] == {"name": "Arya"}
    attributes = delivered["payload"]["event"]
    assert attributes["id"] == "signup-1" and attributes["type"] == "user.signedup"
    assert attributes["tenant"] == "north" and "data" not in attributes
    assert delivered["context"]["logs"]["stdout"] == ["got signup-1"]
    assert records["signup-2"]["context"]["error"]["type"] == "InputError"
    life = python_node.config.get("/events/signup-1").json()["events"][0]
    assert life["subscriptions"][0]["attempts"][0]["target"] == "python:default/on-user"


def test_a_python_function_can_authorize_events(python_node: PythonNode) -> None:
    python_node.function("authz", {"main.py": AUTHORIZER})
    python_node.function("on-login", {"main.py": ON_EVENT})
    created = python_node.config.post(
        "/eventtypes", json={"name": "user.login", "authorizerId": "authz"}
    )
    assert created.status_code == 201, created.text
    subscribe(python_node, type="async", eventType="user.login", functionId="on-login")

    def emit(user: str) -> int:
        event = {"specversion": "1.0", "id": f"login-{user}", "source": "/tests",
                 "type": "user.login", "data": {"user": user}}  # fmt: skip
        response = python_node.events.post("/", content=orjson.dumps(event), headers=STRUCTURED)
        return response.status_code

    assert emit("alice") == 202
    assert emit("mallory") == 403
    wait_until(
        lambda: any(r["eventId"] == "login-alice" for r in python_node.invocations("on-login")),
        WAIT,
        "the allowed event to be delivered",
    )
    [record] = [r for r in python_node.invocations("on-login") if r["eventId"] == "login-alice"]
    assert record["payload"]["event"]["authprincipal"] == "alice"
