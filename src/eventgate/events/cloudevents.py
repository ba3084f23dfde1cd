"""CloudEvents 1.0 over HTTP: classify, parse and serialize structured, binary and batch events.

`classify(headers)` tells whether a request is a CloudEvent at all (else it stays an HTTP event)
and in which mode; `parse(mode, headers, body)` decodes and validates it, raising `InvalidEvent`
(400) with a message naming the attribute at fault. The Event Gateway's legacy 0.1 envelope, in
both modes, is converted to 1.0 on the way in (`eventgate.events.legacy`). The event value and
its validation live in `eventgate.events.envelope` and are re-exported here.
"""

import base64
import binascii
import re
from enum import StrEnum
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import orjson

from eventgate.dataplane.types import Headers
from eventgate.events import legacy
from eventgate.events.envelope import (
    ATTRIBUTES,
    SPECVERSION,
    SYSTEM_TYPE_PREFIX,
    CloudEvent,
    ExtensionValue,
    InvalidEvent,
    body_to_data,
    data_to_body,
    is_system_type,
    load_json,
    media_type,
    reject_system_type,
    validate,
)

__all__ = [
    "BATCH_CONTENT_TYPE",
    "SPECVERSION",
    "STRUCTURED_CONTENT_TYPE",
    "SYSTEM_TYPE_PREFIX",
    "CloudEvent",
    "ExtensionValue",
    "InvalidEvent",
    "Mode",
    "classify",
    "from_binary",
    "from_dict",
    "from_json",
    "is_system_type",
    "parse",
    "reject_system_type",
    "to_batch",
    "to_binary",
    "to_dict",
    "to_json",
    "validate",
]

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')
_NEEDS_NO_QUOTING = re.compile(r"[!#$&-~]*")  # printable ASCII but space, '"' and '%'


class Mode(StrEnum):
    """How a request carries CloudEvents (HTTP protocol binding, plus the legacy 0.1 headers)."""

    STRUCTURED = "structured"
    BINARY = "binary"
    BATCH = "batch"
    LEGACY_BINARY = "legacy-binary"


# Parsing


def classify(headers: Headers) -> Mode | None:
    """The CloudEvents mode of a request, or None when it is a plain HTTP event."""
    content_type = b""
    seen: set[bytes] = set()
    for name, value in headers:
        if name == b"content-type":
            content_type = value
        elif name.startswith(b"ce-"):
            seen.add(name)
    if not content_type and not seen:  # the plain HTTP event's usual case
        return None
    kind = media_type(content_type.decode("latin-1"))
    if kind.startswith("application/cloudevents-batch"):
        return Mode.BATCH
    if kind.startswith("application/cloudevents"):
        return Mode.STRUCTURED
    if b"ce-specversion" in seen:
        return Mode.BINARY
    if seen.issuperset(legacy.HEADERS):
        return Mode.LEGACY_BINARY
    return None


def parse(mode: Mode, headers: Headers, body: bytes, *, max_batch: int = 1000) -> list[CloudEvent]:
    """Decode and validate the events of a request `classify` recognized: one, or a batch."""
    if mode is Mode.BINARY:
        return [from_binary(headers, body)]
    if mode is Mode.LEGACY_BINARY:
        return [legacy.from_binary(headers, body)]
    _check_format(headers, mode)
    if mode is Mode.STRUCTURED:
        return [from_json(body)]
    items = load_json(body, "the batch")
    if not isinstance(items, list):
        raise InvalidEvent("a CloudEvents batch must be a JSON array of events")
    if len(items) > max_batch:
        raise InvalidEvent(f"a batch holds at most {max_batch} events, got {len(items)}")
    events = []
    for index, item in enumerate(items):
        try:
            events.append(from_dict(item))
        except InvalidEvent as error:
            raise InvalidEvent(f"event {index} in the batch: {error.message}") from None
    return events


def from_json(body: bytes) -> CloudEvent:
    """One event in the JSON format (structured mode), 1.0 or the legacy 0.1 envelope."""
    return from_dict(load_json(body, "the event"))


