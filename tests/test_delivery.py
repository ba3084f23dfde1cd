"""Async delivery on one node: CloudEvents in (every mode), durable accept, delivery per call mode,
filters, schemas, authorizers, dedupe, retries, dead letters, redrive, the life of an event,
system events and metrics. Real sockets throughout: the node and its functions share the loop."""

import asyncio
import base64
from pathlib import Path

import orjson
import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from cloudevents.v1 import conversion as sdk1_conversion
from cloudevents.v1 import http as sdk1_http

from tests.delivery_helpers import STRUCTURED, HangsOnce, LocalNode, ce, wait_for
from tests.gateway_backend import Answer, Backend, Received, Reply


async def test_accepted_event_reaches_each_mode_and_the_202_says_how_many(
    local_node: LocalNode,
) -> None:
    functions = {}
    for mode in ("eventgateway", "cloudevents", "proxy"):
        functions[mode] = await local_node.function(function_id=mode, mode=mode)
        await local_node.subscribe(function_id=mode)
    response = await local_node.emit(ce("e1", subject="a b ✓", tenant="acme", data={"n": 1}))
    assert response.status_code == 202
    assert response.json() == {
        "eventId": "e1",
        "source": "/tests",
        "subscriptions": 3,
        "duplicate": False,
    }
    await wait_for(lambda: all(f.received for f in functions.values()), "three deliveries")

    envelope = functions["eventgateway"].received[0]
    assert envelope.header("content-type") == "application/cloudevents+json"
    assert envelope.json() == {
        "eventType": "user.created",
        "cloudEventsVersion": "0.1",
        "source": "/tests",
        "eventID": "e1",
        "extensions": {"tenant": "acme"},
        "data": {"n": 1},
    }
    for mode in ("cloudevents", "proxy"):
        call = functions[mode].received[0]
        received = sdk_http.from_http_event(
            sdk_http.HTTPMessage(dict(call.headers), call.body)
        )  # the official SDK reads what the function got
        assert (received.get_id(), received.get_type(), received.get_subject()) == (
            "e1",
            "user.created",
            "a b ✓",
        )
        assert received.get_extension("tenant") == "acme"
        assert received.get_data() == {"n": 1}
    life = await local_node.life("e1")
    await wait_for(lambda: local_node.outcome("e1"), "the life to settle")
    assert life["received"]["mode"] == "structured"
    assert {s["functionId"] for s in life["subscriptions"]} == set(functions)


