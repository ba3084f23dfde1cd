"""The config API over real HTTP: the seed tutorial's calls, functions and subscriptions."""

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from eventgate.api import create_config_app
from eventgate.observability.metrics import Metrics
from eventgate.store.sqlite import SqliteStore
from tests.config_api import assert_error, raw_request, serve

FUNCTIONS = "/v1/spaces/default/functions"
SUBSCRIPTIONS = "/v1/spaces/default/subscriptions"
SEED_SUBSCRIPTION = {"functionId": "echo", "event": "http", "method": "POST", "path": "/"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = await SqliteStore.open(tmp_path / "config.db")
    try:
        async with serve(create_config_app(store, Metrics())) as client:
            yield client
    finally:
        await store.close()


async def register(client: httpx.AsyncClient, function_id: str, **fields: object) -> None:
    body = {"functionId": function_id, "type": "http", "provider": {"url": "http://fn.local/"}}
    response = await client.post(FUNCTIONS, json={**body, **fields})
    assert response.status_code == 201, response.text


async def subscribe(client: httpx.AsyncClient, **fields: object) -> httpx.Response:
    return await client.post(SUBSCRIPTIONS, json={**SEED_SUBSCRIPTION, **fields})


async def test_the_seed_tutorial_flow(client: httpx.AsyncClient) -> None:
    function = {"functionId": "echo", "type": "http", "provider": {"url": "https://x.run/echo"}}
    response = await client.post(FUNCTIONS, json=function)
    assert response.status_code == 201
    assert response.json() == {
        "space": "default",
        "functionId": "echo",
        "type": "http",
        "provider": {"url": "https://x.run/echo", "mode": "eventgateway"},
        "metadata": {},
    }
    response = await subscribe(client)
    assert response.status_code == 201
    assert response.json()["subscriptionId"] == "http,POST,%2F"
    assert response.json()["eventType"] == "http.request"

    await register(client, "echo-service")
    assert_error(await subscribe(client, functionId="echo-service"), 409, "http,POST,%2F")

    # Exactly the bytes curl sends for the seed's `curl -X DELETE .../http,POST,%2F`.
    status, _ = await raw_request(client, "DELETE", f"{SUBSCRIPTIONS}/http,POST,%2F")
    assert status == 204
    status, body = await raw_request(client, "DELETE", f"{SUBSCRIPTIONS}/http,POST,%2F")
    assert (status, b"not found" in body) == (404, True)

    response = await subscribe(client, functionId="echo-service")
    assert response.status_code == 201
    listed = (await client.get(SUBSCRIPTIONS)).json()["subscriptions"]
    assert [(s["subscriptionId"], s["functionId"]) for s in listed] == [
        ("http,POST,%2F", "echo-service")
    ]


async def test_ids_are_found_as_returned_and_fully_escaped(client: httpx.AsyncClient) -> None:
    await register(client, "echo")
    await subscribe(client, path="/users/:id")
    assert httpx.URL(f"{SUBSCRIPTIONS}/http,GET,%2F").raw_path.endswith(b"%2F")  # no re-encoding
    for sent in ("http,POST,%2Fusers%2F:id", "http%2CPOST%2C%252Fusers%252F%3Aid"):
        response = await client.get(f"{SUBSCRIPTIONS}/{sent}")
        assert response.json()["path"] == "/users/:id"
    assert_error(await client.get(f"{SUBSCRIPTIONS}/http,POST,%2Fnope"), 404, "not found")


async def test_function_lifecycle(client: httpx.AsyncClient) -> None:
    await register(client, "echo", metadata={"team": "a"})
    response = await client.post(
        FUNCTIONS, json={"functionId": "echo", "type": "http", "provider": {"url": "http://a/"}}
    )
    assert assert_error(response, 409) == 'Function "echo" already registered.'
    assert (await client.get(f"{FUNCTIONS}/echo")).json()["metadata"] == {"team": "a"}
    assert_error(await client.get(f"{FUNCTIONS}/nope"), 404, 'Function "nope" not found.')

    update = {"type": "http", "provider": {"url": "http://b/", "mode": "proxy"}}
    response = await client.put(f"{FUNCTIONS}/echo", json=update)
    assert response.status_code == 200
    assert response.json()["provider"] == {"url": "http://b/", "mode": "proxy"}
    assert response.json()["metadata"] == {}
    response = await client.put(f"{FUNCTIONS}/echo", json={**update, "functionId": "other"})
    assert_error(response, 400, 'functionId "other" in the body does not match "echo"')
    assert_error(await client.put(f"{FUNCTIONS}/nope", json=update), 404)

    assert (await client.delete(f"{FUNCTIONS}/echo")).status_code == 204
    assert_error(await client.delete(f"{FUNCTIONS}/echo"), 404, 'Function "echo" not found.')


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"functionId": "a b", "type": "http", "provider": {"url": "http://a/"}},
         ["functionId: String should match pattern"]),
        ({"functionId": "f", "type": "http", "provider": {"url": "x"}},
         ["provider.url 'x' must be an http:// or https:// URL"]),
        ({"functionId": "f", "type": "http"}, ["provider: Field required"]),
        ({"functionId": "f", "type": "lambda", "provider": {"url": "http://a/"}}, ["type: "]),
        ({"functionId": "f", "type": "http", "provider": {"url": "http://a/"}, "colour": 1},
         ["colour: Extra inputs are not permitted"]),
        ({"functionId": "f", "type": "http", "provider": {"url": "http://a/", "timeout": "5s"}},
         ["provider.timeout: '5s' is not an ISO-8601 duration"]),
    ],
)  # fmt: skip
async def test_invalid_functions_are_400s_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], fragments: list[str]
) -> None:
    assert_error(await client.post(FUNCTIONS, json=body), 400, *fragments)


