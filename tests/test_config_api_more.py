"""The config API over real HTTP: CORS, event types, status, metrics, OpenAPI and error shapes."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from eventgate.api import create_config_app
from eventgate.observability.metrics import Metrics
from eventgate.store import Store
from eventgate.store.sqlite import SqliteStore
from tests.config_api import assert_error, raw_request, serve

CORS = "/v1/spaces/default/cors"
EVENT_TYPES = "/v1/spaces/default/eventtypes"
FUNCTION = {"functionId": "auth", "type": "http", "provider": {"url": "http://fn.local/"}}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await SqliteStore.open(tmp_path / "config.db")
    yield store
    await store.close()


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_config_app(store, Metrics())) as client:
        yield client


async def test_cors_lifecycle(client: httpx.AsyncClient) -> None:
    response = await client.post(CORS, json={"method": "get", "path": "/users/:id"})
    assert response.status_code == 201
    created = response.json()
    assert created["corsId"] == "GET%2Fusers%2F:id"
    assert created["allowedOrigins"] == ["*"]
    again = await client.post(CORS, json={"method": "GET", "path": "/users/:id"})
    assert_error(again, 409, 'CORS configuration "GET%2Fusers%2F:id" already exists.')

    url = f"{CORS}/GET%2Fusers%2F:id"
    assert (await client.get(url)).json() == created
    status, body = await raw_request(client, "GET", url)
    assert (status, b'"corsId":"GET%2Fusers%2F:id"' in body) == (200, True)

    response = await client.put(url, json={"allowedOrigins": ["https://*.example.com"]})
    assert response.status_code == 200
    assert response.json()["allowedOrigins"] == ["https://*.example.com"]
    assert response.json()["path"] == "/users/:id"
    moved = await client.put(url, json={"path": "/elsewhere"})
    assert_error(moved, 400, "Invalid update. 'path' of an existing CORS configuration")
    assert (await client.get(CORS)).json() == {"cors": [response.json()]}

    assert (await client.delete(url)).status_code == 204
    assert_error(await client.get(url), 404, 'CORS configuration "GET%2Fusers%2F:id" not found.')


async def test_event_type_lifecycle(client: httpx.AsyncClient) -> None:
    response = await client.post(EVENT_TYPES, json={"name": "user.created"})
    assert response.status_code == 201
    assert response.json() == {"space": "default", "name": "user.created", "metadata": {}}
    again = await client.post(EVENT_TYPES, json={"name": "user.created"})
    assert_error(again, 409, 'Event Type "user.created" already exists.')
    assert_error(await client.post(EVENT_TYPES, json={}), 400, "name: Field required")

    url = f"{EVENT_TYPES}/user.created"
    response = await client.put(url, json={"metadata": {"v": "2"}})
    assert response.json()["metadata"] == {"v": "2"}
    listed = (await client.get(f"{EVENT_TYPES}?metadata.v=2")).json()
    assert listed == {"eventTypes": [response.json()]}

    assert (await client.delete(url)).status_code == 204
    assert_error(await client.get(url), 404, 'Event Type "user.created" not found.')


async def test_event_type_authorizers_must_exist(client: httpx.AsyncClient) -> None:
    body = {"name": "user.created", "authorizerId": "auth"}
    assert_error(await client.post(EVENT_TYPES, json=body), 400, 'function "auth" not found')
    assert (await client.post("/v1/spaces/default/functions", json=FUNCTION)).status_code == 201
    assert (await client.post(EVENT_TYPES, json=body)).status_code == 201
    in_use = await client.delete("/v1/spaces/default/functions/auth")
    assert_error(in_use, 400, 'event type "user.created" (as its authorizer)')


async def test_an_event_type_in_use_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    await client.post(EVENT_TYPES, json={"name": "user.created"})
    await client.post("/v1/spaces/default/functions", json=FUNCTION)
    subscription = {"type": "async", "eventType": "user.created", "functionId": "auth"}
    assert (await client.post("/v1/spaces/default/subscriptions", json=subscription)).is_success
    response = await client.delete(f"{EVENT_TYPES}/user.created")
    assert_error(response, 400, 'Event Type "user.created" cannot be deleted', "subscription")


async def test_status(store: Store) -> None:
    async with serve(create_config_app(store, Metrics())) as client:
        assert (await client.get("/v1/status")).json() == {"status": "ok"}
    report = {"status": "degraded", "store": "unreachable"}
    async with serve(create_config_app(store, Metrics(), status=lambda: report)) as client:
        response = await client.get("/v1/status")
    assert (response.status_code, response.json()) == (200, report)


async def test_metrics_count_config_requests(client: httpx.AsyncClient) -> None:
    await client.post(EVENT_TYPES, json={"name": "a"})
    await client.get(f"{EVENT_TYPES}/missing")
    response = await client.get("/v1/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = response.text.splitlines()
    for labels in (
        'operation="create",resource="eventtypes",space="default",status="201"',
        'operation="get",resource="eventtypes",space="default",status="404"',
    ):
        assert f"eventgateway_config_requests_total{{{labels}}} 1.0" in lines
    assert any(line.startswith("eventgateway_config_request_duration_seconds") for line in lines)


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["info"]["title"] == "eventgate config API"
    assert "/v1/spaces/{space}/subscriptions/{subscription_id}" in spec["paths"]
    create = spec["paths"]["/v1/spaces/{space}/functions"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Function"}
    assert "422" not in create["responses"]
    assert "Function" in spec["components"]["schemas"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]


async def test_routing_errors_have_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v2/nothing"), 404, "No such endpoint: GET /v2/nothing")
    response = await client.patch("/v1/spaces/default/functions")
    assert_error(response, 405, "Method not allowed: PATCH /v1/spaces/default/functions")
    assert "POST" in response.headers["allow"]


async def test_an_unavailable_store_is_a_503(store: Store) -> None:
    async with serve(create_config_app(store, Metrics())) as client:
        await store.close()
        response = await client.get("/v1/spaces/default/functions")
    assert_error(response, 503, "closed")


async def test_unexpected_failures_are_500s_with_the_error_shape(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_list(prefix: str) -> tuple[list[object], int]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "list", broken_list)
    metrics = Metrics()
    async with serve(create_config_app(store, metrics)) as client:
        response = await client.get("/v1/spaces/default/functions")
        text = (await client.get("/v1/metrics")).text
    assert_error(response, 500, "Internal error: RuntimeError: disk on fire")
    assert 'operation="list",resource="functions",space="default",status="500"} 1.0' in text
