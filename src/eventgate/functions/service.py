"""The python functions of one node: what the store says they are, what runs here, and calls.

The config store holds the specs (function records with their source, image records with their
requirements, secrets), shared by every node. Each node follows the store and deploys a function
*on first need* (its creation through this node's API, a call, or a status request): it builds
the image's virtual environment if this node has not, unpacks the source, starts the version's
fork server (importing the handler: READY, or ERROR with the traceback). Once a function is
deployed here, a change to it (or to its image or secrets) deploys the new version at once:
calls in flight finish on the old one, new calls wait for the new one. A deleted function is
stopped.

A deployment's version is a hash of the provider (source included), the image's requirements and
the values of the secrets it names, so a change to any of them is a new version.

Calls (`call`) check the input schema, run the handler in the runtime, check the output schema,
and record the invocation (`invocations.py`). The hot path is two dict lookups before the runtime.
"""

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from pydantic import ValidationError

from eventgate.errors import NotFound
from eventgate.functions.invocations import Invocation, InvocationLog
from eventgate.functions.resources import ImageSpec, SecretSpec
from eventgate.model import Function, PythonProvider, parse_duration
from eventgate.runtime import (
    Execution,
    ExecutionError,
    FunctionSpec,
    Image,
    ImageStatus,
    NotDeployed,
    Runtime,
)
from eventgate.runtime.images import requirements_digest
from eventgate.store.base import Change, Entry, Store, WatchCompacted

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (space, name)
Status = Literal["CREATING", "READY", "ERROR"]
_CATCH_UP_TIMEOUT = 2.0


def new_id() -> str:
    """A random (version 4) UUID for an invocation, without a system call per call (ids name
    records; they are not secrets)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def image_name(space: str, name: str) -> str:
    """The runtime's name for an image of a space (image names are per space)."""
    return f"{space}/{name}"


@dataclass(eq=False)
class Deployment:
    """One version of a function on this node, being deployed or deployed."""

    version: str
    function: Function
    timeout: float
    status: Status = "CREATING"
    reason: str | None = None
    traceback: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    input_schema: Validator | None = None
    output_schema: Validator | None = None
    task: asyncio.Task[None] | None = None
    stale: bool = False  # its image changed: deploy again even if the version is the same

    @property
    def done(self) -> bool:
        return self.task is None or self.task.done()

    def fail(self, reason: str, traceback: list[str] | None = None) -> None:
        self.status, self.reason, self.traceback = "ERROR", reason, traceback or []

    def describe(self) -> dict[str, object]:
        found: dict[str, object] = {"status": self.status, "version": self.version}
        if self.reason:
            found["reason"] = self.reason
        if self.traceback:
            found["traceback"] = self.traceback
        if self.output:
            found["importOutput"] = self.output
        return found


def _compile(schema: dict[str, Any] | None) -> Validator | None:
    if schema is None:
        return None
    validator: Validator = validator_for(schema)(schema)
    return validator


def _schema_problem(validator: Validator | None, value: object) -> str | None:
    if validator is None:
        return None
    error = next(iter(validator.iter_errors(value)), None)
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{error.message}" + (f" (at /{where})" if where else "")


