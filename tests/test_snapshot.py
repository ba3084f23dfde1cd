"""The routing snapshot: sync matching, spaces, async index, CORS lookup, precomputed targets."""

import itertools

from eventgate.model import Cors, EventType, Function, Subscription
from eventgate.routing.snapshot import RoutingSnapshot


def function(function_id: str, space: str = "default", **provider: str) -> Function:
    provider.setdefault("url", f"http://127.0.0.1:9000/{function_id}")
    return Function.model_validate(
        {"space": space, "functionId": function_id, "type": "http", "provider": provider}
    )


def subscription(function_id: str, path: str, method: str = "POST", **fields: str) -> Subscription:
    return Subscription.model_validate(
        {"functionId": function_id, "path": path, "method": method, **fields}
    )


def test_sync_match_with_params() -> None:
    snapshot = RoutingSnapshot.build(
        functions=[function("users")],
        subscriptions=[subscription("users", "/users/:id", "GET")],
    )
    match = snapshot.match_sync("GET", "/users/42")
    assert match is not None
    sub, fn, params = match
    assert (sub.path, fn.function_id, params) == ("/users/:id", "users", {"id": "42"})
    assert snapshot.match_sync("POST", "/users/42") is None
    assert snapshot.match_sync("GET", "/users") is None


def test_the_seed_legacy_subscription_routes() -> None:
    sub = Subscription.model_validate(
        {"functionId": "echo", "event": "http", "method": "POST", "path": "/"}
    )
    snapshot = RoutingSnapshot.build(functions=[function("echo")], subscriptions=[sub])
    match = snapshot.match_sync("POST", "/")
    assert match is not None
    assert match[1].function_id == "echo"


def test_routes_are_global_and_the_first_space_by_name_wins_whatever_the_order() -> None:
    functions = [function("f", space="beta"), function("f", space="alpha")]
    subs = [
        subscription("f", "/same", space="beta"),
        subscription("f", "/same", space="alpha"),
    ]
    for order in itertools.permutations(subs):
        snapshot = RoutingSnapshot.build(functions=functions, subscriptions=order)
        match = snapshot.match_sync("POST", "/same")
        assert match is not None
        assert match[0].space == "alpha"
        assert len(snapshot.problems) == 1
        assert "'beta'" in snapshot.problems[0]
        assert "held by space 'alpha'" in snapshot.problems[0]


def test_a_subscription_to_a_missing_function_is_reported_and_skipped() -> None:
    snapshot = RoutingSnapshot.build(subscriptions=[subscription("ghost", "/")])
    assert snapshot.match_sync("POST", "/") is None
    assert "does not exist" in snapshot.problems[0]


def test_sync_routes_are_per_event_type() -> None:
    snapshot = RoutingSnapshot.build(
        functions=[function("f")],
        subscriptions=[subscription("f", "/", eventType="user.created")],
    )
    assert snapshot.match_sync("POST", "/") is None
    assert snapshot.match_sync("POST", "/", "user.created") is not None


def test_async_subscriptions_are_indexed_exactly_and_each_once() -> None:
    subs = [
        subscription("a", "/", type="async", eventType="user.created"),
        subscription("b", "/", type="async", eventType="user.created", space="other"),
        subscription("a", "/:x", type="async", eventType="user.created"),
    ]
    snapshot = RoutingSnapshot.build(
        functions=[function("a"), function("b", space="other")], subscriptions=subs
    )
    routes = snapshot.match_async("user.created", "POST", "/")
    assert [(r.target.space, r.target.function_id) for r in routes] == [
        ("default", "a"),
        ("other", "b"),
    ]
    assert snapshot.match_async("user.created", "POST", "/anything") == ()
    assert snapshot.match_sync("POST", "/", "user.created") is None


def test_targets_are_precomputed() -> None:
    fn = function("p", url="http://svc.local:8080/base/", mode="proxy", timeout="PT0.5S")
    snapshot = RoutingSnapshot.build(functions=[fn], subscriptions=[subscription("p", "/*rest")])
    found = snapshot.lookup_sync("POST", "/x/y")
    assert found is not None
    route, params = found
    assert params == {"rest": "x/y"}
    assert route.label == "/*rest"
    target = route.target
    assert (target.mode, target.url, target.base_path) == (
        "proxy",
        "http://svc.local:8080/base/",
        b"/base",
    )
    assert target.timeout == 0.5


def test_a_target_without_mode_or_timeout_gets_the_defaults() -> None:
    snapshot = RoutingSnapshot.build(
        functions=[function("d")], subscriptions=[subscription("d", "/")]
    )
    found = snapshot.lookup_sync("POST", "/")
    assert found is not None
    assert (found[0].target.mode, found[0].target.timeout) == ("eventgateway", None)


def test_cors_lookup_uses_the_tree_and_compiles_origins() -> None:
    cors = Cors.model_validate(
        {
            "method": "GET",
            "path": "/users/:id",
            "allowedOrigins": ["http://*.domain.com", "https://exact.org"],
            "allowedHeaders": ["Content-Type", "X-Api-Key"],
        }
    )
    snapshot = RoutingSnapshot.build(cors=[cors])
    policy = snapshot.match_cors("GET", "/users/7")
    assert policy is not None
    assert snapshot.match_cors("POST", "/users/7") is None
    assert policy.allows_origin("http://app.domain.com")
    assert policy.allows_origin("HTTPS://EXACT.ORG")
    assert not policy.allows_origin("http://domain.com.evil.net")
    assert not policy.allows_origin("https://other.org")
    assert policy.allows_headers("content-type, x-api-key")
    assert not policy.allows_headers("content-type, authorization")
    assert RoutingSnapshot.build(cors=[Cors()]).match_cors("GET", "/") is not None


def test_event_types_and_functions_are_indexed_by_space() -> None:
    snapshot = RoutingSnapshot.build(
        functions=[function("f", space="s1")],
        event_types=[EventType.model_validate({"name": "user.created", "space": "s1"})],
    )
    assert ("s1", "user.created") in snapshot.event_types
    assert ("s1", "f") in snapshot.functions
