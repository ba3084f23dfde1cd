"""The routing snapshot: an immutable index of every space's resources, read by the events port.

It is built whole from the current functions, subscriptions, CORS configs and event types, and
swapped whole by the routing table, so a request sees one consistent view without locks.
Everything a request needs per route (parsed provider URL, mode, timeout, metric labels) is
worked out here once, not per request.

Spaces: as in the Event Gateway, routing is global by (event type, method, path); a space only
scopes ids and which function a subscription names. If two spaces claim the same sync route (or
one CORS method and path), the space that sorts first by name wins, deterministically, and the
loser is reported in `problems` (the routing table logs each problem once). Async subscriptions
do not conflict: all of them fire.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from eventgate.events.policy import EventPolicy
from eventgate.model import (
    HTTP_EVENT_TYPE,
    Cors,
    EventType,
    Function,
    Subscription,
    parse_duration,
)
from eventgate.routing.pathtree import Params, PathConflict, PathTree


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """How to call one http function, worked out once per snapshot."""

    space: str
    function_id: str
    mode: str
    url: str
    base_path: bytes
    timeout: float | None

    @classmethod
    def from_function(cls, function: Function) -> "HttpTarget":
        provider = function.provider
        parts = urlsplit(provider.url)
        return cls(
            space=function.space,
            function_id=function.function_id,
            mode=provider.mode,
            url=provider.url,
            base_path=parts.path.rstrip("/").encode(),
            timeout=parse_duration(provider.timeout) if provider.timeout else None,
        )


@dataclass(frozen=True, slots=True)
class PythonTarget:
    """A python function, run by this node's runtime (`providers/python.py`)."""

    space: str
    function_id: str
    timeout: float | None
    mode: str = "python"

    @property
    def url(self) -> str:
        """How the function is named in logs and attempts."""
        return f"python:{self.space}/{self.function_id}"

    @classmethod
    def from_function(cls, function: Function) -> "PythonTarget":
        timeout = function.provider.timeout
        seconds = parse_duration(timeout) if timeout else None
        return cls(function.space, function.function_id, seconds)


def target_of(function: Function) -> "HttpTarget | PythonTarget":
    """How to call a function of either type."""
    if function.type == "python":
        return PythonTarget.from_function(function)
    return HttpTarget.from_function(function)


@dataclass(frozen=True, slots=True)
class Route:
    """One subscription bound to its function, ready to call."""

    subscription: Subscription
    function: Function
    target: HttpTarget | PythonTarget

    @property
    def space(self) -> str:
        return self.subscription.space

    @property
    def label(self) -> str:
        """The route's metric label: the subscription's path pattern, never a raw path."""
        return self.subscription.path