class PythonFunctions:
    """Deploys this node's python functions on first need and runs their calls."""

    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        records: InvocationLog,
        *,
        default_timeout: float = 5.0,
        max_source_bytes: int = 1 << 20,
        backoff_max: float = 5.0,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.records = records
        self.default_timeout = default_timeout
        self.max_source_bytes = max_source_bytes
        self._backoff_max = backoff_max
        self._functions: dict[Key, Function] = {}  # python functions only
        self._images: dict[Key, ImageSpec] = {}
        self._secrets: dict[Key, SecretSpec] = {}
        self._wanted: dict[Key, str] = {}  # the version each function should run
        self._deployments: dict[Key, Deployment] = {}
        self._revision = 0
        self._seen = asyncio.Condition()
        self._follower: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- following the store ------------------------------------------------------------------

    async def start(self) -> None:
        entries, revision = await self.store.list("")
        self._load(entries, revision)
        self._follower = asyncio.create_task(self._follow(), name="python-functions-watch")

    def _load(self, entries: list[Entry], revision: int) -> None:
        before = set(self._functions) | set(self._deployments)
        self._functions, self._images, self._secrets = {}, {}, {}
        for entry in entries:
            self._put(entry.key, entry.value)
        self._revision = revision
        self._wanted = {key: self._version(key) for key in self._functions}
        self._reconcile(before | set(self._functions))

    def _put(self, key: str, value: bytes | None) -> tuple[str, Key] | None:
        """Apply one stored value (None: deleted); returns its kind and key if it is ours."""
        parts = key.split("/", 2)
        if len(parts) != 3 or parts[0] not in ("functions", "images", "secrets"):
            return None
        kind, ident = parts[0], (parts[1], parts[2])
        table: dict[Key, Any] = {
            "functions": self._functions,
            "images": self._images,
            "secrets": self._secrets,
        }[kind]
        table.pop(ident, None)
        if value is not None:
            model = {"functions": Function, "images": ImageSpec, "secrets": SecretSpec}[kind]
            try:
                data = orjson.loads(value)
                data["space"] = ident[0]
                parsed = model.model_validate(data)
            except (orjson.JSONDecodeError, TypeError, ValidationError) as error:
                log.warning("python functions: skipping %s: %s", key, error)
                return kind, ident
            if kind != "functions" or parsed.type == "python":
                table[ident] = parsed
        return kind, ident

    def _apply(self, changes: list[Change]) -> None:
        functions: set[Key] = set()
        images: set[Key] = set()
        for change in changes:
            self._revision = change.revision
            applied = self._put(change.key, change.value)
            if applied is None:
                continue
            kind, ident = applied
            if kind == "functions":
                functions.add(ident)
            elif kind == "images":
                images.add(ident)
                if change.value is None:  # deleted (no function uses it): so is our build
                    self._spawn(self._remove_build(ident))
                else:
                    self._retry_failed_build(ident)
            else:
                functions.update(self._users(ident, lambda p, name: name in p.secrets))
        for ident in images:
            users = self._users(ident, lambda p, name: p.image == name)
            for key in users:
                deployment = self._deployments.get(key)
                if deployment is not None:
                    deployment.stale = True
            functions.update(users)
        for key in functions:
            if key in self._functions:
                self._wanted[key] = self._version(key)
            else:
                self._wanted.pop(key, None)
        self._reconcile(functions)

    def _users(self, ident: Key, uses: Callable[[PythonProvider, str], bool]) -> set[Key]:
        space, name = ident
        return {
            key
            for key, function in self._functions.items()
            if key[0] == space and uses(function.provider, name)  # type: ignore[arg-type]
        }

    def _retry_failed_build(self, ident: Key) -> None:
        """A user wrote an image again: a build that failed here is tried again."""
        spec = self._images.get(ident)
        if spec is None:
            return
        with contextlib.suppress(NotFound):
            image = self.runtime.images.get(image_name(*ident))
            if image.status is ImageStatus.ERROR:
                self.runtime.images.submit(image_name(*ident), spec.requirements)

    def _reconcile(self, keys: set[Key]) -> None:
        """Functions deployed here follow their spec at once; the others wait for a need."""
        for key in keys:
            deployment = self._deployments.get(key)
            if deployment is None:
                continue
            wanted = self._wanted.get(key)
            if wanted is None:
                self._spawn(self._undeploy(key))
            elif wanted != deployment.version or deployment.stale:
                self._begin_deploy(key, wanted)

    async def _follow(self) -> None:
        failures = 0
        resync = False
        while True:
            try:
                if resync:
                    entries, revision = await self.store.list("")
                    self._load(entries, revision)
                    await self._notify()
                    resync = False
                changes = self.store.watch("", self._revision)
                async with contextlib.aclosing(changes):
                    async for change in changes:
                        self._apply([change])
                        failures = 0
                        await self._notify()
                raise RuntimeError("the watch ended")
            except WatchCompacted:
                resync = True
            except Exception as error:
                failures += 1
                delay = min(self._backoff_max, 0.1 * 2 ** (failures - 1)) * random.uniform(0.5, 1)
                log.warning("python functions: following the store failed (%s); retrying", error)
                await asyncio.sleep(delay)
                resync = True

    async def _notify(self) -> None:
        async with self._seen:
            self._seen.notify_all()

    async def catch_up(self, revision: int | None = None) -> None:
        """Wait (bounded) until this node has seen the store at `revision` (default: now)."""
        if revision is None:
            _, revision = await self.store.list("functions/\0")
        try:
            async with asyncio.timeout(_CATCH_UP_TIMEOUT), self._seen:
                await self._seen.wait_for(lambda: self._revision >= revision)
        except TimeoutError:
            log.warning("python functions: not caught up with revision %d", revision)

    # -- deploying ----------------------------------------------------------------------------

    def _version(self, key: Key) -> str:
        function = self._functions[key]
        provider: PythonProvider = function.provider  # type: ignore[assignment]
        image = self._images.get((key[0], provider.image))
        secrets = [self._secret_values(key[0], name) for name in provider.secrets]
        digest = hashlib.sha256(orjson.dumps(provider.to_json()))
        digest.update(orjson.dumps([image.requirements if image else None, secrets]))
        return digest.hexdigest()[:16]

    def _secret_values(self, space: str, name: str) -> dict[str, str] | None:
        secret = self._secrets.get((space, name))
        return None if secret is None else secret.secrets

    def _begin_deploy(self, key: Key, version: str) -> Deployment:
        function = self._functions[key]
        provider: PythonProvider = function.provider  # type: ignore[assignment]
        timeout = parse_duration(provider.timeout) if provider.timeout else self.default_timeout
        deployment = Deployment(version, function, timeout)
        if provider.io_schema is not None:
            deployment.input_schema = _compile(provider.io_schema.input)
            deployment.output_schema = _compile(provider.io_schema.output)
        self._deployments[key] = deployment
        deployment.task = self._spawn(self._deploy(key, deployment))
        return deployment

    async def _deploy(self, key: Key, deployment: Deployment) -> None:
        space, name = key
        provider: PythonProvider = deployment.function.provider  # type: ignore[assignment]
        try:
            image = await self._built_image(space, provider.image)
            if image is None or image.status is not ImageStatus.READY:
                deployment.fail(self._image_problem(space, provider.image, image))
                return
            secrets: dict[str, str] = {}
            for secret in provider.secrets:
                values = self._secret_values(space, secret)
                if values is None:
                    deployment.fail(
                        f'secret "{secret}" does not exist in space "{space}": create it with '
                        f"`eventgate secret create {secret} KEY=VALUE`"
                    )
                    return
                secrets.update(values)
            bundle = await self.runtime.unpack(space, name, provider.source)
            spec = FunctionSpec(
                space=space,
                name=name,
                version=deployment.version,
                python=image.python,
                handler=provider.handler,
                bundle=bundle.path,
                timeout=deployment.timeout,
                memory_mb=provider.memory_mb,
                concurrency=provider.concurrency or 4,
                env=provider.env,
                secrets=secrets,
            )
            if self._deployments.get(key) is not deployment:
                return  # a newer version (or a delete) came meanwhile
            status = await self.runtime.deploy(spec)
        except asyncio.CancelledError:
            deployment.fail("the deploy was cancelled (the node is stopping)")
            raise
        except Exception as error:  # a bad archive, disk errors: the function shows why
            deployment.fail(f"the function could not be deployed: {error}")
            return
        deployment.output = status.output
        if status.ready:
            deployment.status = "READY"
        else:
            deployment.fail(status.reason or "the handler failed to load", status.traceback)
        deployment.stale = False

    async def _built_image(self, space: str, name: str) -> Image | None:
        """This node's build of an image (started now if it has none), when it has finished."""
        image = self.image(space, name)
        if image is None:
            return None
        return await self.runtime.images.wait(image_name(space, name))

    def image(self, space: str, name: str, *, rebuild: bool = False) -> Image | None:
        """This node's build of the image the store describes; starts it if there is none (or,
        with `rebuild`, if it failed). None if the store has no such image."""
        spec = self._images.get((space, name))
        if spec is None:
            return None
        local = image_name(space, name)
        try:
            current = self.runtime.images.get(local)
        except NotFound:
            current = None
        digest = requirements_digest(spec.requirements)
        failed = current is not None and current.status is ImageStatus.ERROR
        if current is not None and current.digest == digest and not (rebuild and failed):
            return current
        return self.runtime.images.submit(local, spec.requirements)

    def note_image(self, spec: ImageSpec) -> None:
        """The API wrote this image: know it now (the watch confirms it later)."""
        self._images[(spec.space, spec.name)] = spec

    async def forget_image(self, space: str, name: str) -> None:
        """Remove this node's build of a deleted image."""
        self._images.pop((space, name), None)
        await self._delete_build(space, name)

    async def _remove_build(self, ident: Key) -> None:
        if ident not in self._images:  # unless it was created again meanwhile
            await self._delete_build(*ident)

    async def _delete_build(self, space: str, name: str) -> None:
        """Forget this process's build of a deleted image. Its files stay while another image
        of the store has the same requirements: that one shares the build, and may be in use
        here without having been asked for yet, or in another worker of the node."""
        local = image_name(space, name)
        with contextlib.suppress(NotFound):
            digest = self.runtime.images.get(local).digest
            shared = any(
                requirements_digest(spec.requirements) == digest for spec in self._images.values()
            )
            await self.runtime.images.delete(local, keep_files=shared)

    def _image_problem(self, space: str, name: str, image: Image | None) -> str:
        if image is None:
            return (
                f'image "{name}" does not exist in space "{space}": create it with '
                f"`eventgate image create {name}`"
            )
        tail = "\n".join(image.log.strip().splitlines()[-15:])
        return (
            f'image "{name}" failed to build; see `eventgate image get {name}`. '
            f"The installer said:\n{tail}"
        )

    async def _undeploy(self, key: Key) -> None:
        self._deployments.pop(key, None)
        await self.runtime.undeploy(*key)

    async def current(self, space: str, name: str) -> Deployment:
        """The deployment of the function's current version here, started now if there is
        none (not waited for). Raises NotFound if the store has no such python function."""
        key = (space, name)
        wanted = self._wanted.get(key)
        if wanted is None:
            await self.catch_up()
            wanted = self._wanted.get(key)
            if wanted is None:
                raise NotFound(f'Python function "{name}" not found in space "{space}".')
        deployment = self._deployments.get(key)
        if deployment is None or deployment.version != wanted or deployment.stale:
            deployment = self._begin_deploy(key, wanted)
        return deployment

    async def ensure(self, space: str, name: str) -> Deployment:
        """The function's current version, deployed here (now, if it was not)."""
        while True:
            deployment = await self.current(space, name)
            if deployment.task is not None:
                await asyncio.shield(deployment.task)
            if deployment.status != "CREATING" or self._deployments.get((space, name)) is None:
                return deployment
            # superseded by a newer version while it was deploying: wait for that one

    async def describe(self, space: str, name: str, wait: float) -> dict[str, object]:
        """The function's status on this node (deploying it if needed, waiting up to `wait`
        seconds), with its processes when it runs."""
        deployment = await self.current(space, name)
        if deployment.task is not None:
            await asyncio.wait({deployment.task}, timeout=wait)
        deployment = self._deployments.get((space, name), deployment)
        found = deployment.describe()
        if deployment.status == "READY":
            with contextlib.suppress(NotDeployed):
                stats = self.runtime.stats(space, name)
                found["instances"] = {
                    "serverRunning": stats.server_running,
                    "workers": stats.workers,
                    "busy": stats.busy,
                    "waiting": stats.waiting,
                }
        return found

    async def forget(self, space: str, name: str) -> None:
        """Stop a deleted function here now (the watch would, a moment later)."""
        key = (space, name)
        self._functions.pop(key, None)
        self._wanted.pop(key, None)
        if key in self._deployments:
            await self._undeploy(key)

    def image_users(self, space: str, name: str) -> list[str]:
        return sorted(key[1] for key in self._users((space, name), lambda p, n: p.image == n))

    # -- calls --------------------------------------------------------------------------------

    async def call(
        self,
        space: str,
        name: str,
        payload: object,
        context: dict[str, object] | None = None,
        *,
        trigger: str,
        invocation_id: str | None = None,
        event_id: str | None = None,
        created: float | None = None,
    ) -> Execution:
        """Run one call and record it. Raises NotFound (no such python function here) and
        TooManyRequests (every worker busy and the wait queue full)."""
        key = (space, name)
        deployment = self._deployments.get(key)
        if (
            deployment is None
            or not deployment.done
            or deployment.stale
            or deployment.version != self._wanted.get(key)
        ):
            deployment = await self.ensure(space, name)
        call_id = invocation_id or new_id()
        created = created or time.time()
        try:
            execution = await self._run(deployment, key, payload, context, call_id)
        except asyncio.CancelledError:
            error = ExecutionError("SystemError", "the call was cancelled before it finished")
            execution = Execution(call_id, None, [], [], error, 0.0, False)
            self.record(key, execution, payload, trigger, created, event_id)
            raise
        self.record(key, execution, payload, trigger, created, event_id)
        await self.records.written(call_id)  # another worker's config API may look it up next
        return execution

    async def _run(
        self,
        deployment: Deployment,
        key: Key,
        payload: object,
        context: dict[str, object] | None,
        call_id: str,
    ) -> Execution:
        if deployment.status != "READY":
            message = f'function "{key[1]}" is not ready: {deployment.reason}'
            error = ExecutionError("FunctionError", message, traceback=deployment.traceback)
            return Execution(call_id, None, [], [], error, 0.0, False)
        problem = _schema_problem(deployment.input_schema, payload)
        if problem is not None:
            error = ExecutionError("InputError", f"the input does not match the schema: {problem}")
            return Execution(call_id, None, [], [], error, 0.0, False)
        try:
            execution = await self.runtime.invoke(*key, payload, context, invocation_id=call_id)
        except NotDeployed:
            raise NotFound(f'Function "{key[1]}" is not deployed in space "{key[0]}".') from None
        if execution.error is None:
            problem = _schema_problem(deployment.output_schema, execution.payload)
            if problem is not None:
                message = f"the result does not match the output schema: {problem}"
                execution = replace(execution, error=ExecutionError("FunctionError", message))
        return execution

    def record(
        self,
        key: Key,
        execution: Execution,
        payload: object,
        trigger: str,
        created: float,
        event_id: str | None = None,
    ) -> None:
        """Store the finished invocation."""
        self.records.add(
            Invocation(
                execution.id,
                key[0],
                key[1],
                trigger,
                created,
                payload,
                event_id,
                execution,
                time.time(),
            )
        )

    def submit(self, space: str, name: str, payload: object) -> str:
        """Start a call in the background (`?blocking=false`); returns its invocation id."""
        call_id = new_id()
        created = time.time()
        self.records.add(Invocation(call_id, space, name, "api", created, payload))

        async def run() -> None:
            try:
                await self.call(
                    space, name, payload, trigger="api", invocation_id=call_id, created=created
                )
            except Exception as error:  # not found (deleted meanwhile), too many requests
                message = getattr(error, "message", str(error))
                failed = ExecutionError("SystemError", message)
                execution = Execution(call_id, None, [], [], failed, 0.0, False)
                self.record((space, name), execution, payload, "api", created)

        self._spawn(run())
        return call_id

    # -- life cycle ---------------------------------------------------------------------------

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def close(self) -> None:
        """Stop following the store, stop every function and the image builds, store the
        records."""
        self._closed = True
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.runtime.close()
        await self.records.close()
