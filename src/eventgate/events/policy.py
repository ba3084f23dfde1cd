"""What an event type asks of its events: a JSON Schema for `data` and an authorizer function.

`EventPolicy.build` runs once per routing snapshot, so the schema is compiled once, not per
event. `check_schema` raises `InvalidEvent` (400) with the validation message and where in the
data it failed.
"""

from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from eventgate.events.envelope import CloudEvent, InvalidEvent
from eventgate.model import EventType, Function


@dataclass(frozen=True, slots=True)
class EventPolicy:
    """One event type's rules in one space, ready to apply."""

    space: str
    event_type: str
    validator: Validator | None
    authorizer_id: str | None
    authorizer: Function | None  # None with an authorizer_id: the function is missing

    @classmethod
    def build(cls, event_type: EventType, authorizer: Function | None) -> "EventPolicy":
        schema: Any = event_type.data_schema
        validator = None
        if schema is not None:
            validator = validator_for(schema)(schema)
        return cls(
            event_type.space, event_type.name, validator, event_type.authorizer_id, authorizer
        )

    def check_schema(self, event: CloudEvent) -> None:
        """Raise InvalidEvent unless the event's data matches the type's schema."""
        if self.validator is None:
            return
        data = event.data
        where = f"the schema of event type {self.event_type!r} in space {self.space!r}"
        if isinstance(data, bytes):
            raise InvalidEvent(
                f"attribute 'data' is binary ({event.datacontenttype or 'no content type'}) "
                f"and cannot match {where}: send JSON data"
            )
        error = best_match(self.validator.iter_errors(data))
        if error is not None:
            path = "".join(f"[{part!r}]" for part in error.absolute_path)
            at = f" at data{path}" if path else ""
            raise InvalidEvent(f"attribute 'data' does not match {where}{at}: {error.message}")
