"""Events as the queue stores them: the CloudEvents JSON format (structured mode) of the event
as it was accepted. Stored events were validated on the way in, so reading one back skips the
validation."""

import base64

import orjson

from eventgate.events.envelope import ATTRIBUTES, CloudEvent


def stored_event(payload: bytes) -> CloudEvent:
    """The event in a queue payload (written by `cloudevents.to_json`)."""
    members = orjson.loads(payload)
    data = members.pop("data", None)
    if "data_base64" in members:
        data = base64.b64decode(members.pop("data_base64"))
    context = {name: members.pop(name, None) for name in ATTRIBUTES}
    specversion = members.pop("specversion")
    return CloudEvent(specversion=specversion, extensions=members, data=data, **context)
