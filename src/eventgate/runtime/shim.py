"""The fork server and worker loop that run inside a function's own interpreter (stdlib only).

eventgate starts the image's interpreter with `-I` in the function's bundle directory and calls
`main(<control fd>)` (see `forkserver.BOOT`). The fork server imports the handler once, then forks
a worker per request of the parent, so a cold call costs a fork, not an interpreter start. This
file must not import eventgate: it runs with the image's interpreter and sees only the image's
site-packages and the bundle. It imports little, and the traceback module only on errors: every
millisecond here is paid by a start from zero.

Control channel (AF_UNIX SOCK_SEQPACKET, the fd on argv): one JSON object per packet.
  parent -> server  {"op": "init", "handler", "bundle", "secrets", "memory_mb", "log_limit",
                     "max_response"}, then {"op": "fork", "id"} with the worker's socket attached
                     (SCM_RIGHTS), {"op": "kill", "pid"}
  server -> parent  {"op": "ready", "output"} or {"op": "failed", "message", "traceback",
                     "output"}, {"op": "forked", "id", "pid" | "error"}, {"op": "exited", "pid",
                     "code" | "signal"}
Worker channel (AF_UNIX SOCK_STREAM): frames of a 4-byte big-endian length and a JSON object.
  parent -> worker  {"payload", "context"}
  worker -> parent  {"payload", "stdout", "stderr", "error": null | {"type", "message",
                     "exception", "traceback"}, "exit": whether the worker exits after this}
A worker serves one call at a time and exits when the parent closes its socket.
"""

import gc
import importlib
import io
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable

Handler = Callable[[dict, object], object]

_HEADER = struct.Struct(">I")
_CONTROL_BUFFER = 1 << 20
_MAX_REPORT_CHARS = 16 * 1024  # bound on import output and tracebacks sent on the control channel


class _Capture(io.TextIOBase):
    """sys.stdout/sys.stderr: collects lines during a call, else passes through to the real fd."""

    def __init__(self, real: io.TextIOBase, name: str) -> None:
        self._real = real
        self._name = name
        self._lines: list[str] | None = None
        self._partial = ""
        self._room = 0
        self._dropped = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._real.fileno()

    def flush(self) -> None:
        if self._lines is None:
            self._real.flush()

    def begin(self, limit: int) -> None:
        self._lines, self._partial, self._room, self._dropped = [], "", limit, 0

    def write(self, text: str) -> int:
        if self._lines is None:
            written = self._real.write(text)
            self._real.flush()
            return written
        kept = text[: max(self._room, 0)]
        self._room -= len(text)
        self._dropped += len(text) - len(kept)
        *complete, self._partial = (self._partial + kept).split("\n")
        self._lines.extend(_clean(line) for line in complete)
        return len(text)

    def end(self) -> list[str]:
        lines = self._lines or []
        if self._partial:
            lines.append(_clean(self._partial))
        if self._dropped:
            lines.append(f"[{self._dropped} more characters dropped: output over the limit]")
        self._lines, self._partial = None, ""
        return lines


def _clean(line: str) -> str:
    """A log line that is valid UTF-8 whatever the function wrote (lone surrogates replaced)."""
    return line.encode("utf-8", "replace").decode("utf-8")


STDOUT = _Capture(sys.stdout, "<stdout>")
STDERR = _Capture(sys.stderr, "<stderr>")


def _report(text: str) -> str:
    return text if len(text) <= _MAX_REPORT_CHARS else "..." + text[-_MAX_REPORT_CHARS:]


def _traceback_lines(exc: BaseException) -> list[str]:
    """The traceback of `exc` without the frames of this file and of the import machinery."""
    import traceback

    summary = traceback.TracebackException.from_exception(exc)
    summary.stack = traceback.StackSummary.from_list(
        [
            frame
            for frame in summary.stack
            if frame.filename != __file__ and not frame.filename.startswith("<frozen importlib")
        ]
    )
    return _report("".join(summary.format())).splitlines()


def _send_control(ctl: socket.socket, message: dict[str, object]) -> None:
    ctl.send(json.dumps(message, ensure_ascii=False).encode("utf-8", "replace"))


def _load_handler(spec: dict) -> Handler:
    """Import `module.attr` with the bundle first on sys.path; the handler must be callable."""
    sys.path.insert(0, str(spec["bundle"]))
    module_name, _, attr = str(spec["handler"]).rpartition(".")
    module = importlib.import_module(module_name)
    try:
        handler = getattr(module, attr)
    except AttributeError:
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(handler):
        raise TypeError(f"{spec['handler']} is a {type(handler).__name__}, not a function")
    return handler


def _error(kind: str, exc: BaseException) -> dict[str, object]:
    return {
        "type": kind,
        "message": str(exc) or type(exc).__name__,
        "exception": type(exc).__name__,
        "traceback": _traceback_lines(exc),
    }


def _invoke(handler: Handler, request: dict, spec: dict) -> tuple[bytes, bool]:
    """Run one call; returns the encoded response and whether the worker must exit after it."""
    context = request["context"]
    context["secrets"] = {**spec["secrets"], **(context.get("secrets") or {})}
    STDOUT.begin(spec["log_limit"])
    STDERR.begin(spec["log_limit"])
    result, error, fatal = None, None, False
    try:
        result = handler(context, request["payload"])
    except (ValueError, TypeError) as exc:
        error = _error("InputError", exc)
    except MemoryError:
        limit = spec["memory_mb"]
        message = "the function ran out of memory" + (f" (memoryMB={limit})" if limit else "")
        error = {"type": "SystemError", "message": message}
        fatal = True
    except BaseException as exc:
        error = _error("FunctionError", exc)
    response = {
        "payload": result,
        "stdout": STDOUT.end(),
        "stderr": STDERR.end(),
        "error": error,
        "exit": fatal,
    }
    try:
        body = _encode(response)
    except (TypeError, ValueError, RecursionError, OverflowError) as exc:
        response["payload"] = None
        response["error"] = {
            "type": "FunctionError",
            "message": f"the result is not JSON: {exc}",
            "exception": type(exc).__name__,
        }
        body = _encode(response)
    if len(body) > spec["max_response"]:
        response.update(payload=None, stdout=[], stderr=[])
        response["error"] = {
            "type": "FunctionError",
            "message": f"the response is {len(body)} bytes, over the limit of "
            f"{spec['max_response']} bytes",
        }
        body = _encode(response)
    return body, fatal


