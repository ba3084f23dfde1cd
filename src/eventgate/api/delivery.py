"""Where did my event go: `/v1/spaces/{space}/events/{eventId}` and the dead letters.

- `GET .../events/{eventId}[?source=...]`: every recorded event with that id (narrowed by source
  when ids collide): when and where it was received, the subscriptions it matched, every attempt
  (time, target, status or error, latency) and the outcome: `delivered`, `retrying`, `queued`,
  `dead-lettered`, `discarded`, `rejected` or `no subscribers`;
- `GET .../deadletters[?subscriptionId=...&limit=...]`, `GET` and `DELETE .../deadletters/{id}`;
- `POST .../deadletters/redrive` with `{}` (all) or `{"subscriptionId": "..."}`: queue them
  again, with their attempt count reset (their history stays).
"""

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from eventgate.api.common import Space
from eventgate.api.errors import ERROR_RESPONSES
from eventgate.delivery import Attempt, DeadLetter, DeliveryRecord, EventLife, Queue, State
from eventgate.delivery.stored import stored_event
from eventgate.errors import NotFound, Unavailable, ValidationFailed
from eventgate.events import cloudevents

router = APIRouter(prefix="/v1/spaces/{space}", tags=["delivery"], responses=ERROR_RESPONSES)
EventId = Annotated[str, Path(description="The event's `id` attribute.")]
DeadLetterId = Annotated[str, Path(description="The dead letter's `deadLetterId`.")]


def _queue(request: Request) -> Queue:
    queue: Queue | None = getattr(request.app.state, "queue", None)
    if queue is None:
        raise Unavailable("This node has no delivery queue.")
    return queue


def _time(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _json(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code, media_type="application/json")


def _attempt(attempt: Attempt) -> dict[str, Any]:
    found: dict[str, Any] = {
        "at": _time(attempt.at),
        "target": attempt.target,
        "latencyMs": round(attempt.latency * 1000, 3),
    }
    if attempt.status is not None:
        found["status"] = attempt.status
    if attempt.error is not None:
        found["error"] = attempt.error
    return found


def _outcome(record: DeliveryRecord) -> str:
    if record.state is State.PENDING:
        return "retrying" if record.attempts else "queued"
    return {State.DELIVERED: "delivered", State.DEAD: "dead-lettered"}.get(
        record.state, "discarded"
    )


def _delivery(record: DeliveryRecord) -> dict[str, Any]:
    found: dict[str, Any] = {
        "subscriptionId": record.subscription_id,
        "functionId": record.function_id,
        "outcome": _outcome(record),
        "attempts": [_attempt(attempt) for attempt in record.attempts],
    }
    if record.state is State.PENDING:
        found["nextAttemptAt"] = _time(record.due)
    if record.state is State.DEAD:
        found["deadLetterId"] = record.id
    if record.error is not None:
        found["error"] = record.error
    return found


def _life(life: EventLife) -> dict[str, Any]:
    event = life.event
    deliveries = [_delivery(record) for record in life.deliveries]
    outcomes = {delivery["outcome"] for delivery in deliveries}
    if event.rejected_status is not None:
        outcome = "rejected"
    elif not deliveries:
        outcome = "no subscribers"
    else:
        order = ("retrying", "queued", "dead-lettered", "discarded", "delivered")
        outcome = next(name for name in order if name in outcomes)
    found: dict[str, Any] = {
        "eventId": event.id,
        "source": event.source,
        "type": event.type,
        "space": event.space,
        "receivedAt": _time(event.received_at),
        "received": orjson.loads(event.origin) if event.origin else {},
        "outcome": outcome,
    }
    if event.rejected_status is not None:
        found["rejected"] = {"status": event.rejected_status, "message": event.rejected}
    if event.duplicates:
        found["duplicatesReceived"] = event.duplicates
    found["subscriptions"] = deliveries
    found["event"] = cloudevents.to_dict(stored_event(event.payload))
    return found


def _dead_letter(letter: DeadLetter) -> dict[str, Any]:
    record = letter.delivery
    last = record.attempts[-1] if record.attempts else None
    error: dict[str, Any] = {"message": record.error or ""}
    if last is not None and last.status is not None:
        error["status"] = last.status
    return {
        "deadLetterId": record.id,
        "subscriptionId": record.subscription_id,
        "functionId": record.function_id,
        "eventId": letter.event.id,
        "source": letter.event.source,
        "receivedAt": _time(letter.event.received_at),
        "error": error,
        "attempts": [_attempt(attempt) for attempt in record.attempts],
        "event": cloudevents.to_dict(stored_event(letter.event.payload)),
    }


@router.get("/events/{event_id:path}", summary="The life of an event: where it went, and how")
async def get_event(
    request: Request,
    space: Space,
    event_id: EventId,
    source: Annotated[str | None, Query(description="Narrow to this source")] = None,
) -> Response:
    lives = await _queue(request).life(space, event_id, source)
    if not lives:
        where = f' from source "{source}"' if source is not None else ""
        raise NotFound(
            f'Event "{event_id}"{where} not found in space "{space}" (never received here, '
            "or past the retention)."
        )
    return _json({"events": [_life(life) for life in lives]})


@router.get("/deadletters", summary="List dead letters, newest first")
async def list_dead_letters(
    request: Request,
    space: Space,
    subscription_id: Annotated[str | None, Query(alias="subscriptionId")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    letters = await _queue(request).dead_letters(space, subscription_id, limit)
    return _json({"deadLetters": [_dead_letter(letter) for letter in letters]})


@router.get("/deadletters/{dead_letter_id}", summary="Get a dead letter")
async def get_dead_letter(request: Request, space: Space, dead_letter_id: DeadLetterId) -> Response:
    letter = await _queue(request).dead_letter_get(space, dead_letter_id)
    if letter is None:
        raise NotFound(f'Dead letter "{dead_letter_id}" not found in space "{space}".')
    return _json(_dead_letter(letter))


@router.delete("/deadletters/{dead_letter_id}", status_code=204, summary="Give up on a dead letter")
async def delete_dead_letter(request: Request, space: Space, dead_letter_id: DeadLetterId) -> None:
    if not await _queue(request).dead_letter_delete(space, dead_letter_id):
        raise NotFound(f'Dead letter "{dead_letter_id}" not found in space "{space}".')


@router.post("/deadletters/redrive", summary="Queue dead letters again (all, or a subscription's)")
async def redrive(request: Request, space: Space) -> Response:
    raw = await request.body()
    body: Any = {}
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise ValidationFailed(f"The request body is not valid JSON: {error}.") from None
    if not isinstance(body, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    subscription_id = body.get("subscriptionId")
    if subscription_id is not None and not isinstance(subscription_id, str):
        raise ValidationFailed("subscriptionId must be a string.")
    count = await _queue(request).redrive(space, subscription_id)
    return _json({"redriven": count})
