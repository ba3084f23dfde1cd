"""Config resources in the store: the generic create/read/update/delete behind every router.

A `Kind` describes one resource type (its model, id, store prefix and messages); `Resources` does
the store work for any kind and turns store outcomes into the Event Gateway's errors. Routers add
their own rules (references between resources) as `check` callbacks, which run together with the
write under one lock, so that within a process no check is invalidated before its write lands.
Across processes and nodes the window between check and write remains, as in the Event Gateway.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

import orjson
from pydantic import ValidationError

from eventgate.api.errors import describe_validation_errors
from eventgate.errors import Conflict, NotFound, ValidationFailed
from eventgate.model import Cors, EventType, Function, Subscription, store_key
from eventgate.store import Entry, KeyExists, RevisionMismatch, Store

R = TypeVar("R", Function, Subscription, Cors, EventType)
Check = Callable[[R], Awaitable[None]]
Settle = Callable[[int], Awaitable[None]]
"""Called with a write's store revision before the API answers: the node waits there until its
routing snapshot includes the write, so an event sent right after a 201 or 204 is routed by it."""


@dataclass(frozen=True, slots=True)
class Kind(Generic[R]):
    """One resource type: how it is stored, identified, listed and named in messages."""

    collection: str  # the store prefix and URL segment, e.g. "functions"
    label: str  # as in 'Function "echo" not found.'
    model: type[R]
    id_attr: str  # the model attribute holding the id
    list_key: str  # the list response's key: {"functions": [...]}
    computed_id: bool = False  # the id follows from other fields and is never taken from a client
    fixed: tuple[str, ...] = ()  # JSON fields an update may not change
    exists: str = "already exists"

    @property
    def id_field(self) -> str:
        """The id's JSON name, e.g. `functionId`."""
        return self.model.model_fields[self.id_attr].alias or self.id_attr

    def id_of(self, resource: R) -> str:
        return str(getattr(resource, self.id_attr))

    def key(self, space: str, resource_id: str) -> str:
        return store_key(self.collection, space, resource_id)

    def parse(self, data: dict[str, Any]) -> R:
        """Validate client data; a ValidationFailed (400) says which field is wrong and why."""
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(describe_validation_errors(exc.errors())) from exc

    def parse_new(self, space: str, body: dict[str, Any]) -> R:
        """A resource from a create request: the space comes from the URL, computed ids are ours."""
        data = {**body, "space": space}
        if self.computed_id:
            data.pop(self.id_field, None)
        return self.parse(data)

    def load(self, entry: Entry) -> R:
        return self.model.model_validate_json(entry.value)


FUNCTIONS = Kind(
    collection="functions",
    label="Function",
    model=Function,
    id_attr="function_id",
    list_key="functions",
    exists="already registered",
)
SUBSCRIPTIONS = Kind(
    collection="subscriptions",
    label="Subscription",
    model=Subscription,
    id_attr="subscription_id",
    list_key="subscriptions",
    computed_id=True,
    fixed=("type", "eventType", "event", "functionId", "path", "method"),
)
CORS = Kind(
    collection="cors",
    label="CORS configuration",
    model=Cors,
    id_attr="cors_id",
    list_key="cors",
    computed_id=True,
    fixed=("method", "path"),
)
EVENT_TYPES = Kind(
    collection="eventtypes",
    label="Event Type",
    model=EventType,
    id_attr="name",
    list_key="eventTypes",
)


