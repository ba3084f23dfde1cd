"""The configuration resources: functions, subscriptions, CORS and event types, with their ids.

These are the shapes stored in the config store (as JSON) and served by the config API. The field
names follow the Event Gateway's API so that its clients and the seed tutorial work unchanged.
"""

import re
from base64 import urlsafe_b64encode
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-zA-Z0-9.\-_]+$"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
HTTP_EVENT_TYPE = "http.request"
DEFAULT_SPACE = "default"

_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as `PT5S`, `PT0.5S` or `P1DT2H`."""
    match = _DURATION.match(text)
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"{text!r} is not an ISO-8601 duration such as 'PT5S' or 'PT0.5S'")
    parts = {name: float(value) for name, value in match.groupdict().items() if value}
    return (
        parts.get("days", 0.0) * 86400
        + parts.get("hours", 0.0) * 3600
        + parts.get("minutes", 0.0) * 60
        + parts.get("seconds", 0.0)
    )


def path_escape(path: str) -> str:
    """Go's `url.PathEscape`: escape everything that is not safe inside one path segment."""
    return quote(path, safe="-_.~$&+:=@")


class Resource(BaseModel):
    """Common base: unknown fields are rejected so typos surface as 400s, not silent no-ops."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


def _normalize_path(value: str) -> str:
    return value if value.startswith("/") else "/" + value


def _normalize_method(value: str) -> str:
    method = value.upper()
    if method not in HTTP_METHODS:
        raise ValueError(f"method {value!r} must be one of {', '.join(HTTP_METHODS)}")
    return method


class HttpProvider(Resource):
    """How an `http` function is reached: its URL, call mode and per-call timeout."""

    url: str
    mode: Literal["eventgateway", "cloudevents", "proxy"] = "eventgateway"
    timeout: str | None = Field(default=None, description="ISO-8601 duration, e.g. PT5S")

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"provider.url {value!r} must be an http:// or https:// URL")
        return value

    _timeout_is_duration = field_validator("timeout")(_check_duration)


class Function(Resource):
    """A registered function: today an HTTP endpoint (`type: http`)."""

    space: str = DEFAULT_SPACE
    function_id: str = Field(alias="functionId", pattern=NAME_PATTERN, min_length=1)
    type: Literal["http"]
    provider: HttpProvider
    metadata: dict[str, str] = Field(default_factory=dict)


class Subscription(Resource):
    """Binds an event type (and for HTTP events a method and path) to a function.

    Accepts the Event Gateway 0.9 shape (`type`, `eventType`) and the older shape of the seed
    tutorial (`event: "http"`), which keeps its old id form `http,POST,%2F`.
    """

    space: str = DEFAULT_SPACE
    subscription_id: str | None = Field(default=None, alias="subscriptionId")
    type: Literal["sync", "async"] = "sync"
    event_type: str = Field(default=HTTP_EVENT_TYPE, alias="eventType", pattern=NAME_PATTERN)
    event: str | None = Field(default=None, description="legacy field of the seed tutorial")
    function_id: str = Field(alias="functionId", pattern=NAME_PATTERN, min_length=1)
    path: str = "/"
    method: str = "POST"
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _legacy_event_field(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("event") is not None and "eventType" not in data:
            event = data["event"]
            data = dict(data)
            if event == "http":
                data["eventType"] = HTTP_EVENT_TYPE
                data.setdefault("type", "sync")
            else:
                data["eventType"] = event
                data.setdefault("type", "async")
        return data

    _path = field_validator("path")(_normalize_path)
    _method = field_validator("method")(_normalize_method)

    @model_validator(mode="after")
    def _assign_id(self) -> "Subscription":
        if self.subscription_id is None:
            self.subscription_id = self.compute_id()
        return self

    def compute_id(self) -> str:
        """The id the Event Gateway gives this subscription (legacy or 0.8+ form)."""
        escaped = path_escape(self.path)
        if self.event == "http":
            return f"http,{self.method},{escaped}"
        if self.event is not None:
            return f"{self.event},{self.function_id},{escaped}"
        if self.type == "sync":
            raw = f"sync,{self.event_type},{escaped},{self.method}"
        else:
            raw = f"async,{self.event_type},{self.function_id},{escaped},{self.method}"
        return urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()

    @property
    def route_key(self) -> tuple[str, str, str]:
        """What makes a sync subscription unique: one function per event type, method and path."""
        return (self.event_type, self.method, self.path)


class Cors(Resource):
    """CORS for one method and path on the events port; the gateway answers preflights itself."""

    space: str = DEFAULT_SPACE
    cors_id: str | None = Field(default=None, alias="corsId")
    method: str = "GET"
    path: str = "/"
    allowed_origins: list[str] = Field(default_factory=lambda: ["*"], alias="allowedOrigins")
    allowed_methods: list[str] = Field(
        default_factory=lambda: ["HEAD", "GET", "POST"], alias="allowedMethods"
    )
    allowed_headers: list[str] = Field(
        default_factory=lambda: ["Origin", "Accept", "Content-Type"], alias="allowedHeaders"
    )
    allow_credentials: bool = Field(default=False, alias="allowCredentials")
    metadata: dict[str, str] = Field(default_factory=dict)

    _path = field_validator("path")(_normalize_path)
    _method = field_validator("method")(_normalize_method)

    @model_validator(mode="after")
    def _assign_id(self) -> "Cors":
        if self.cors_id is None:
            self.cors_id = self.method + path_escape(self.path)
        return self


class EventType(Resource):
    """A named event type; an authorizer and a data schema come with the delivery work."""

    space: str = DEFAULT_SPACE
    name: str = Field(pattern=NAME_PATTERN, min_length=1)
    authorizer_id: str | None = Field(default=None, alias="authorizerId")
    metadata: dict[str, str] = Field(default_factory=dict)


def store_key(kind: str, space: str, resource_id: str) -> str:
    """Where a resource lives in the config store: `<kind>/<space>/<id>`."""
    return f"{kind}/{space}/{resource_id}"
