"""The parent side of one fork server: start it, fork workers from it, call them, stop it.

The protocol is described in `shim.py`. Each worker gets its own socketpair: the parent keeps one
end, the other is handed to the fork server with SCM_RIGHTS and inherited by the forked worker.
"""

import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
from pathlib import Path

import orjson

from eventgate.runtime.spec import FunctionSpec, RuntimeOptions

log = logging.getLogger("eventgate.runtime")

# Import the shim from this folder (so its bytecode is cached), then take the folder off sys.path
# and the module out of sys.modules, so that nothing of eventgate shadows the function's modules.
BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); import shim; "
    "del sys.path[0], sys.modules['shim']; shim.main(int(sys.argv[2]))"
)
_HEADER = struct.Struct(">I")
_CONTROL_BUFFER = 1 << 20
_EXIT_REPORT_WAIT = 1.0  # how long a lost call waits for the fork server to say how it ended


class StartFailed(Exception):
    """The fork server did not come up: the handler failed to import, or the interpreter failed."""

    def __init__(self, reason: str, traceback: list[str], output: list[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.traceback = traceback
        self.output = output


class WorkerLost(Exception):
    """The worker's connection broke in the middle of a call."""


def describe_exit(event: dict) -> str:
    """A sentence for how a worker ended, from the fork server's `exited` event."""
    if "signal" in event:
        number = event["signal"]
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"the function process was killed by {name}"
    return f"the function process exited with code {event['code']}"


class Worker:
    """One forked worker: a framed request/response connection to a process of the function."""

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.pid = pid
        self._reader = reader
        self._writer = writer
        self.exited: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.idle_timer: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        return not self.exited.done() and not self._writer.is_closing()

    async def call(self, request: bytes, max_response: int) -> dict[str, object]:
        try:
            self._writer.write(_HEADER.pack(len(request)) + request)
            await self._writer.drain()
            (size,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
            if size > max_response:
                raise WorkerLost(f"the function sent a response of {size} bytes, over the limit")
            return orjson.loads(await self._reader.readexactly(size))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise WorkerLost(await self._exit_reason()) from exc

    async def _exit_reason(self) -> str:
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), _EXIT_REPORT_WAIT)
        except TimeoutError:
            return "the function process closed its connection"

    def mark_exited(self, reason: str) -> None:
        if not self.exited.done():
            self.exited.set_result(reason)

    def close(self) -> None:
        """Hang up: an idle worker exits on its own when its connection closes."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self._writer.close()


class ForkServer:
    """A running fork server for one function version: the handler is imported, ready to fork."""

    def __init__(self, spec: FunctionSpec, process: asyncio.subprocess.Process, ctl: socket.socket):
        self.spec = spec
        self._process = process
        self._ctl = ctl
        self._workers: dict[int, Worker] = {}
        self._early_exits: dict[int, str] = {}  # workers that ended before fork() saw them
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._next_fork = 0
        self._output_task = asyncio.create_task(self._log_output())
        self._control_task: asyncio.Task[None] | None = None
        self.alive = True
        self.start_output: list[str] = []  # what the module printed while importing

    @classmethod
    async def start(cls, spec: FunctionSpec, options: RuntimeOptions, home: Path) -> "ForkServer":
        """Start the interpreter, import the handler; raises StartFailed with the traceback."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        default_path = options.base_env.get("PATH", "")
        env = {
            **options.base_env,
            "HOME": str(home),
            **spec.env,
            "PATH": _path_with(spec.python.parent, spec.env.get("PATH", default_path)),
        }
        try:
            with theirs:
                process = await asyncio.create_subprocess_exec(
                    str(spec.python), "-I", "-c", BOOT, str(Path(__file__).parent),
                    str(theirs.fileno()),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=spec.bundle,
                    env=env,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )  # fmt: skip
        except OSError as exc:
            ours.close()
            raise StartFailed(f"could not start {spec.python}: {exc}", [], []) from exc
        server = cls(spec, process, ours)
        init = {
            "op": "init",
            "handler": spec.handler,
            "bundle": str(spec.bundle),
            "secrets": dict(spec.secrets),
            "memory_mb": spec.memory_mb,
            "log_limit": options.log_limit,
            "max_response": options.max_response_bytes,
        }
        try:
            async with asyncio.timeout(options.start_timeout):
                await server._send(init)
                reply = await server._receive()
        except TimeoutError:
            await server.stop()
            raise StartFailed(
                f"the handler did not load within {options.start_timeout:g}s", [], []
            ) from None
        if reply is None or reply["op"] != "ready":
            await server.stop()
            if reply is None:
                code = process.returncode
                raise StartFailed(f"the interpreter exited with code {code} while starting", [], [])
            raise StartFailed(reply["message"], reply["traceback"], reply["output"])
        server.start_output = reply["output"]
        server._control_task = asyncio.create_task(server._read_control())
        return server

    async def fork(self) -> Worker:
        """A new worker, ready for calls."""
        if not self.alive:
            raise WorkerLost("the fork server is not running")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._next_fork += 1
        request_id = self._next_fork
        forked = self._forks[request_id] = asyncio.get_running_loop().create_future()
        try:
            with theirs:
                await self._send({"op": "fork", "id": request_id}, theirs.fileno())
            pid = await forked
        except BaseException:
            ours.close()
            raise
        finally:
            self._forks.pop(request_id, None)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker = self._workers[pid] = Worker(pid, reader, writer)
        if pid in self._early_exits:
            worker.mark_exited(self._early_exits.pop(pid))
        return worker

    async def kill(self, worker: Worker) -> None:
        """SIGKILL the worker's process group (it and anything it started)."""
        worker.close()
        if self.alive and not worker.exited.done():
            with contextlib.suppress(OSError):
                await self._send({"op": "kill", "pid": worker.pid})

    async def stop(self) -> None:
        """Close the control channel: the fork server kills its workers and exits."""
        self._lost("the fork server stopped")
        if self._control_task is not None:
            await _cancel(self._control_task)
        self._ctl.close()
        try:
            await asyncio.wait_for(self._process.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            await self._process.wait()
        await _cancel(self._output_task)

    def _lost(self, reason: str) -> None:
        """The fork server is gone or going: so are its workers (they die with it)."""
        self.alive = False
        for worker in self._workers.values():
            worker.mark_exited(reason)
            worker.close()
        for forked in self._forks.values():
            if not forked.done():
                forked.set_exception(WorkerLost(reason))

    async def _read_control(self) -> None:
        while (message := await self._receive()) is not None:
            if message["op"] == "forked":
                forked = self._forks.get(message["id"])
                if forked is None or forked.done():
                    continue
                if "error" in message:
                    forked.set_exception(WorkerLost(f"could not fork: {message['error']}"))
                else:
                    forked.set_result(message["pid"])
            elif message["op"] == "exited":
                worker = self._workers.pop(message["pid"], None)
                if worker is not None:
                    worker.mark_exited(describe_exit(message))
                else:
                    self._early_exits[message["pid"]] = describe_exit(message)
        self._lost("the fork server exited")

    async def _receive(self) -> dict | None:
        try:
            data = await asyncio.get_running_loop().sock_recv(self._ctl, _CONTROL_BUFFER)
        except OSError:
            return None
        return orjson.loads(data) if data else None

    async def _send(self, message: dict[str, object], fd: int | None = None) -> None:
        data = orjson.dumps(message)
        fds = [fd] if fd is not None else []
        while True:
            try:
                socket.send_fds(self._ctl, [data], fds)
                return
            except BlockingIOError:
                await _writable(self._ctl)

    async def _log_output(self) -> None:
        """Whatever the function writes outside a call (C code, child processes) goes to our log."""
        stream = self._process.stdout
        assert stream is not None
        prefix = f"{self.spec.space}/{self.spec.name}"
        pending = b""
        while chunk := await stream.read(64 * 1024):
            *lines, pending = (pending + chunk).split(b"\n")
            pending = pending[-64 * 1024 :]
            for line in lines:
                log.info("%s: %s", prefix, line.decode("utf-8", "replace"))
        if pending:
            log.info("%s: %s", prefix, pending.decode("utf-8", "replace"))


def _path_with(directory: Path, path: str) -> str:
    return f"{directory}{os.pathsep}{path}" if path else str(directory)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_writer(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(sock.fileno())