def from_dict(obj: object) -> CloudEvent:
    """One event from a decoded JSON object; null members are unset."""
    if not isinstance(obj, dict):
        raise InvalidEvent("a structured CloudEvent must be a JSON object")
    if "specversion" not in obj and "cloudEventsVersion" in obj:
        return legacy.from_dict(obj)
    if None in obj.values():
        members = {name: value for name, value in obj.items() if value is not None}
    else:
        members = dict(obj)
    if "data" in members and "data_base64" in members:
        raise InvalidEvent("attributes 'data' and 'data_base64' are mutually exclusive")
    data = members.pop("data", None)
    if "data_base64" in members:
        data = _b64decode(members.pop("data_base64"))
    context = {name: members.pop(name, None) for name in ATTRIBUTES}
    specversion = members.pop("specversion", None)
    if not isinstance(specversion, str):
        raise InvalidEvent("attribute 'specversion' is required and must be a string")
    return validate(CloudEvent(specversion=specversion, extensions=members, data=data, **context))


def from_binary(headers: Headers, body: bytes) -> CloudEvent:
    """One event in binary mode: `ce-*` headers (percent-decoded), Content-Type and the body."""
    attributes: dict[str, str] = {}
    content_type: str | None = None
    for name, value in headers:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name.startswith(b"ce-"):
            key = name[3:].decode("latin-1")
            if key in attributes:
                raise InvalidEvent(f"attribute {key!r} appears more than once")
            attributes[key] = decode_header_value(key, value)
    content_type = content_type or attributes.pop("datacontenttype", None)
    context = {name: attributes.pop(name, None) for name in ATTRIBUTES}
    context["datacontenttype"] = content_type
    specversion = attributes.pop("specversion", "")
    data = body_to_data(body, content_type)
    return validate(
        CloudEvent(specversion=specversion, extensions=dict(attributes), data=data, **context)
    )


def decode_header_value(attribute: str, raw: bytes) -> str:
    """Undo an RFC 7230 quoted-string, then percent-decode once; the result must be UTF-8."""
    if len(raw) >= 2 and raw.startswith(b'"') and raw.endswith(b'"'):
        raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent(f"attribute {attribute!r} is not UTF-8 once percent-decoded") from None


def _check_format(headers: Headers, mode: Mode) -> None:
    content_type = next((value for name, value in headers if name == b"content-type"), b"")
    kind = media_type(content_type.decode("latin-1"))
    if not kind.endswith("+json"):
        raise InvalidEvent(f"unsupported {mode} event format {kind!r}", status=415)


def _b64decode(value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidEvent("attribute 'data_base64' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise InvalidEvent("attribute 'data_base64' is not valid base64") from None


# Serializing


def to_dict(event: CloudEvent) -> dict[str, Any]:
    """The event as a JSON-format object: attributes and extensions at the top level."""
    obj: dict[str, Any] = {"specversion": event.specversion}
    for name in ATTRIBUTES:
        value = getattr(event, name)
        if value is not None:
            obj[name] = value
    obj.update(event.extensions)
    if isinstance(event.data, bytes):
        obj["data_base64"] = base64.b64encode(event.data).decode("ascii")
    elif event.data is not None:
        obj["data"] = event.data
    return obj


def to_json(event: CloudEvent) -> bytes:
    """The structured-mode body; send it with `STRUCTURED_CONTENT_TYPE`."""
    return orjson.dumps(to_dict(event))


def to_batch(events: list[CloudEvent]) -> bytes:
    """A batched-mode body; send it with `BATCH_CONTENT_TYPE`."""
    return orjson.dumps([to_dict(event) for event in events])


def to_binary(event: CloudEvent) -> tuple[Headers, bytes]:
    """Binary-mode headers (`ce-*`, percent-encoded where needed; Content-Type) and body."""
    headers: Headers = [(b"ce-specversion", event.specversion.encode())]
    for name in ("id", "source", "type", "dataschema", "subject", "time"):
        value = getattr(event, name)
        if value is not None:
            headers.append((b"ce-" + name.encode(), encode_header_value(value)))
    for name, value in event.extensions.items():
        headers.append((b"ce-" + name.encode(), encode_header_value(value)))
    content_type = event.datacontenttype
    if content_type is None and event.data is not None and not isinstance(event.data, bytes):
        content_type = "application/json"
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    return headers, data_to_body(event.data, content_type)


def encode_header_value(value: ExtensionValue) -> bytes:
    """The canonical string of an attribute value, percent-encoded for an HTTP header."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if _NEEDS_NO_QUOTING.fullmatch(text):
        return text.encode("ascii")
    return quote(text, safe=_HEADER_SAFE).encode("ascii")