async def test_bodies_that_are_not_json_objects(client: httpx.AsyncClient) -> None:
    assert_error(await client.post(FUNCTIONS, content=b'{"functionId":'), 400, "not valid JSON")
    assert_error(await client.post(FUNCTIONS, content=b"[1]"), 400, "must be a JSON object")
    assert_error(await client.post(FUNCTIONS), 400, "body is empty")


async def test_json_is_read_whatever_the_content_type(client: httpx.AsyncClient) -> None:
    body = b'{"functionId": "echo", "type": "http", "provider": {"url": "http://a/"}}'
    headers = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
    response = await client.post(FUNCTIONS, content=body, headers=headers)
    assert response.status_code == 201, response.text


async def test_space_comes_from_the_url(client: httpx.AsyncClient) -> None:
    body = {"functionId": "f", "type": "http", "provider": {"url": "http://a/"}, "space": "x"}
    response = await client.post("/v1/spaces/team-a/functions", json=body)
    assert response.json()["space"] == "team-a"
    assert (await client.get("/v1/spaces/team-a/functions/f")).status_code == 200
    assert (await client.get(FUNCTIONS)).json() == {"functions": []}
    response = await client.get("/v1/spaces/no%20spaces/functions")
    assert_error(response, 400, "space: String should match pattern")


async def test_lists_filter_on_metadata(client: httpx.AsyncClient) -> None:
    await register(client, "a", metadata={"team": "x", "env": "prod"})
    await register(client, "b", metadata={"team": "x", "env": "dev"})
    await register(client, "c")

    async def ids(query: str) -> list[str]:
        response = await client.get(f"{FUNCTIONS}{query}")
        return [function["functionId"] for function in response.json()["functions"]]

    assert await ids("") == ["a", "b", "c"]
    assert await ids("?metadata.team=x") == ["a", "b"]
    assert await ids("?metadata.team=x&metadata.env=dev") == ["b"]
    assert await ids("?metadata.team=y") == []


