"""The configuration resources: functions, subscriptions, CORS and event types, with their ids.

These are the shapes stored in the config store (as JSON) and served by the config API. The field
names follow the Event Gateway's API so that its clients and the seed tutorial work unchanged.
"""

import re
from base64 import urlsafe_b64encode
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-zA-Z0-9.\-_]+$"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
HTTP_EVENT_TYPE = "http.request"
DEFAULT_SPACE = "default"
ATTRIBUTE_NAME = re.compile(r"[a-z0-9]+")
HANDLER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

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


def _check_json_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        try:
            validator_for(value).check_schema(value)
        except SchemaError as error:
            raise ValueError(f"not a valid JSON Schema: {error.message}") from None
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


class FunctionSchema(Resource):
    """JSON Schemas a python function's input (`in`) and result (`out`) must match."""

    input: dict[str, Any] | None = Field(default=None, alias="in")
    output: dict[str, Any] | None = Field(default=None, alias="out")

    _schemas = field_validator("input", "output")(_check_json_schema)


class PythonProvider(Resource):
    """How a `python` function runs in eventgate's own runtime (Dispatch's function model):
    `source` is the base64 of a `.tar.gz` of its folder, `handler` is `module.function` in it,
    `image` names an image of the same space. The limits are per call (`timeout`, `memoryMB`)
    and per node (`concurrency` calls at once); `secrets` name secrets whose keys the handler
    finds in `context["secrets"]`."""

    image: str = Field(pattern=NAME_PATTERN, min_length=1)
    handler: str = Field(description="module.function, e.g. hello.handle")
    source: str = Field(min_length=1, description="base64 of a .tar.gz of the source folder")
    timeout: str | None = Field(default=None, description="ISO-8601 duration, e.g. PT30S")
    memory_mb: int | None = Field(default=None, alias="memoryMB", ge=16, le=1 << 20)
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    io_schema: FunctionSchema | None = Field(default=None, alias="schema")

    @field_validator("timeout")
    @classmethod
    def _timeout_in_range(cls, value: str | None) -> str | None:
        if value is not None and not 0 < parse_duration(value) <= 86400:
            raise ValueError("timeout must be above zero and at most P1D")
        return value

    @field_validator("handler")
    @classmethod
    def _handler_names_a_function(cls, value: str) -> str:
        if not re.fullmatch(HANDLER_PATTERN, value):
            raise ValueError(f"{value!r} must be module.function, e.g. hello.handle")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not ENV_NAME.fullmatch(name) or "\0" in text:
                raise ValueError(f"env: {name!r} is not a valid variable name (or has a NUL)")
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"secrets: {name!r} is not a valid secret name")
        return list(dict.fromkeys(value))


_PROVIDERS: dict[str, type[Resource]] = {"http": HttpProvider, "python": PythonProvider}


class Function(Resource):
    """A registered function: an HTTP endpoint (`type: http`, `HttpProvider`) or Python code
    run by eventgate itself (`type: python`, `PythonProvider`)."""

    space: str = DEFAULT_SPACE
    function_id: str = Field(alias="functionId", pattern=NAME_PATTERN, min_length=1)
    type: Literal["http", "python"]
    provider: HttpProvider | PythonProvider
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _provider_of_type(cls, data: object) -> object:
        """Read `provider` as the model its `type` names (a plain union would take any match)."""
        if not isinstance(data, dict) or not isinstance(data.get("provider"), dict):
            return data
        model = _PROVIDERS.get(data.get("type"))  # type: ignore[arg-type]
        if model is None:
            return data  # the `type` field reports the error
        try:
            return {**data, "provider": model.model_validate(data["provider"])}
        except ValidationError as error:
            raise ValueError(_describe("provider", error)) from None

    @model_validator(mode="after")
    def _provider_matches_type(self) -> "Function":
        if not isinstance(self.provider, _PROVIDERS[self.type]):
            raise ValueError(f"provider: not the provider of a {self.type!r} function")
        return self


def _describe(prefix: str, error: ValidationError) -> str:
    """`provider.image: Field required; ...` from a nested model's errors."""
    parts = []
    for each in error.errors():
        where = ".".join([prefix, *(str(part) for part in each["loc"])])
        message = str(each["msg"]).removeprefix("Value error, ")
        parts.append(message if message.startswith(where) else f"{where}: {message}")
    return "; ".join(parts)


class DeliverySpec(Resource):
    """How an async subscription's deliveries are retried (Knative's DeliverySpec, plus
    `maxBackoff` and `concurrency`). Unset fields take the defaults in `delivery/retry.py`:
    retry 10, exponential from PT1S, at most PT5M apart, the function's timeout, 16 in flight."""

    retry: int | None = Field(default=None, ge=0, le=1000, description="retries after the first")
    backoff_policy: Literal["exponential", "linear"] | None = Field(
        default=None, alias="backoffPolicy"
    )
    backoff_delay: str | None = Field(default=None, alias="backoffDelay", description="e.g. PT1S")
    max_backoff: str | None = Field(default=None, alias="maxBackoff", description="e.g. PT5M")
    timeout: str | None = Field(default=None, description="per attempt, e.g. PT10S")
    concurrency: int | None = Field(default=None, ge=1, le=10_000, description="in flight")

    _durations = field_validator("backoff_delay", "max_backoff", "timeout")(_check_duration)


class Subscription(Resource):
    """Binds an event type (and for HTTP events a method and path) to a function.

    Accepts the Event Gateway 0.9 shape (`type`, `eventType`) and the older shape of the seed
    tutorial (`event: "http"`), which keeps its old id form `http,POST,%2F`. Async ones may add
    a `filter` (exact match on CloudEvents attributes and extensions; an empty value only asks
    that the attribute be present, as a Knative Trigger's `filter.attributes`) and `delivery`.
    """

    space: str = DEFAULT_SPACE
    subscription_id: str | None = Field(default=None, alias="subscriptionId")
    type: Literal["sync", "async"] = "sync"
    event_type: str = Field(default=HTTP_EVENT_TYPE, alias="eventType", pattern=NAME_PATTERN)
    event: str | None = Field(default=None, description="legacy field of the seed tutorial")
    function_id: str = Field(alias="functionId", pattern=NAME_PATTERN, min_length=1)
    path: str = "/"
    method: str = "POST"
    filter: dict[str, str] | None = None
    delivery: DeliverySpec | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("filter")
    @classmethod
    def _filter_names_attributes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if not ATTRIBUTE_NAME.fullmatch(name):
                raise ValueError(f"filter: {name!r} is not a CloudEvents attribute name (a-z, 0-9)")
        return value

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
        if self.type == "sync" and (self.filter is not None or self.delivery is not None):
            raise ValueError("filter and delivery apply to async subscriptions only")
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
    """A named event type. `schema` (JSON Schema) is what every event's `data` must match, and
    `authorizerId` names a function that allows or denies each event before it is accepted."""

    space: str = DEFAULT_SPACE
    name: str = Field(pattern=NAME_PATTERN, min_length=1)
    authorizer_id: str | None = Field(default=None, alias="authorizerId")
    data_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="JSON Schema for the events' data"
    )
    metadata: dict[str, str] = Field(default_factory=dict)

    _schema = field_validator("data_schema")(_check_json_schema)


def store_key(kind: str, space: str, resource_id: str) -> str:
    """Where a resource lives in the config store: `<kind>/<space>/<id>`."""
    return f"{kind}/{space}/{resource_id}"
