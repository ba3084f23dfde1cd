"""What the runtime answers: executions with their logs and typed errors, deploy statuses, and the
errors a caller gets before a function runs (not deployed, too many requests)."""

from dataclasses import dataclass, field
from typing import Literal

from eventgate.errors import EventgateError, NotFound

ErrorType = Literal["InputError", "FunctionError", "SystemError"]

_STATUS_BY_TYPE: dict[str, int] = {"InputError": 400, "FunctionError": 500, "SystemError": 502}


class NotDeployed(NotFound):
    """No function by that name is deployed in this runtime."""


class TooManyRequests(EventgateError):
    """Every worker of the function is busy and its wait queue is full."""

    status = 429


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """Why a call failed, typed as Dispatch did.

    `InputError`: the handler raised ValueError or TypeError. `FunctionError`: it raised anything
    else, or returned something that is not JSON. `SystemError`: the platform failed (timeout,
    crash, out of memory, the function could not start).
    """

    type: ErrorType
    message: str
    exception: str | None = None
    traceback: list[str] | None = None
    timed_out: bool = False

    @property
    def http_status(self) -> int:
        """400, 500, 502, or 504 for a timeout."""
        return 504 if self.timed_out else _STATUS_BY_TYPE[self.type]

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"type": self.type, "message": self.message}
        if self.exception is not None:
            body["exception"] = self.exception
        if self.traceback is not None:
            body["traceback"] = self.traceback
        return body


@dataclass(frozen=True, slots=True)
class Execution:
    """One finished call: the result (or error) with what the function printed."""

    id: str
    payload: object
    stdout: list[str]
    stderr: list[str]
    error: ExecutionError | None
    duration_ms: float
    cold_start: bool  # a new worker was forked for this call (after starting the fork server)

    @property
    def http_status(self) -> int:
        return 200 if self.error is None else self.error.http_status

    def to_json(self) -> dict[str, object]:
        """Dispatch's execution shape, plus the invocation id, duration and cold start."""
        return {
            "context": {
                "logs": {"stdout": self.stdout, "stderr": self.stderr},
                "error": None if self.error is None else self.error.to_json(),
                "invocationId": self.id,
                "durationMs": round(self.duration_ms, 3),
                "coldStart": self.cold_start,
            },
            "payload": self.payload,
        }


@dataclass(frozen=True, slots=True)
class DeployStatus:
    """The outcome of a deploy: READY, or ERROR with the reason and the handler's traceback."""

    status: Literal["READY", "ERROR"]
    version: str
    reason: str | None = None
    traceback: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)  # what the module printed while importing

    @property
    def ready(self) -> bool:
        return self.status == "READY"
