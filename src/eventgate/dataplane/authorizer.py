"""Event type authorizers: a function that allows or denies each event before it is accepted.

The authorizer is called with `{"event": ..., "request": ...}`: the event (in the Event Gateway's
0.1 shape for an `eventgateway`-mode function, else as a CloudEvents 1.0 JSON object) and the
HTTP request it came in (the `http.request` data: headers, query, body, host, path, method). It
answers, as in the Event Gateway:

- `{"authorization": {"principalId": "...", "context": {...}}}`: allowed; the principal is set on
  the event as the `authprincipal` extension (replacing any the client sent);
- `{"error": {"message": "..."}}`: denied, 403; with `"type": "unauthenticated"` (or an HTTP 401
  answer) it is 401 instead; an HTTP 403 answer is a 403 too.

Anything else (unreachable, timed out, a 5xx, a reply that is neither) is not a decision: the
event is refused with 503, so the client knows to try again, and nothing is accepted.
"""

from dataclasses import dataclass

import orjson

from eventgate.events import cloudevents, legacy
from eventgate.events.envelope import CloudEvent
from eventgate.events.policy import EventPolicy
from eventgate.providers.base import CallFailed, Deliverer

PRINCIPAL = "authprincipal"


@dataclass(frozen=True, slots=True)
class Decision:
    """An authorizer's verdict: `status` 0 when allowed, else the status to refuse with."""

    status: int
    message: str = ""
    principal: str | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 0


async def authorize(
    policy: EventPolicy,
    event: CloudEvent,
    request_data: dict[str, object],
    deliverers: dict[str, Deliverer],
    default_timeout: float,
) -> Decision:
    """Ask the policy's authorizer about `event`; never raises for the authorizer's faults."""
    name = f'authorizer "{policy.authorizer_id}" of event type "{policy.event_type}"'
    function = policy.authorizer
    if function is None:
        return Decision(503, f"{name} does not exist in space {policy.space!r}")
    deliverer = deliverers.get(function.type)
    if deliverer is None:
        return Decision(503, f"{name} is a {function.type!r} function, which cannot be called")
    eventgateway = getattr(function.provider, "mode", None) == "eventgateway"
    shape = legacy.to_dict(event) if eventgateway else cloudevents.to_dict(event)
    timeout = deliverer.default_timeout(function) or default_timeout
    try:
        reply = await deliverer.call(function, {"event": shape, "request": request_data}, timeout)
    except CallFailed as error:
        return Decision(503, f"{name} is unavailable: {error.message}")
    if reply.status in (401, 403):
        return Decision(reply.status, f"{name} refused the event (HTTP {reply.status})")
    if not 200 <= reply.status < 300:
        return Decision(503, f"{name} failed: it answered HTTP {reply.status}")
    return _decision(name, reply.body)


def _decision(name: str, body: bytes) -> Decision:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "denied")
            status = 401 if error.get("type") == "unauthenticated" else 403
            return Decision(status, f"{name} denied the event: {message}")
        granted = answer.get("authorization")
        if isinstance(granted, dict):
            principal = granted.get("principalId")
            return Decision(0, principal=principal if isinstance(principal, str) else None)
    return Decision(503, f'{name} answered neither {{"authorization": ...}} nor {{"error": ...}}')


def apply(event: CloudEvent, decision: Decision) -> None:
    """Mark an allowed event with its principal."""
    if decision.principal and decision.principal.isprintable():
        event.extensions[PRINCIPAL] = decision.principal
    else:
        event.extensions.pop(PRINCIPAL, None)