class Resources:
    """Create, read, update and delete any `Kind` in the store, with Event Gateway errors."""

    def __init__(self, store: Store, settle: Settle | None = None) -> None:
        self.store = store
        self._settle = settle
        self._writes = asyncio.Lock()

    async def get(self, kind: Kind[R], space: str, resource_id: str) -> R:
        """The resource, trying `resource_id` as sent and then percent-decoded once, so that a
        client may send the seed's `http,POST,%2F` or a fully escaped `http%2CPOST%2C%252F`."""
        resource, _ = await self._find(kind, space, resource_id)
        return resource

    async def exists(self, kind: Kind[R], space: str, resource_id: str) -> bool:
        return await self.store.get(kind.key(space, resource_id)) is not None

    async def list(
        self, kind: Kind[R], space: str, metadata: Sequence[tuple[str, str]] = ()
    ) -> list[R]:
        """Every resource of `kind` in `space` whose metadata has all the `(key, value)` pairs."""
        entries, _ = await self.store.list(kind.key(space, ""))
        resources = [kind.load(entry) for entry in entries]
        return [r for r in resources if all(r.metadata.get(k) == v for k, v in metadata)]

    async def create(self, kind: Kind[R], resource: R, check: Check[R] | None = None) -> R:
        resource_id = kind.id_of(resource)
        async with self._writes:
            if check is not None:
                await check(resource)
            try:
                entry = await self.store.put(
                    kind.key(resource.space, resource_id), _dump(resource), create=True
                )
            except KeyExists:
                raise Conflict(f'{kind.label} "{resource_id}" {kind.exists}.') from None
        await self._settled(entry.revision)
        return resource

    async def update(
        self,
        kind: Kind[R],
        space: str,
        resource_id: str,
        body: dict[str, Any],
        check: Check[R] | None = None,
    ) -> R:
        """Replace a resource with `body`. The id may be left out of the body; fields in
        `kind.fixed` may be left out (keeping their value) or repeated unchanged."""
        async with self._writes:
            current, revision = await self._find(kind, space, resource_id)
            resource_id = kind.id_of(current)
            given = body.get(kind.id_field)
            if given is not None and given != resource_id:
                raise ValidationFailed(
                    f'{kind.id_field} "{given}" in the body does not match "{resource_id}" '
                    "in the URL."
                )
            old = current.to_json()
            kept = {name: old[name] for name in kind.fixed if name in old}
            updated = kind.parse({**kept, **body, kind.id_field: resource_id, "space": space})
            new = updated.to_json()
            for name in kind.fixed:
                if new.get(name) != old.get(name):
                    raise ValidationFailed(
                        f"Invalid update. '{name}' of an existing {kind.label} cannot be changed."
                    )
            if check is not None:
                await check(updated)
            key = kind.key(space, resource_id)
            try:
                entry = await self.store.put(key, _dump(updated), expect_revision=revision)
            except RevisionMismatch:
                raise _changed_meanwhile(kind, resource_id) from None
        await self._settled(entry.revision)
        return updated

    async def delete(
        self, kind: Kind[R], space: str, resource_id: str, check: Check[R] | None = None
    ) -> None:
        async with self._writes:
            current, revision = await self._find(kind, space, resource_id)
            if check is not None:
                await check(current)
            resource_id = kind.id_of(current)
            try:
                deleted = await self.store.delete(
                    kind.key(space, resource_id), expect_revision=revision
                )
            except RevisionMismatch:
                raise _changed_meanwhile(kind, resource_id) from None
        if deleted is None:
            raise NotFound(f'{kind.label} "{resource_id}" not found.')
        await self._settled(deleted)

    async def _settled(self, revision: int) -> None:
        if self._settle is not None:
            await self._settle(revision)

    async def _find(self, kind: Kind[R], space: str, resource_id: str) -> tuple[R, int]:
        for candidate in dict.fromkeys((resource_id, unquote(resource_id))):
            entry = await self.store.get(kind.key(space, candidate))
            if entry is not None:
                return kind.load(entry), entry.revision
        raise NotFound(f'{kind.label} "{resource_id}" not found.')


def _dump(resource: R) -> bytes:
    return orjson.dumps(resource.to_json())


def _changed_meanwhile(kind: Kind[R], resource_id: str) -> Conflict:
    return Conflict(f'{kind.label} "{resource_id}" was changed by another request; try again.')
