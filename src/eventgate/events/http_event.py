"""The `http.request` event and the CloudEvents 0.1 envelope eventgate wraps events in.

The shapes are the Event Gateway's (reference section 2.1-2.3), so functions written for it work
unchanged: `data` is `{headers, query, body, host, path, method, params}`; header names are in
Go's canonical form (`Content-Type`) with repeated headers joined by ", "; `query` maps each name
to its list of values; the body is normalized by content type (see `normalize_body`).
"""

import base64
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs

import orjson

from eventgate.dataplane.types import Headers, Request
from eventgate.events.ids import uuid4_text
from eventgate.model import HTTP_EVENT_TYPE

CLOUDEVENTS_VERSION = "0.1"
SOURCE = "https://serverless.com/event-gateway/#transformationVersion=0.1"
EXTENSIONS = {"eventgateway": {"transformed": "true", "transformation-version": "0.1"}}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

_canonical_names: dict[bytes, str] = {}


def canonical_name(name: bytes) -> str:
    """Go's canonical header name: `content-type` → `Content-Type` (memoized)."""
    text = _canonical_names.get(name)
    if text is None:
        decoded = name.decode("latin-1")
        text = "-".join(part[:1].upper() + part[1:].lower() for part in decoded.split("-"))
        if len(_canonical_names) < 4096:  # bounded: names come from clients
            _canonical_names[name] = text
    return text


def flatten_headers(headers: Headers) -> dict[str, str]:
    """One string per header name; repeated headers joined with ", "."""
    flat: dict[str, str] = {}
    for name, value in headers:
        key = canonical_name(name)
        text = value.decode("latin-1")
        flat[key] = f"{flat[key]}, {text}" if key in flat else text
    return flat


def media_type(content_type: str | None) -> tuple[str, str | None]:
    """The lower-case media type of a Content-Type value and its charset, if any."""
    if not content_type:
        return "", None
    kind, _, rest = content_type.partition(";")
    charset = None
    for param in rest.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return kind.strip().lower(), charset


def is_json_type(kind: str) -> bool:
    return kind == "application/json" or kind.endswith("+json")


def normalize_body(body: bytes, content_type: str | None) -> object:
    """The body as it goes into `data`: JSON types that parse as an object → that object;
    text and form types → a string; anything else (or text that does not decode) → base64."""
    if not body:  # whatever the type, that is ""
        return ""
    kind, charset = media_type(content_type)
    if is_json_type(kind):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    elif kind.startswith("text/") or kind in FORM_TYPES:
        try:
            return body.decode(charset or "utf-8")
        except (LookupError, UnicodeDecodeError):
            pass
    return base64.b64encode(body).decode("ascii")


def http_event_data(request: Request, body: bytes, params: dict[str, str]) -> dict[str, object]:
    """The `data` of an `http.request` event for `request` with its (already read) body."""
    content_type = request.header(b"content-type")
    query = request.query_string.decode("latin-1")
    return {
        "headers": flatten_headers(request.headers),
        "query": parse_qs(query, keep_blank_values=True) if query else {},
        "body": normalize_body(body, content_type.decode("latin-1") if content_type else None),
        "host": (request.header(b"host") or b"").decode("latin-1"),
        "path": request.path,
        "method": request.method,
        "params": params,
    }


def now_rfc3339() -> str:
    """The current UTC time in RFC 3339, e.g. `2018-05-08T22:16:15.123456Z` (the date and time
    of day are formatted once a second)."""
    now = time.time()
    second = int(now)
    if second != _clock.second:
        _clock.second = second
        _clock.prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{_clock.prefix}{int((now - second) * 1_000_000):06d}Z"


class _Clock:
    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""


_clock = _Clock()


def envelope(
    event_type: str,
    data: object,
    content_type: str,
    *,
    event_type_version: str | None = None,
) -> dict[str, object]:
    """A CloudEvents 0.1 envelope for an event eventgate created (marked as transformed)."""
    event: dict[str, object] = {"eventType": event_type}
    if event_type_version:
        event["eventTypeVersion"] = event_type_version
    event.update(
        cloudEventsVersion=CLOUDEVENTS_VERSION,
        source=SOURCE,
        eventID=uuid4_text(),
        eventTime=now_rfc3339(),
        contentType=content_type,
        extensions=EXTENSIONS,
        data=data,
    )
    return event


def http_request_event(request: Request, body: bytes, params: dict[str, str]) -> dict[str, object]:
    """The whole `http.request` event for a sync HTTP subscription, as the Event Gateway sends
    it; `contentType` is the request's media type (`application/octet-stream` if none)."""
    kind, _ = media_type((request.header(b"content-type") or b"").decode("latin-1"))
    data = http_event_data(request, body, params)
    return envelope(HTTP_EVENT_TYPE, data, kind or DEFAULT_CONTENT_TYPE)


def envelope_template(
    request: Request, params: dict[str, str]
) -> tuple[bytes, bytes, bytes, bytes]:
    """`http_request_event` for `request` as JSON cut around its `eventID`, its `eventTime` and
    its `data.body`: join the parts with a new id, time and body (JSON, `normalize_body`'s) for
    each call of requests with the same head."""
    event = http_request_event(request, b"", params)
    text = orjson.dumps(event)
    before_id, _, rest = text.partition(str(event["eventID"]).encode())
    between, _, rest = rest.partition(str(event["eventTime"]).encode())
    return before_id, between, *_around_body(rest)


def data_template(request: Request, params: dict[str, str]) -> tuple[bytes, bytes]:
    """`http_event_data` for `request` as JSON cut around its `body`, as `envelope_template`."""
    return _around_body(orjson.dumps(http_event_data(request, b"", params)))


def _around_body(text: bytes) -> tuple[bytes, bytes]:
    """The JSON of an `http.request` event's data (of a request without a body) cut around its
    empty `body`, which follows `query` (always an object) and precedes `host`."""
    before, _, after = text.partition(b'},"body":"","host":')
    return before + b'},"body":', b',"host":' + after
