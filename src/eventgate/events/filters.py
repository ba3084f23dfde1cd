"""Subscription filters: exact match on CloudEvents attributes and extensions.

As a Knative Trigger's `filter.attributes`: every named attribute must be present; a non-empty
value must equal the attribute's canonical string exactly (case-sensitive; booleans are
`true`/`false`); an empty value only asks that the attribute be present. `data` is never looked
at. No filter matches every event.
"""

from eventgate.events.envelope import CloudEvent

_CONTEXT = frozenset(
    ("specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time")
)


def attribute(event: CloudEvent, name: str) -> str | None:
    """The canonical string of an attribute or extension, or None when the event has none."""
    value = getattr(event, name) if name in _CONTEXT else event.extensions.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def matches(filter_: dict[str, str] | None, event: CloudEvent) -> bool:
    """Whether `event` passes a subscription's filter."""
    if not filter_:
        return True
    for name, expected in filter_.items():
        value = attribute(event, name)
        if value is None or (expected and value != expected):
            return False
    return True
