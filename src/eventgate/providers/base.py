"""How the delivery side calls a function, whatever its type: the `Deliverer` interface.

The dispatcher (async deliveries) and the ingress (authorizers) hand a call to the deliverer of
the function's `type` (`http` today; `python` functions plug in the same way). A deliverer
answers with a `Reply` in HTTP terms (a function type without HTTP maps its outcomes to statuses:
200 for a result, 500 for a failure), or raises `CallFailed` when no answer came at all.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass

from eventgate.events.envelope import CloudEvent
from eventgate.model import Function


@dataclass(frozen=True, slots=True)
class Reply:
    """A function's answer: status, body, and the `Retry-After` it asked for (seconds)."""

    status: int
    body: bytes = b""
    retry_after: float | None = None


class CallFailed(Exception):
    """No answer: the function could not be reached, timed out, or broke the protocol."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


class Deliverer(ABC):
    """Calls functions of one type."""

    @abstractmethod
    def target(self, function: Function) -> str:
        """Where calls to `function` go, as recorded in attempts (e.g. its URL)."""

    @abstractmethod
    async def deliver(self, function: Function, event: CloudEvent, timeout: float) -> Reply:  # noqa: ASYNC109
        """Hand `event` to `function` (an async delivery); raises CallFailed without an answer."""

    @abstractmethod
    async def call(self, function: Function, payload: object, timeout: float) -> Reply:  # noqa: ASYNC109
        """Call `function` with a JSON payload and return its answer (authorizers)."""

    def default_timeout(self, function: Function) -> float | None:
        """The function's own per-call timeout, if it sets one."""
        return None