async def test_sdk_binary_and_structured_events_and_batches(local_node: LocalNode) -> None:
    function = await local_node.function(mode="cloudevents")
    await local_node.subscribe()
    sdk1 = sdk1_http.CloudEvent({"type": "user.created", "source": "/sdk1", "id": "s1"}, {"v": 1})
    headers, body = sdk1_conversion.to_binary(sdk1)
    assert (await local_node.events.post("/", content=body, headers=headers)).status_code == 202
    sdk2 = SdkEvent({"type": "user.created", "source": "/sdk2", "id": "s2"}, {"v": 2})
    message = sdk_http.to_structured_event(sdk2)
    response = await local_node.events.post("/", content=message.body, headers=message.headers)
    assert response.status_code == 202
    batch = [ce("b1", data={"v": 3}), ce("b2", data={"v": 4}), ce("b3", type="other")]
    response = await local_node.events.post(
        "/",
        content=orjson.dumps(batch),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202
    assert [(e["eventId"], e["subscriptions"]) for e in response.json()["events"]] == [
        ("b1", 1),
        ("b2", 1),
        ("b3", 0),
    ]
    await wait_for(lambda: len(function.received) == 4, "four deliveries")
    got = {
        sdk_http.from_http_event(sdk_http.HTTPMessage(dict(r.headers), r.body)).get_id(): r
        for r in function.received
    }
    assert set(got) == {"s1", "s2", "b1", "b2"}
    assert (await local_node.life("b3"))["outcome"] == "no subscribers"


@pytest.mark.parametrize(
    ("event", "content_type", "status", "message"),
    [
        (ce("x", specversion="0.3"), STRUCTURED, 400, "'specversion'"),
        ({"specversion": "1.0", "id": "x", "type": "t"}, STRUCTURED, 400, "'source'"),
        (ce("x", time="yesterday"), STRUCTURED, 400, "'time'"),
        (ce("x", type="eventgateway.event.received"), STRUCTURED, 400, "reserved"),
        ([ce("ok"), ce("")], "application/cloudevents-batch+json", 400, "event 1 in the batch"),
    ],
)
async def test_invalid_events_are_400_and_nothing_is_accepted(
    local_node: LocalNode, event: object, content_type: str, status: int, message: str
) -> None:
    await local_node.function()
    await local_node.subscribe()
    response = await local_node.events.post(
        "/", content=orjson.dumps(event), headers={"content-type": content_type}
    )
    assert response.status_code == status
    assert message in response.json()["errors"][0]["message"]
    assert local_node.metric("eventgate_events_accepted_total", space="default") == 0
    assert (await local_node.config.get("/events/ok")).status_code == 404


async def test_a_plain_http_request_stays_an_http_event(local_node: LocalNode) -> None:
    assert (await local_node.events.post("/", json=ce("x"))).status_code == 404  # no route
    function = await local_node.function()
    await local_node.subscribe(event_type="http.request", path="/hook")
    response = await local_node.events.post("/hook?a=1", json={"hello": "world"})
    assert response.status_code == 202
    event_id = response.json()["eventId"]
    await wait_for(lambda: function.received, "the HTTP event")
    envelope = function.received[0].json()
    assert envelope["eventType"] == "http.request"
    assert envelope["extensions"]["eventgateway"]["transformed"] == "true"
    assert envelope["data"]["body"] == {"hello": "world"}
    assert envelope["data"]["query"] == {"a": ["1"]}
    assert (await local_node.life(event_id))["received"]["mode"] == "http"


async def test_filters_match_attributes_and_extensions_exactly(local_node: LocalNode) -> None:
    acme = await local_node.function(function_id="acme")
    await local_node.subscribe(function_id="acme", filter={"tenant": "acme", "subject": ""})
    everyone = await local_node.function(function_id="everyone")
    await local_node.subscribe(function_id="everyone")
    cases = [
        ce("f1", tenant="acme", subject="s"),
        ce("f2", tenant="Acme", subject="s"),
        ce("f3", tenant="acme"),
        ce("f4", subject="s"),
    ]
    counts = [(await local_node.emit(event)).json()["subscriptions"] for event in cases]
    assert counts == [2, 1, 1, 1]
    await wait_for(lambda: len(everyone.received) == 4, "every event to `everyone`")
    await wait_for(lambda: len(acme.received) == 1, "one event to `acme`")
    assert acme.received[0].json()["eventID"] == "f1"


async def test_event_type_schema_refuses_bad_data(local_node: LocalNode) -> None:
    function = await local_node.function()
    await local_node.subscribe()
    schema = {
        "type": "object",
        "required": ["email"],
        "properties": {"email": {"type": "string", "pattern": "@"}},
    }
    bad = await local_node.config.post("/eventtypes", json={"name": "x", "schema": {"type": 7}})
    assert bad.status_code == 400 and "schema" in bad.json()["errors"][0]["message"]
    created = await local_node.config.post(
        "/eventtypes", json={"name": "user.created", "schema": schema}
    )
    assert created.status_code == 201, created.text
    refused = await local_node.emit(ce("bad", data={"email": "nope"}))
    assert refused.status_code == 400
    assert "does not match" in refused.json()["errors"][0]["message"]
    assert "data['email']" in refused.json()["errors"][0]["message"]
    binary = await local_node.events.post(
        "/",
        content=b"\x00",
        headers={
            "ce-specversion": "1.0",
            "ce-id": "bin",
            "ce-source": "/t",
            "ce-type": "user.created",
            "content-type": "application/octet-stream",
        },
    )
    assert binary.status_code == 400
    assert (await local_node.emit(ce("good", data={"email": "a@b"}))).status_code == 202
    await wait_for(lambda: function.received, "the valid event")
    assert [r.json()["eventID"] for r in function.received] == ["good"]
    life = await local_node.life("bad")
    assert life["outcome"] == "rejected" and life["rejected"]["status"] == 400


async def test_authorizers_allow_deny_unauthenticated_and_down(local_node: LocalNode) -> None:
    async def authorizer(request: Received) -> Reply:
        body = request.json()
        token = body["request"]["headers"].get("Authorization")
        assert body["request"]["body"]["id"] == body["event"]["eventID"]  # the body is included
        if token == "Bearer good":
            reply = {"authorization": {"principalId": "ann", "context": {}}}
        elif token is None:
            reply = {"error": {"message": "who are you?", "type": "unauthenticated"}}
        else:
            reply = {"error": {"message": "not you"}}
        return 200, [("content-type", "application/json")], orjson.dumps(reply)

    auth = await local_node.function(authorizer, function_id="auth")
    function = await local_node.function()
    await local_node.subscribe()
    created = await local_node.config.post(
        "/eventtypes", json={"name": "user.created", "authorizerId": "auth"}
    )
    assert created.status_code == 201
    allowed = await local_node.emit(ce("a1", data={}), authorization="Bearer good")
    assert allowed.status_code == 202
    denied = await local_node.emit(ce("a2", data={}), authorization="Bearer bad")
    assert denied.status_code == 403
    assert "not you" in denied.json()["errors"][0]["message"]
    anonymous = await local_node.emit(ce("a3", data={}))
    assert anonymous.status_code == 401
    await wait_for(lambda: function.received, "the allowed event")
    assert function.received[0].json()["extensions"] == {"authprincipal": "ann"}
    await auth.close()
    down = await local_node.emit(ce("a4", data={}), authorization="Bearer good")
    assert down.status_code == 503
    assert "unavailable" in down.json()["errors"][0]["message"]
    assert [r.json()["eventID"] for r in function.received] == ["a1"]
    for event_id, status in (("a2", 403), ("a3", 401), ("a4", 503)):
        life = await local_node.life(event_id)
        assert (life["outcome"], life["rejected"]["status"]) == ("rejected", status)
    assert (
        local_node.metric("eventgate_events_rejected_total", space="default", reason="denied") == 1
    )


async def test_dedupe_answers_202_and_delivers_once(local_node: LocalNode) -> None:
    function = await local_node.function()
    await local_node.subscribe()
    first = await local_node.emit(ce("d1", data={"n": 1}))
    again = await local_node.emit(ce("d1", data={"n": 2}))
    other_source = await local_node.emit(ce("d1", source="/elsewhere"))
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert again.json()["subscriptions"] == 1
    assert other_source.json()["duplicate"] is False
    await wait_for(lambda: len(function.received) == 2, "two deliveries")
    life = await local_node.life("d1", source="/tests")
    assert life["duplicatesReceived"] == 1
    assert len((await local_node.config.get("/events/d1")).json()["events"]) == 2


async def test_retries_dead_letters_and_redrive(local_node: LocalNode) -> None:
    answers = {"r1": [503, 500, 200], "r2": [400], "r3": [500, 500, 500]}
    healthy = False

    async def flaky(request: Received) -> Reply:
        event_id = request.json()["eventID"]
        if healthy:
            return 200, [], b"ok"
        planned = answers[event_id]
        status = planned.pop(0) if len(planned) > 1 else planned[0]
        headers = [("retry-after", "0")] if status == 503 else []
        return status, headers, b"no luck"

    function = await local_node.function(flaky)
    subscription = await local_node.subscribe(
        delivery={"retry": 2, "backoffDelay": "PT0.05S", "backoffPolicy": "linear"}
    )
    for event_id in answers:
        assert (await local_node.emit(ce(event_id))).status_code == 202

    async def settled() -> bool:
        return [await local_node.outcome(e) for e in answers] == [
            "delivered",
            "dead-lettered",
            "dead-lettered",
        ]

    await wait_for(settled, "r1 delivered, r2 and r3 dead letters")
    r1 = await local_node.life("r1")
    assert [a["status"] for a in r1["subscriptions"][0]["attempts"]] == [503, 500, 200]
    letters = (await local_node.config.get("/deadletters")).json()["deadLetters"]
    by_event = {letter["eventId"]: letter for letter in letters}
    assert set(by_event) == {"r2", "r3"}
    assert [a["status"] for a in by_event["r2"]["attempts"]] == [400]  # not retryable
    assert by_event["r2"]["error"]["status"] == 400
    assert "not retryable" in by_event["r2"]["error"]["message"]
    assert len(by_event["r3"]["attempts"]) == 3  # the first and two retries
    assert "gave up after 3 attempts" in by_event["r3"]["error"]["message"]
    assert by_event["r3"]["event"]["id"] == "r3"
    assert by_event["r3"]["subscriptionId"] == subscription
    one = await local_node.config.get(f"/deadletters/{by_event['r2']['deadLetterId']}")
    assert one.json()["eventId"] == "r2"
    filtered = await local_node.config.get("/deadletters", params={"subscriptionId": "nope"})
    assert filtered.json() == {"deadLetters": []}

    deleted = await local_node.config.delete(f"/deadletters/{by_event['r2']['deadLetterId']}")
    assert deleted.status_code == 204
    assert (await local_node.outcome("r2")) == "discarded"
    healthy = True
    redriven = await local_node.config.post(
        "/deadletters/redrive", json={"subscriptionId": subscription}
    )
    assert redriven.json() == {"redriven": 1}
    await wait_for(lambda: local_node.outcome("r3"), "r3 redriven")
    await wait_for(
        lambda: local_node.has_outcome("r3", "delivered"), "r3 delivered after the redrive"
    )
    assert len((await local_node.life("r3"))["subscriptions"][0]["attempts"]) == 4
    assert (await local_node.config.get("/deadletters")).json() == {"deadLetters": []}
    labels = {"space": "default", "function": "fn"}
    assert local_node.metric("eventgate_deliveries_dead_lettered_total", **labels) == 2
    assert local_node.metric("eventgate_deliveries_retried_total", **labels) == 4
    assert len(function.received) == 3 + 1 + 3 + 1


async def test_a_timeout_is_retried(local_node: LocalNode) -> None:
    slow_once = HangsOnce()
    slow_once.backend = await local_node.function(slow_once)
    await local_node.subscribe(delivery={"timeout": "PT0.2S", "backoffDelay": "PT0.01S"})
    await local_node.emit(ce("t1"))
    await wait_for(lambda: local_node.has_outcome("t1", "delivered"), "the retry to succeed")
    attempts = (await local_node.life("t1"))["subscriptions"][0]["attempts"]
    assert "timed out" in attempts[0]["error"] and "status" not in attempts[0]
    assert attempts[1]["status"] == 200


async def test_system_events_reach_their_subscribers_and_never_loop(local_node: LocalNode) -> None:
    watcher = await local_node.function(function_id="watcher")
    for kind in ("event.received", "function.invoking", "function.invoked"):
        await local_node.subscribe(event_type=f"eventgateway.{kind}", function_id="watcher")
    await local_node.function(function_id="fn")
    await local_node.subscribe()
    await local_node.emit(ce("s1", data={"n": 1}))

    def seen() -> dict[str, dict[str, object]]:
        return {r.json()["eventType"]: r.json()["data"] for r in watcher.received}

    await wait_for(lambda: len(seen()) == 3, "received, invoking and invoked")
    data = seen()
    assert data["eventgateway.event.received"]["event"]["id"] == "s1"  # type: ignore[index]
    assert data["eventgateway.function.invoking"]["functionId"] == "fn"
    invoked = data["eventgateway.function.invoked"]
    assert base64.b64decode(invoked["result"]) == b"ok"  # type: ignore[arg-type]
    assert invoked["event"]["id"] == "s1"  # type: ignore[index]
    # Deliveries of the system events to `watcher` emitted no further system events.
    await wait_for(
        lambda: (
            local_node.metric(
                "eventgate_deliveries_delivered_total", space="default", function="watcher"
            )
            == 3
        ),
        "three system events delivered",
    )
    assert len(watcher.received) == 3


async def test_life_of_an_event_and_metrics(local_node: LocalNode) -> None:
    await local_node.function()
    subscription = await local_node.subscribe()
    assert (await local_node.config.get("/events/missing")).status_code == 404
    await local_node.emit(ce("m1", data={"n": 1}))
    await wait_for(lambda: local_node.has_outcome("m1", "delivered"), "delivery")
    life = await local_node.life("m1")
    assert life["received"]["method"] == "POST" and life["received"]["path"] == "/"
    assert life["event"] == ce("m1", data={"n": 1})
    [delivery] = life["subscriptions"]
    assert delivery["subscriptionId"] == subscription
    [attempt] = delivery["attempts"]
    assert attempt["status"] == 200 and attempt["target"].startswith("http://127.0.0.1:")
    await wait_for(
        lambda: b"eventgate_delivery_queue_depth{" in local_node.node.metrics.render(),
        "the depth gauge",
    )
    text = local_node.node.metrics.render().decode()
    for name in (
        'eventgate_events_accepted_total{space="default"} 1.0',
        'eventgate_deliveries_delivered_total{function="fn",space="default"} 1.0',
        "eventgate_delivery_latency_seconds_bucket",
        "eventgate_delivery_attempt_duration_seconds_count",
    ):
        assert name in text
    scraped = await local_node.config.get(
        f"http://127.0.0.1:{local_node.settings.config_port}/v1/metrics"
    )
    assert "eventgate_deliveries_retried_total" in scraped.text


async def test_legacy_0_1_events_and_subscription_validation(local_node: LocalNode) -> None:
    function = await local_node.function(mode="cloudevents")
    await local_node.subscribe()
    legacy = {
        "CE-EventType": "user.created",
        "CE-CloudEventsVersion": "0.1",
        "CE-Source": "/legacy",
        "CE-EventID": "l1",
        "CE-X-Tenant": "acme",
        "content-type": "application/json",
    }
    response = await local_node.events.post("/", content=b'{"n": 1}', headers=legacy)
    assert response.status_code == 202 and response.json()["eventId"] == "l1"
    await wait_for(lambda: function.received, "the legacy event")
    assert function.received[0].header("ce-tenant") == "acme"
    sync_with_filter = await local_node.config.post(
        "/subscriptions",
        json={"type": "sync", "eventType": "x", "functionId": "fn", "filter": {"a": "b"}},
    )
    assert sync_with_filter.status_code == 400
    bad_filter = await local_node.config.post(
        "/subscriptions",
        json={"type": "async", "eventType": "x", "functionId": "fn", "filter": {"Bad-Name": ""}},
    )
    assert bad_filter.status_code == 400


async def test_stopping_releases_deliveries_in_flight_for_the_next_start(tmp_path: Path) -> None:
    node = await LocalNode(tmp_path / "node", drain_timeout=0.3).start()
    hang_first = HangsOnce()
    function = hang_first.backend = await node.function(hang_first)
    await node.subscribe(delivery={"timeout": "PT30S"})
    await node.emit(ce("h1"))
    await wait_for(lambda: hang_first.calls == 1, "the first attempt to start")
    await node.close()  # the attempt is still in flight after the drain timeout: released
    replacement = await _serve_on(function.port, hang_first)
    again = await LocalNode(tmp_path / "node").start()
    again.backends.append(replacement)
    try:
        await wait_for(lambda: again.has_outcome("h1", "delivered"), "h1 delivered after restart")
        [attempt] = (await again.life("h1"))["subscriptions"][0]["attempts"]
        assert attempt["status"] == 200  # the released attempt was not counted
    finally:
        await again.close()


async def _serve_on(port: int, answer: Answer) -> Backend:
    """A recording function on a given port (where a registered function used to answer)."""
    backend = Backend(answer)
    backend._server = await asyncio.start_server(backend._serve, "127.0.0.1", port)
    backend.port = port
    return backend


async def test_http_events_on_a_sync_route_pass_their_authorizer_first(
    local_node: LocalNode,
) -> None:
    async def authorizer(request: Received) -> Reply:
        allowed = request.json()["request"]["headers"].get("X-Key") == "open"
        reply = {"authorization": {}} if allowed else {"error": {"message": "closed"}}
        return 200, [], orjson.dumps(reply)

    async def page(request: Received) -> Reply:
        return 200, [], orjson.dumps({"statusCode": 200, "body": "hello"})

    await local_node.function(authorizer, function_id="auth")
    await local_node.function(page, function_id="page")
    sync = {"type": "sync", "eventType": "http.request", "functionId": "page", "path": "/page"}
    assert (await local_node.config.post("/subscriptions", json=sync)).status_code == 201
    created = await local_node.config.post(
        "/eventtypes", json={"name": "http.request", "authorizerId": "auth"}
    )
    assert created.status_code == 201
    assert (await local_node.events.post("/page", headers={"x-key": "shut"})).status_code == 403
    opened = await local_node.events.post("/page", headers={"x-key": "open"})
    assert (opened.status_code, opened.text) == (200, "hello")
