"""The Event Gateway's CloudEvents 0.1 envelope, converted to and from CloudEvents 1.0.

In: structured (`application/cloudevents+json` with `cloudEventsVersion` "0.1") and binary (the
`CE-EventType`, `CE-CloudEventsVersion`, `CE-Source`, `CE-EventID` headers, optional
`CE-EventTypeVersion`, `CE-EventTime`, `CE-SchemaURL`, and `CE-X-<Name>` extensions), reference
section 2.1-2.2. Messages name the 0.1 attributes. 0.1 extensions may hold any JSON: names are
lower-cased to `[a-z0-9]`, and values that are not strings, booleans or integers become JSON text.
`eventTypeVersion` becomes the `eventtypeversion` extension.

Out: `to_dict` builds the 0.1 envelope the `eventgateway` call mode posts to functions.
"""

import base64
import re
from typing import Any

import orjson

from eventgate.dataplane.types import Headers
from eventgate.events.envelope import (
    CONTEXT,
    INT32,
    CloudEvent,
    ExtensionValue,
    InvalidEvent,
    body_to_data,
    validate,
)

VERSION = "0.1"
HEADERS = (b"ce-eventtype", b"ce-cloudeventsversion", b"ce-source", b"ce-eventid")
TYPE_VERSION = "eventtypeversion"
# 1.0 attribute → the 0.1 name users sent, for error messages.
NAMES = {
    "type": "eventType",
    "id": "eventID",
    "time": "eventTime",
    "dataschema": "schemaURL",
    "datacontenttype": "contentType",
}
_HEADERS = {
    b"ce-eventtype": "eventType",
    b"ce-cloudeventsversion": "cloudEventsVersion",
    b"ce-source": "source",
    b"ce-eventid": "eventID",
    b"ce-eventtypeversion": "eventTypeVersion",
    b"ce-eventtime": "eventTime",
    b"ce-schemaurl": "schemaURL",
}


def from_dict(obj: dict[str, Any]) -> CloudEvent:
    """A 0.1 envelope (decoded JSON) as a validated 1.0 event."""
    version = obj.get("cloudEventsVersion")
    if version != VERSION:
        raise InvalidEvent(f"attribute 'cloudEventsVersion' must be {VERSION!r}, got {version!r}")
    raw_extensions = obj.get("extensions") or {}
    if not isinstance(raw_extensions, dict):
        raise InvalidEvent("attribute 'extensions' must be a JSON object")
    extensions = {_name(key): _value(value) for key, value in raw_extensions.items()}
    if obj.get("eventTypeVersion") is not None:
        extensions[TYPE_VERSION] = obj["eventTypeVersion"]
    event = CloudEvent(
        id=obj.get("eventID"),  # validate() checks the types
        source=obj.get("source"),
        type=obj.get("eventType"),
        datacontenttype=obj.get("contentType"),
        dataschema=obj.get("schemaURL"),
        time=obj.get("eventTime"),
        extensions=extensions,
        data=obj.get("data"),
    )
    return validate(event, NAMES)


def from_binary(headers: Headers, body: bytes) -> CloudEvent:
    """A 0.1 binary-mode request (`CE-*` headers, Content-Type, body) as a validated 1.0 event."""
    envelope: dict[str, Any] = {}
    extensions: dict[str, str] = {}
    content_type: str | None = None
    for name, raw in headers:
        value = raw.decode("utf-8", "replace")
        if name == b"content-type":
            content_type = value
        elif name in _HEADERS:
            envelope[_HEADERS[name]] = value
        elif name.startswith(b"ce-x-"):
            extensions[name[5:].decode("latin-1")] = value
    envelope["extensions"] = extensions
    envelope["contentType"] = content_type
    event = from_dict(envelope)
    event.data = body_to_data(body, content_type)
    return event


def to_dict(event: CloudEvent) -> dict[str, Any]:
    """The 0.1 envelope of a 1.0 event; bytes data is base64 text, as the Event Gateway sent it."""
    extensions = dict(event.extensions)
    envelope: dict[str, Any] = {
        "eventType": event.type,
        "eventTypeVersion": extensions.pop(TYPE_VERSION, None),
        "cloudEventsVersion": VERSION,
        "source": event.source,
        "eventID": event.id,
        "eventTime": event.time,
        "schemaURL": event.dataschema,
        "contentType": event.datacontenttype,
        "extensions": extensions or None,
    }
    envelope = {key: value for key, value in envelope.items() if value is not None}
    if isinstance(event.data, bytes):
        envelope["data"] = base64.b64encode(event.data).decode("ascii")
    elif event.data is not None:
        envelope["data"] = event.data
    return envelope


def _name(key: str) -> str:
    name = re.sub(r"[^a-z0-9]", "", str(key).lower())
    if not name or name in CONTEXT or name == "data":
        raise InvalidEvent(f"extension {key!r} has no usable CloudEvents 1.0 name")
    return name


def _value(value: Any) -> ExtensionValue:
    if isinstance(value, str | bool) or (isinstance(value, int) and value in INT32):
        return value
    return orjson.dumps(value).decode()