async def test_a_function_in_use_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    await register(client, "echo")
    await subscribe(client)
    response = await client.delete(f"{FUNCTIONS}/echo")
    assert_error(response, 400, 'Function "echo" cannot be deleted', '"http,POST,%2F"')


async def test_subscriptions_need_their_function(client: httpx.AsyncClient) -> None:
    assert_error(await subscribe(client), 400, 'Function "echo" not found in space "default"')


async def test_the_event_gateway_09_shape(client: httpx.AsyncClient) -> None:
    await register(client, "echo")
    body = {"type": "sync", "eventType": "http.request", "functionId": "echo", "path": "/users"}
    response = await client.post(
        SUBSCRIPTIONS, json={**body, "method": "get", "subscriptionId": "my-own-id"}
    )
    assert response.status_code == 201
    created = response.json()
    assert created["method"] == "GET"
    expected = base64.urlsafe_b64encode(b"sync,http.request,%2Fusers,GET").rstrip(b"=").decode()
    assert created["subscriptionId"] == expected  # ids are computed, never taken from clients
    assert (await client.get(f"{SUBSCRIPTIONS}/{expected}")).json() == created

    # Same route in the seed's legacy shape: another id, but still the same route.
    legacy = await subscribe(client, method="GET", path="/users")
    assert_error(legacy, 409, "GET /users (http.request) already has a sync subscription")


async def test_one_sync_subscription_per_route_even_when_racing(client: httpx.AsyncClient) -> None:
    await register(client, "a")
    await register(client, "b")
    responses = await asyncio.gather(
        subscribe(client, functionId="a"), subscribe(client, functionId="b")
    )
    assert sorted(response.status_code for response in responses) == [201, 409]


async def test_async_subscriptions_share_routes(client: httpx.AsyncClient) -> None:
    await register(client, "a")
    await register(client, "b")
    body = {"type": "async", "eventType": "user.created", "path": "/"}
    for function_id in ("a", "b"):
        response = await client.post(SUBSCRIPTIONS, json={**body, "functionId": function_id})
        assert response.status_code == 201
    again = await client.post(SUBSCRIPTIONS, json={**body, "functionId": "a"})
    assert_error(again, 409, "already exists")


async def test_sync_paths_must_fit_one_path_tree(client: httpx.AsyncClient) -> None:
    await register(client, "echo")
    assert (await subscribe(client, path="/users/:id")).status_code == 201
    assert (await subscribe(client, path="/users/:id/posts")).status_code == 201
    assert (await subscribe(client, path="/users/me")).status_code == 201  # static beats param
    assert (await subscribe(client, path="/users/:name", method="GET")).status_code == 201

    conflict = await subscribe(client, path="/users/:name/friends")
    assert_error(conflict, 400, "Subscription path conflict: ", ":name", ":id")
    wildcard = await subscribe(client, path="/files/*path/meta")
    assert_error(wildcard, 400, "Subscription path conflict: ", "wildcard must be the last")


async def test_only_subscription_metadata_may_change(client: httpx.AsyncClient) -> None:
    await register(client, "echo")
    await subscribe(client)
    url = f"{SUBSCRIPTIONS}/http,POST,%2F"

    response = await client.put(url, json={"metadata": {"owner": "me"}})
    assert response.status_code == 200
    assert response.json()["metadata"] == {"owner": "me"}
    assert (await client.get(url)).json()["metadata"] == {"owner": "me"}
    response = await client.put(url, json={**SEED_SUBSCRIPTION, "metadata": {}})
    assert response.status_code == 200

    response = await client.put(url, json={"path": "/other"})
    assert_error(response, 400, "Invalid update. 'path' of an existing Subscription")
    assert_error(await client.put(url, json={"subscriptionId": "x"}), 400, "does not match")
    assert_error(await client.put(f"{SUBSCRIPTIONS}/nope", json={}), 404)