class CorsPolicy:
    """One CORS config with its origins, methods and headers compiled for quick checks."""

    __slots__ = ("any_header", "any_origin", "config", "headers", "methods", "origins", "patterns")

    def __init__(self, config: Cors) -> None:
        self.config = config
        origins = [origin.lower() for origin in config.allowed_origins]
        self.any_origin = "*" in origins
        self.origins = frozenset(origin for origin in origins if "*" not in origin)
        self.patterns = tuple(
            re.compile(".*".join(re.escape(part) for part in origin.split("*")))
            for origin in origins
            if "*" in origin and origin != "*"
        )
        self.methods = frozenset(method.upper() for method in config.allowed_methods)
        headers = [header.lower() for header in config.allowed_headers]
        self.any_header = "*" in headers
        self.headers = frozenset(headers)

    def allows_origin(self, origin: str) -> bool:
        if self.any_origin:
            return True
        origin = origin.lower()
        return origin in self.origins or any(p.fullmatch(origin) for p in self.patterns)

    def allows_headers(self, requested: str) -> bool:
        """Whether every header named in an `Access-Control-Request-Headers` value is allowed."""
        if self.any_header:
            return True
        names = (name.strip().lower() for name in requested.split(","))
        return all(not name or name in self.headers for name in names)


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """Every route of every space at one store revision. Never mutated once built."""

    revision: int = 0
    functions: dict[tuple[str, str], Function] = field(default_factory=dict)
    event_types: dict[tuple[str, str], EventType] = field(default_factory=dict)
    sync: dict[tuple[str, str], PathTree[Route]] = field(default_factory=dict)
    asynchronous: dict[tuple[str, str, str], tuple[Route, ...]] = field(default_factory=dict)
    cors: dict[str, PathTree[CorsPolicy]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    policies: dict[tuple[str, str], EventPolicy] = field(default_factory=dict)
    """Event types with a schema or an authorizer, by (space, name)."""
    subscribers: dict[tuple[str, str], Route] = field(default_factory=dict)
    """Async routes by (space, subscription id): what the dispatcher delivers to."""
    type_spaces: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The spaces that registered each event type name."""

    @classmethod
    def build(
        cls,
        functions: Iterable[Function] = (),
        subscriptions: Iterable[Subscription] = (),
        cors: Iterable[Cors] = (),
        event_types: Iterable[EventType] = (),
        revision: int = 0,
    ) -> "RoutingSnapshot":
        """Index resources of all spaces. Inputs may come in any order: the result does not
        depend on it (conflicts are settled by space name, then id)."""
        problems: list[str] = []
        by_id = {(f.space, f.function_id): f for f in functions}
        targets = {key: target_of(f) for key, f in by_id.items()}
        sync: dict[tuple[str, str], PathTree[Route]] = {}
        owners: dict[tuple[str, str, str], Subscription] = {}
        asynchronous: dict[tuple[str, str, str], list[Route]] = {}
        for sub in sorted(subscriptions, key=lambda s: (s.space, s.subscription_id or "")):
            key = (sub.space, sub.function_id)
            if key not in by_id:
                problems.append(
                    f"subscription {sub.subscription_id} in space {sub.space!r} names function "
                    f"{sub.function_id!r}, which does not exist: ignored"
                )
                continue
            route = Route(sub, by_id[key], targets[key])
            if sub.type == "async":
                asynchronous.setdefault((sub.event_type, sub.method, sub.path), []).append(route)
                continue
            tree = sync.get((sub.event_type, sub.method))
            if tree is None:
                tree = sync[sub.event_type, sub.method] = PathTree()
            try:
                tree.add(sub.path, route)
            except PathConflict as error:
                owner = owners.get(sub.route_key)
                holder = f" (held by space {owner.space!r})" if owner else ""
                problems.append(
                    f"sync subscription {sub.subscription_id} in space {sub.space!r} "
                    f"({sub.method} {sub.path}): {error}{holder}: ignored"
                )
            else:
                owners[sub.route_key] = sub
        types = {(t.space, t.name): t for t in event_types}
        policies = {}
        for key, event_type in types.items():
            if event_type.data_schema is None and event_type.authorizer_id is None:
                continue
            authorizer = by_id.get((event_type.space, event_type.authorizer_id or ""))
            if event_type.authorizer_id is not None and authorizer is None:
                problems.append(
                    f"event type {event_type.name!r} in space {event_type.space!r} names "
                    f"authorizer {event_type.authorizer_id!r}, which does not exist: its "
                    "events are refused"
                )
            try:
                policies[key] = EventPolicy.build(event_type, authorizer)
            except Exception as error:  # a schema stored behind the API's back
                problems.append(
                    f"event type {event_type.name!r} in space {event_type.space!r}: "
                    f"schema does not compile ({error}): ignored"
                )
        return cls(
            revision=revision,
            functions=by_id,
            event_types=types,
            sync=sync,
            asynchronous={key: tuple(routes) for key, routes in asynchronous.items()},
            cors=_cors_trees(cors, problems),
            problems=tuple(problems),
            policies=policies,
            type_spaces=_type_spaces(types),
            subscribers={
                (route.subscription.space, route.subscription.subscription_id or ""): route
                for routes in asynchronous.values()
                for route in routes
            },
        )

    def lookup_sync(
        self, method: str, path: str, event_type: str = HTTP_EVENT_TYPE
    ) -> tuple[Route, Params] | None:
        """The sync route for a request and its path params: the gateway's hot path."""
        tree = self.sync.get((event_type, method))
        return tree.lookup(path) if tree is not None else None

    def match_sync(
        self, method: str, path: str, event_type: str = HTTP_EVENT_TYPE
    ) -> tuple[Subscription, Function, Params] | None:
        """The sync subscription for a request, its function and the path params."""
        found = self.lookup_sync(method, path, event_type)
        if found is None:
            return None
        route, params = found
        return route.subscription, route.function, params

    def match_async(self, event_type: str, method: str, path: str) -> tuple[Route, ...]:
        """Every async subscription of an event (exact method and path, as in the Event
        Gateway), across all spaces, each once."""
        return self.asynchronous.get((event_type, method, path), ())

    def policy(self, space: str, event_type: str) -> EventPolicy | None:
        """The schema and authorizer an event type asks for in a space, if any."""
        return self.policies.get((space, event_type)) if self.policies else None

    def match_cors(self, method: str, path: str) -> CorsPolicy | None:
        """The CORS config for a method and path (same tree semantics as routes)."""
        tree = self.cors.get(method)
        if tree is None:
            return None
        found = tree.lookup(path)
        return found[0] if found is not None else None


def _type_spaces(types: dict[tuple[str, str], EventType]) -> dict[str, tuple[str, ...]]:
    spaces: dict[str, list[str]] = {}
    for space, name in sorted(types):
        spaces.setdefault(name, []).append(space)
    return {name: tuple(found) for name, found in spaces.items()}


def _cors_trees(configs: Iterable[Cors], problems: list[str]) -> dict[str, PathTree[CorsPolicy]]:
    trees: dict[str, PathTree[CorsPolicy]] = {}
    for config in sorted(configs, key=lambda c: (c.space, c.cors_id or "")):
        try:
            tree = trees.get(config.method)
            if tree is None:
                tree = trees[config.method] = PathTree()
            tree.add(config.path, CorsPolicy(config))
        except PathConflict as error:
            problems.append(f"CORS {config.cors_id} in space {config.space!r}: {error}: ignored")
    return trees
