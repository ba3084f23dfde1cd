"""The workers of one function version: concurrency, the wait queue, timeouts, idle reaping.

At most `concurrency` calls run at once, each in its own worker; up to `queue_limit` more wait,
beyond that callers get TooManyRequests. A worker idle for `worker_idle_timeout` exits; a version
with no calls for `server_idle_timeout` stops its fork server (scale to zero) and the next call
starts it again.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from eventgate.runtime.executions import Execution, ExecutionError, NotDeployed, TooManyRequests
from eventgate.runtime.forkserver import ForkServer, StartFailed, Worker, WorkerLost
from eventgate.runtime.spec import FunctionSpec, RuntimeOptions


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of one function version's processes and callers."""

    version: str
    server_running: bool
    workers: int  # idle plus busy
    busy: int
    waiting: int


class FunctionPool:
    """Runs calls of one function version in forked workers of its fork server."""

    def __init__(self, spec: FunctionSpec, options: RuntimeOptions, home: Path) -> None:
        self.spec = spec
        self._options = options
        self._home = home
        self._server: ForkServer | None = None
        self._server_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(spec.concurrency)
        self._idle: list[Worker] = []
        self._busy = 0
        self._waiting = 0
        self._active = 0  # calls admitted and not finished: waiting, starting or running
        self._quiet = asyncio.Event()  # no call is active
        self._quiet.set()
        self._server_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> list[str]:
        """Start the fork server (imports the handler); returns what the import printed."""
        async with self._server_lock:
            server = self._server = await ForkServer.start(self.spec, self._options, self._home)
        self._arm_server_timer()
        return server.start_output

    def stats(self) -> PoolStats:
        server = self._server
        running = server is not None and server.alive
        idle = sum(1 for worker in self._idle if worker.alive)
        return PoolStats(self.spec.version, running, idle + self._busy, self._busy, self._waiting)

    async def invoke(self, payload: object, context: dict[str, object], call_id: str) -> Execution:
        if self._closed:
            raise NotDeployed(f"function {self.spec.name!r} is not deployed")
        if self._slots.locked() and self._waiting >= self._options.queue_limit:
            raise TooManyRequests(
                f"function {self.spec.name!r} is busy: {self.spec.concurrency} calls running and "
                f"{self._waiting} waiting; retry later"
            )
        started = time.perf_counter()
        try:
            request = orjson.dumps({"payload": payload, "context": context})
        except orjson.JSONEncodeError as exc:
            error = ExecutionError("InputError", f"the payload or context is not JSON: {exc}")
            return _execution(call_id, started, False, error=error)
        self._enter()
        try:
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
            try:
                return await self._run(request, call_id, started)
            finally:
                self._slots.release()
        finally:
            self._leave()

    async def _run(self, request: bytes, call_id: str, started: float) -> Execution:
        worker, cold = self._take_idle(), False
        if worker is None:
            cold = True
            try:
                worker = await self._fork()
            except (StartFailed, WorkerLost) as exc:
                error = ExecutionError("SystemError", f"the function could not start: {exc}")
                return _execution(call_id, started, cold, error=error)
        self._busy += 1
        try:
            async with asyncio.timeout(self.spec.timeout):
                response = await worker.call(request, self._options.max_response_bytes)
        except TimeoutError:
            await self._discard(worker)
            message = f"the function timed out after {self.spec.timeout:g}s"
            error = ExecutionError("SystemError", message, timed_out=True)
            return _execution(call_id, started, cold, error=error)
        except WorkerLost as exc:
            await self._discard(worker)
            return _execution(call_id, started, cold, error=self._lost_error(str(exc)))
        except BaseException:
            await self._discard(worker)  # cancelled mid-call: the worker's state is unknown
            raise
        finally:
            self._busy -= 1
        if response["exit"]:
            worker.close()
        else:
            self._release(worker)
        return _execution(
            call_id,
            started,
            cold,
            payload=response["payload"],
            stdout=response["stdout"],
            stderr=response["stderr"],
            error=_error(response["error"]),
        )

    def _lost_error(self, reason: str) -> ExecutionError:
        if self.spec.memory_mb is not None:
            reason += f" (out of memory? the limit is {self.spec.memory_mb} MB)"
        return ExecutionError("SystemError", reason)

    def _take_idle(self) -> Worker | None:
        while self._idle:
            worker = self._idle.pop()
            if worker.idle_timer is not None:
                worker.idle_timer.cancel()
            if worker.alive:
                return worker
            worker.close()
        return None

    async def _fork(self) -> Worker:
        async with self._server_lock:
            if self._closed and self._server is None:
                raise WorkerLost("the function was stopped")
            if self._server is None or not self._server.alive:
                if self._server is not None:
                    await self._server.stop()
                self._server = None
                self._server = await ForkServer.start(self.spec, self._options, self._home)
            server = self._server
        return await server.fork()

    def _release(self, worker: Worker) -> None:
        if not worker.alive:
            return
        if self._closed:
            worker.close()
            return
        loop = asyncio.get_running_loop()
        worker.idle_timer = loop.call_later(
            self._options.worker_idle_timeout, self._reap_worker, worker
        )
        self._idle.append(worker)

    def _reap_worker(self, worker: Worker) -> None:
        if worker in self._idle:
            self._idle.remove(worker)
        worker.close()

    async def _discard(self, worker: Worker) -> None:
        if self._server is not None:
            await self._server.kill(worker)
        else:
            worker.close()

    def _enter(self) -> None:
        self._active += 1
        self._quiet.clear()
        if self._server_timer is not None:
            self._server_timer.cancel()
            self._server_timer = None

    def _leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._quiet.set()
            self._arm_server_timer()

    def _arm_server_timer(self) -> None:
        if not self._closed:
            self._server_timer = asyncio.get_running_loop().call_later(
                self._options.server_idle_timeout, self._spawn_scale_to_zero
            )

    def _spawn_scale_to_zero(self) -> None:
        task = asyncio.get_running_loop().create_task(self._scale_to_zero())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _scale_to_zero(self) -> None:
        async with self._server_lock:
            if not self._quiet.is_set() or self._server is None:
                return
            server, self._server = self._server, None
            self._close_idle()
        await server.stop()

    def _close_idle(self) -> None:
        for worker in self._idle:
            worker.close()
        self._idle.clear()

    async def stop(self) -> None:
        """Let calls in flight (and admitted callers) finish, up to the drain timeout, then stop."""
        self._closed = True
        if self._server_timer is not None:
            self._server_timer.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(TimeoutError):  # what still runs is killed with the fork server
            await asyncio.wait_for(self._quiet.wait(), self._options.drain_timeout)
        async with self._server_lock:
            server, self._server = self._server, None
            self._close_idle()
        if server is not None:
            await server.stop()


def _error(body: dict | None) -> ExecutionError | None:
    if body is None:
        return None
    return ExecutionError(
        body["type"], body["message"], body.get("exception"), body.get("traceback")
    )


def _execution(
    call_id: str,
    started: float,
    cold: bool,
    *,
    payload: object = None,
    stdout: list[str] | None = None,
    stderr: list[str] | None = None,
    error: ExecutionError | None,
) -> Execution:
    duration_ms = (time.perf_counter() - started) * 1000
    return Execution(call_id, payload, stdout or [], stderr or [], error, duration_ms, cold)
