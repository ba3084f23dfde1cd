"""The CloudEvent value and the spec's rules for its attributes (CloudEvents 1.0).

`CloudEvent.data` is None (no data), `bytes` (binary data: `data_base64` in JSON, the body as is
in binary mode) or a JSON value (a `str` for non-JSON text content types in JSON). A binary-mode
body is read as JSON when its content type is JSON (`*/json`, `*/*+json`) or absent and the body
parses, else kept as bytes. An explicit JSON `null` payload is read as no data.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from eventgate.errors import ValidationFailed

SPECVERSION = "1.0"
SYSTEM_TYPE_PREFIX = "eventgateway."
REQUIRED = ("id", "source", "type")
OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")
ATTRIBUTES = (*REQUIRED, *OPTIONAL)
CONTEXT = frozenset(("specversion", *ATTRIBUTES))
INT32 = range(-(2**31), 2**31)

ExtensionValue = str | int | bool

_NAME = re.compile(r"[a-z0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_URI_HEAD = re.compile(r"[/?#]")


class InvalidEvent(ValidationFailed):
    """A CloudEvent that cannot be accepted; the message names the attribute at fault."""


@dataclass(slots=True)
class CloudEvent:
    """One CloudEvent 1.0. `time` is kept as its RFC 3339 text; see the module doc for `data`."""

    id: str
    source: str
    type: str
    specversion: str = SPECVERSION
    datacontenttype: str | None = None
    dataschema: str | None = None
    subject: str | None = None
    time: str | None = None
    extensions: dict[str, ExtensionValue] = field(default_factory=dict)
    data: Any = None


@lru_cache(maxsize=256)  # clients repeat their content types
def media_type(content_type: str | None) -> str:
    """`Application/JSON; charset=utf-8` → `application/json`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """True for JSON media types: `application/json`, `text/json`, `application/x+json`."""
    kind = media_type(content_type)
    return kind.endswith(("/json", "+json"))


def is_system_type(event_type: str) -> bool:
    """True for event types reserved for the gateway's own system events."""
    return event_type.startswith(SYSTEM_TYPE_PREFIX)


def reject_system_type(event: CloudEvent) -> None:
    """Clients may not emit system events: raise InvalidEvent for a reserved type."""
    if is_system_type(event.type):
        raise InvalidEvent(
            f"attribute 'type' {event.type!r} is reserved: types starting with "
            f"{SYSTEM_TYPE_PREFIX!r} are system events"
        )


def validate(event: CloudEvent, names: dict[str, str] | None = None) -> CloudEvent:
    """Check every attribute against the spec; `names` renames attributes in messages."""
    names = names or {}

    def fail(attribute: str, problem: str) -> InvalidEvent:
        return InvalidEvent(f"attribute {names.get(attribute, attribute)!r} {problem}")

    if event.specversion != SPECVERSION:
        raise fail("specversion", f"must be {SPECVERSION!r}, got {event.specversion!r}")
    for name in ATTRIBUTES:
        value = getattr(event, name)
        if value is None and name not in REQUIRED:
            continue
        if not isinstance(value, str) or not value:
            raise fail(name, "is required" if value is None else "must be a non-empty string")
        if _CONTROL.search(value):
            raise fail(name, "must not contain control characters")
    if not _is_uri_reference(event.source):
        raise fail("source", f"must be a URI-reference, got {event.source!r}")
    if event.dataschema is not None and not _is_uri(event.dataschema):
        raise fail("dataschema", f"must be an absolute URI, got {event.dataschema!r}")
    if event.time is not None and not _is_timestamp(event.time):
        raise fail("time", f"must be an RFC 3339 timestamp, got {event.time!r}")
    for name, value in event.extensions.items():
        if not _NAME.fullmatch(name) or name in CONTEXT or name == "data":
            raise fail(name, "is not a valid extension name: use lower-case letters and digits")
        if isinstance(value, bool) or (isinstance(value, int) and value in INT32):
            continue
        if not isinstance(value, str):
            raise fail(name, "must be a string, a boolean or a 32-bit integer")
        if _CONTROL.search(value):
            raise fail(name, "must not contain control characters")
    return event


def _is_timestamp(text: str) -> bool:
    match = _TIME.fullmatch(text)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    offset = match[8]
    if offset.upper() != "Z" and (int(offset[1:3]) > 23 or int(offset[4:6]) > 59):
        return False
    try:  # a leap second (:60) is valid RFC 3339; datetime cannot hold it
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    return second <= 60


_URI_REFERENCES: set[str] = set()  # texts found valid: sources repeat


def _is_uri_reference(text: str) -> bool:
    if text in _URI_REFERENCES:
        return True
    if not _URI_CHARS.fullmatch(text):
        return False
    head = _URI_HEAD.split(text, maxsplit=1)[0]
    if ":" in head and not _SCHEME.fullmatch(head.split(":", 1)[0]):
        return False
    if len(_URI_REFERENCES) >= 4096:
        _URI_REFERENCES.clear()
    _URI_REFERENCES.add(text)
    return True


def _is_uri(text: str) -> bool:
    scheme, colon, _ = text.partition(":")
    return bool(colon) and bool(_SCHEME.fullmatch(scheme)) and _is_uri_reference(text)


def body_to_data(body: bytes, content_type: str | None) -> Any:
    """A binary-mode body as event data: a JSON value for JSON content types, else bytes.
    Without a content type the body is read as JSON if it is JSON, as the SDKs do."""
    if not body:
        return None
    if content_type is None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
    if is_json(content_type):
        return load_json(body, "attribute 'data'")
    return body


def load_json(body: bytes, what: str) -> Any:
    """Decode JSON, raising InvalidEvent that says `what` was not valid JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(f"{what} is not valid JSON: {error}") from None


def data_to_body(data: Any, content_type: str | None) -> bytes:
    """Event data as a binary-mode body: bytes as they are, text as UTF-8, JSON values encoded."""
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) and not is_json(content_type):
        return data.encode("utf-8")
    return orjson.dumps(data)