def _encode(response: dict) -> bytes:
    text = json.dumps(response, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def _read_exactly(stream: io.BufferedReader, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def _serve_calls(sock: socket.socket, handler: Handler, spec: dict) -> None:
    """The worker loop: one framed request, one framed response, until the parent hangs up."""
    stream = sock.makefile("rb")
    while True:
        header = _read_exactly(stream, _HEADER.size)
        if header is None:
            return
        body = _read_exactly(stream, _HEADER.unpack(header)[0])
        if body is None:
            return
        response, fatal = _invoke(handler, json.loads(body), spec)
        sock.sendall(_HEADER.pack(len(response)) + response)
        if fatal:
            return


def _limit_memory(memory_mb: int) -> None:
    """Cap the address space at what the loaded function uses now plus `memory_mb`."""
    try:
        with open("/proc/self/statm") as statm:
            base = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        base = 0
    limit = base + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _die_with_server(libc: object, server_pid: int) -> None:
    """Linux: the kernel kills the worker if the fork server dies before it."""
    if libc is not None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != server_pid:
            os._exit(1)


def _run_worker(fd: int, handler: Handler, spec: dict, server: "_ForkServer") -> None:
    server.close_in_child()
    os.setpgid(0, 0)
    _die_with_server(server.libc, server.pid)
    if spec["memory_mb"]:
        _limit_memory(spec["memory_mb"])
    with socket.socket(fileno=fd) as sock:
        _serve_calls(sock, handler, spec)


class _ForkServer:
    """Forks workers on request, reaps them and reports how each one ended."""

    def __init__(self, ctl: socket.socket, handler: Handler, spec: dict, libc: object) -> None:
        self.ctl = ctl
        self.handler = handler
        self.spec = spec
        self.libc = libc
        self.pid = os.getpid()
        self.children: set[int] = set()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def close_in_child(self) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.ctl.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def serve(self) -> None:
        while True:
            readable, _, _ = select.select([self.ctl, self.wake_r], [], [])
            if self.wake_r in readable:
                _drain(self.wake_r)
                self.reap()
            if self.ctl in readable:
                try:
                    data, fds, _, _ = socket.recv_fds(self.ctl, _CONTROL_BUFFER, 1)
                except ConnectionResetError:  # the parent closed with our reports unread
                    return
                if not data:
                    return
                self.handle(json.loads(data), fds)

    def handle(self, message: dict, fds: list[int]) -> None:
        if message["op"] == "fork":
            self.fork(message["id"], fds[0])
        elif message["op"] == "kill" and message["pid"] in self.children:
            _kill_group(message["pid"])

    def fork(self, request_id: int, fd: int) -> None:
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: this call fails, not the server
            os.close(fd)
            _send_control(self.ctl, {"op": "forked", "id": request_id, "error": str(exc)})
            return
        if pid == 0:
            code = 0
            try:
                _run_worker(fd, self.handler, self.spec, self)
            except BaseException as exc:
                print("\n".join(_traceback_lines(exc)), file=sys.__stderr__, flush=True)
                code = 70
            finally:
                os._exit(code)
        _own_group(pid)
        os.close(fd)
        self.children.add(pid)
        _send_control(self.ctl, {"op": "forked", "id": request_id, "pid": pid})

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            event: dict[str, object] = {"op": "exited", "pid": pid}
            if os.WIFSIGNALED(status):
                event["signal"] = os.WTERMSIG(status)
            else:
                event["code"] = os.waitstatus_to_exitcode(status)
            _send_control(self.ctl, event)

    def stop(self) -> None:
        for pid in self.children:
            _kill_group(pid)
        for pid in self.children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                continue


def _own_group(pid: int) -> None:
    """Give a worker its own process group; it does the same, so the first to run wins."""
    try:
        os.setpgid(pid, pid)
    except OSError:  # the child already did it, or is already gone
        return


def _kill_group(pid: int) -> None:
    """SIGKILL a worker and whatever it started (both sides set its process group at fork)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:  # already gone
        return


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            continue
    except BlockingIOError:
        return


def _load_libc() -> object:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def main(control_fd: int) -> None:
    ctl = socket.socket(fileno=control_fd)
    spec = json.loads(ctl.recv(_CONTROL_BUFFER))
    sys.stdout, sys.stderr = STDOUT, STDERR
    STDOUT.begin(_MAX_REPORT_CHARS)
    STDERR.begin(_MAX_REPORT_CHARS)
    try:
        handler = _load_handler(spec)
    except BaseException as exc:
        _send_control(
            ctl,
            {
                "op": "failed",
                "message": f"{type(exc).__name__}: {exc}",
                "traceback": _traceback_lines(exc),
                "output": STDOUT.end() + STDERR.end(),
            },
        )
        return
    output = STDOUT.end() + STDERR.end()
    server = _ForkServer(ctl, handler, spec, _load_libc())
    gc.freeze()  # keep the imported objects out of the workers' collections: less copy-on-write
    _send_control(ctl, {"op": "ready", "output": output})
    try:
        server.serve()
    finally:
        server.stop()
