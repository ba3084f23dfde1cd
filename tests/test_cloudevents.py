"""The CloudEvents codec: modes, round trips, validation messages, legacy 0.1, SDK interop."""

from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from cloudevents.core.bindings import http as sdk2_http
from cloudevents.core.v1.event import CloudEvent as Sdk2Event
from cloudevents.v1 import conversion as sdk1_conversion
from cloudevents.v1 import http as sdk1_http

from eventgate.dataplane.types import Headers
from eventgate.errors import ValidationFailed
from eventgate.events import legacy
from eventgate.events.cloudevents import (
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    CloudEvent,
    InvalidEvent,
    Mode,
    classify,
    from_dict,
    parse,
    reject_system_type,
    to_batch,
    to_binary,
    to_dict,
    to_json,
)

FULL = CloudEvent(
    id="a-1",
    source="https://example.com/orders",
    type="com.example.order.created",
    datacontenttype="application/json",
    dataschema="https://example.com/schemas/order.json",
    subject="order/42",
    time="2024-05-01T12:00:00.123+02:00",
    extensions={"tenant": "acme", "sequence": 7, "sampled": True},
    data={"orderId": 42, "items": ["a", "b"]},
)


def as_headers(mapping: dict[str, str]) -> Headers:
    """Headers as the data plane hands them over: lower-case byte names, byte values."""
    return [(name.lower().encode(), value.encode("utf-8")) for name, value in mapping.items()]


def receive(headers: Headers, body: bytes) -> list[CloudEvent]:
    """What the events port will do: classify the request, then parse it."""
    mode = classify(headers)
    assert mode is not None, "not recognized as a CloudEvent"
    return parse(mode, headers, body)


def structured(body: bytes, content_type: str = STRUCTURED_CONTENT_TYPE) -> list[CloudEvent]:
    return receive(as_headers({"content-type": content_type}), body)


def binary(headers: Headers, body: bytes = b"") -> CloudEvent:
    mode = classify(headers)
    assert mode is Mode.BINARY
    [event] = parse(mode, headers, body)
    return event


def minimal(**members: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", **members}


@pytest.mark.parametrize(
    ("headers", "mode"),
    [
        ({"content-type": "application/cloudevents+json"}, Mode.STRUCTURED),
        ({"content-type": "Application/CloudEvents+JSON; charset=UTF-8"}, Mode.STRUCTURED),
        ({"content-type": "application/cloudevents-batch+json"}, Mode.BATCH),
        ({"ce-specversion": "1.0", "content-type": "text/plain"}, Mode.BINARY),
        (
            {
                "ce-eventtype": "t",
                "ce-cloudeventsversion": "0.1",
                "ce-source": "/",
                "ce-eventid": "1",
            },
            Mode.LEGACY_BINARY,
        ),
        ({"content-type": "application/json"}, None),
        ({"ce-eventtype": "t", "ce-source": "/s"}, None),
        ({}, None),
    ],
)
def test_classify(headers: dict[str, str], mode: Mode | None) -> None:
    assert classify(as_headers(headers)) == mode


def test_structured_round_trip_keeps_every_attribute() -> None:
    body = to_json(FULL)
    assert orjson.loads(body)["tenant"] == "acme"  # extensions sit at the top level
    assert structured(body) == [FULL]


@pytest.mark.parametrize(
    ("data", "content_type", "member"),
    [
        (b"\x00\x01binary", "application/octet-stream", "data_base64"),
        ("<a>text</a>", "application/xml", "data"),
        ([1, 2, 3], None, "data"),
        ("a JSON string", "application/json", "data"),
    ],
)
def test_structured_data_forms(data: Any, content_type: str | None, member: str) -> None:
    event = CloudEvent(id="1", source="/s", type="t", datacontenttype=content_type, data=data)
    assert member in to_dict(event)
    assert structured(to_json(event)) == [event]


def test_null_members_are_unset() -> None:
    [event] = structured(orjson.dumps(minimal(subject=None, data=None, tenant=None)))
    assert (event.subject, event.data, event.extensions) == (None, None, {})


def test_binary_round_trip_percent_encodes_header_values() -> None:
    event = CloudEvent(
        id="id with spaces",
        source="/s",
        type="t",
        subject='quote " percent % and é ✓',
        extensions={"note": "tab-free, 100%", "count": 3, "flag": False},
        datacontenttype="application/json",
        data={"ok": True},
    )
    headers, body = to_binary(event)
    values = dict(headers)
    assert values[b"ce-subject"] == b"quote%20%22%20percent%20%25%20and%20%C3%A9%20%E2%9C%93"
    assert values[b"ce-count"] == b"3" and values[b"ce-flag"] == b"false"
    assert all(0x21 <= byte <= 0x7E for _, value in headers for byte in value)
    decoded = binary(headers, body)
    assert decoded.extensions == {"note": "tab-free, 100%", "count": "3", "flag": "false"}
    decoded.extensions = event.extensions  # binary mode carries every extension as a string
    assert decoded == event


def test_binary_mode_decodes_percent_and_quoted_strings() -> None:
    headers = as_headers(
        {
            "ce-specversion": "1.0",
            "ce-id": "%E2%9C%93",
            "ce-source": "/s",
            "ce-subject": '"quoted \\"subject\\""',
            "ce-type": "t",
            "ce-tenant": "a%20b",
            "content-type": "text/plain; charset=utf-8",
        }
    )
    event = binary(headers, b"hello")
    assert (event.id, event.subject, event.extensions) == (
        "✓",
        'quoted "subject"',
        {"tenant": "a b"},
    )
    assert (event.datacontenttype, event.data) == ("text/plain; charset=utf-8", b"hello")


def test_binary_body_becomes_json_data_for_json_content_types() -> None:
    headers = as_headers({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"})
    assert binary([*headers, (b"content-type", b"application/vnd.x+json")], b"[1]").data == [1]
    assert binary(headers, b'{"a": 1}').data == {"a": 1}  # no content type: JSON if it parses
    assert binary(headers, b"not json").data == b"not json"
    assert binary(headers).data is None


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"ce-id": "%FF"}, "attribute 'id' is not UTF-8"),
        ({"ce-tenant": "a", "ce-Tenant": "b"}, "attribute 'tenant' appears more than once"),
        ({"ce-my-ext": "x"}, "attribute 'my-ext' is not a valid extension name"),
    ],
)
def test_binary_mode_errors(headers: dict[str, str], message: str) -> None:
    base = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
    raw = as_headers(base)
    raw = [(name, value) for name, value in raw if name.decode() not in headers]
    raw += as_headers(headers)
    with pytest.raises(InvalidEvent, match=message):
        parse(Mode.BINARY, raw, b"")


def test_binary_json_body_that_does_not_parse_names_data() -> None:
    headers = as_headers(
        {
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-source": "/s",
            "ce-type": "t",
            "content-type": "application/json",
        }
    )
    with pytest.raises(InvalidEvent, match="attribute 'data' is not valid JSON"):
        parse(Mode.BINARY, headers, b"{oops")


def test_batch_round_trip() -> None:
    events = [FULL, CloudEvent(id="2", source="/s", type="t", data=b"\x01")]
    assert structured(to_batch(events), BATCH_CONTENT_TYPE) == events
    assert structured(b"[]", BATCH_CONTENT_TYPE) == []


def test_batch_errors_name_the_event_and_attribute() -> None:
    body = orjson.dumps([minimal(), minimal(id="")])
    with pytest.raises(InvalidEvent, match=r"^event 1 in the batch: attribute 'id' must be"):
        structured(body, BATCH_CONTENT_TYPE)
    with pytest.raises(InvalidEvent, match="must be a JSON array"):
        structured(orjson.dumps(minimal()), BATCH_CONTENT_TYPE)
    headers = as_headers({"content-type": BATCH_CONTENT_TYPE})
    with pytest.raises(InvalidEvent, match="at most 2 events, got 3"):
        parse(Mode.BATCH, headers, orjson.dumps([minimal()] * 3), max_batch=2)


def test_unsupported_structured_format_is_415() -> None:
    with pytest.raises(InvalidEvent, match="unsupported structured event format") as raised:
        structured(b"\x00", "application/cloudevents+avro")
    assert raised.value.status == 415


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"id": None}, "attribute 'id' is required"),
        ({"source": ""}, "attribute 'source' must be a non-empty string"),
        ({"type": 42}, "attribute 'type' must be a non-empty string"),
        ({"specversion": "0.3"}, "attribute 'specversion' must be '1.0', got '0.3'"),
        ({"specversion": None}, "attribute 'specversion' is required"),
        ({"subject": ""}, "attribute 'subject' must be a non-empty string"),
        ({"id": "a\nb"}, "attribute 'id' must not contain control characters"),
        ({"time": "2024-05-01 12:00:00"}, "attribute 'time' must be an RFC 3339 timestamp"),
        ({"time": "2024-02-30T12:00:00Z"}, "attribute 'time' must be an RFC 3339 timestamp"),
        ({"time": "2024-05-01T12:00:00+25:00"}, "attribute 'time' must be an RFC 3339"),
        ({"source": "has space"}, "attribute 'source' must be a URI-reference"),
        ({"source": "1bad:scheme"}, "attribute 'source' must be a URI-reference"),
        ({"source": "/bad%zzescape"}, "attribute 'source' must be a URI-reference"),
        ({"dataschema": "/relative"}, "attribute 'dataschema' must be an absolute URI"),
        ({"Tenant": "x"}, "attribute 'Tenant' is not a valid extension name"),
        ({"ten_ant": "x"}, "attribute 'ten_ant' is not a valid extension name"),
        ({"ratio": 1.5}, "attribute 'ratio' must be a string, a boolean or a 32-bit integer"),
        ({"big": 2**31}, "attribute 'big' must be a string, a boolean or a 32-bit integer"),
        ({"nested": {"a": 1}}, "attribute 'nested' must be a string"),
        ({"data": 1, "data_base64": "AQ=="}, "'data' and 'data_base64' are mutually exclusive"),
        ({"data_base64": "not base64!"}, "attribute 'data_base64' is not valid base64"),
    ],
)
def test_validation_messages_name_the_attribute(members: dict[str, Any], message: str) -> None:
    body = orjson.dumps({key: value for key, value in minimal(**members).items()})
    with pytest.raises(InvalidEvent) as raised:
        structured(body)
    assert message in raised.value.message
    assert isinstance(raised.value, ValidationFailed) and raised.value.status == 400


@pytest.mark.parametrize(
    "members",
    [
        {"time": "1990-12-31T23:59:60Z"},  # a leap second
        {"time": "2024-05-01t12:00:00.5z"},
        {"source": "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"},
        {"source": "relative/path?query=1#frag"},
        {"dataschema": "urn:example:schema"},
        {"averyveryverylongextensionname": "over 20 characters is only a recommendation"},
    ],
)
def test_valid_edge_cases(members: dict[str, Any]) -> None:
    structured(orjson.dumps(minimal(**members)))


def test_structured_body_must_be_a_json_object() -> None:
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        structured(b"{")
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        structured(b"[]")


def test_system_event_types_are_reserved() -> None:
    reject_system_type(FULL)
    with pytest.raises(InvalidEvent, match=r"attribute 'type' 'eventgateway\.event\.received'"):
        reject_system_type(CloudEvent(id="1", source="/s", type="eventgateway.event.received"))


LEGACY = {
    "eventType": "user.created",
    "eventTypeVersion": "1.0",
    "cloudEventsVersion": "0.1",
    "source": "/services/users",
    "eventID": "b1c2",
    "eventTime": "2018-08-01T10:00:00Z",
    "schemaURL": "https://example.com/user.json",
    "extensions": {"traceId": "abc", "eventgateway": {"transformed": "true"}, "retries": 2},
    "contentType": "application/json",
    "data": {"userId": "42"},
}


def test_legacy_structured_becomes_1_0() -> None:
    [event] = structured(orjson.dumps(LEGACY), "application/cloudevents+json")
    assert event == CloudEvent(
        id="b1c2",
        source="/services/users",
        type="user.created",
        datacontenttype="application/json",
        dataschema="https://example.com/user.json",
        time="2018-08-01T10:00:00Z",
        extensions={
            "traceid": "abc",
            "eventgateway": '{"transformed":"true"}',
            "retries": 2,
            "eventtypeversion": "1.0",
        },
        data={"userId": "42"},
    )


def test_legacy_binary_becomes_1_0() -> None:
    headers = as_headers(
        {
            "CE-EventType": "user.created",
            "CE-CloudEventsVersion": "0.1",
            "CE-Source": "/services/users",
            "CE-EventID": "b1c2",
            "CE-EventTime": "2018-08-01T10:00:00Z",
            "CE-X-TraceId": "abc",
            "Content-Type": "application/json",
        }
    )
    mode = classify(headers)
    assert mode is Mode.LEGACY_BINARY
    [event] = parse(mode, headers, b'{"userId": "42"}')
    assert (event.type, event.id, event.source, event.time) == (
        "user.created",
        "b1c2",
        "/services/users",
        "2018-08-01T10:00:00Z",
    )
    assert (event.extensions, event.data) == ({"traceid": "abc"}, {"userId": "42"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eventID": None}, "attribute 'eventID' is required"),
        ({"eventType": ""}, "attribute 'eventType' must be a non-empty string"),
        ({"eventTime": "yesterday"}, "attribute 'eventTime' must be an RFC 3339 timestamp"),
        ({"schemaURL": "relative"}, "attribute 'schemaURL' must be an absolute URI"),
        ({"cloudEventsVersion": "0.2"}, "attribute 'cloudEventsVersion' must be '0.1'"),
        ({"extensions": ["a"]}, "attribute 'extensions' must be a JSON object"),
        ({"extensions": {"-": 1}}, "extension '-' has no usable CloudEvents 1.0 name"),
    ],
)
def test_legacy_errors_name_the_0_1_attribute(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        from_dict({**LEGACY, **changes})


def test_legacy_envelope_out() -> None:
    event = from_dict(LEGACY)
    envelope = legacy.to_dict(event)
    extensions = {"traceid": "abc", "eventgateway": '{"transformed":"true"}', "retries": 2}
    assert envelope == {**LEGACY, "extensions": extensions}
    assert from_dict(envelope) == event
    raw = legacy.to_dict(CloudEvent(id="1", source="/s", type="t", data=b"\x00"))
    assert raw == {
        "eventType": "t",
        "cloudEventsVersion": "0.1",
        "source": "/s",
        "eventID": "1",
        "data": "AA==",
    }


# Interop with the official SDK: its 1.x API (`cloudevents.v1`) and its 2.x API (`core`).


def test_sdk1_events_parse_with_ours() -> None:
    attributes = {"type": "com.example.t", "source": "/sdk", "subject": "a b ✓", "tenant": "acme"}
    sdk_event = sdk1_http.CloudEvent(attributes, {"n": 1})
    for headers, body in (
        sdk1_conversion.to_structured(sdk_event),
        sdk1_conversion.to_binary(sdk_event),
    ):
        [event] = receive(as_headers(headers), body)
        assert (event.id, event.type, event.source) == (sdk_event["id"], "com.example.t", "/sdk")
        assert (event.subject, event.extensions, event.data) == (
            "a b ✓",
            {"tenant": "acme"},
            {"n": 1},
        )
        assert event.time == sdk_event["time"]


def test_sdk2_events_parse_with_ours() -> None:
    attributes = {
        "type": "t",
        "source": "/sdk",
        "subject": "100% ✓",
        "datacontenttype": "application/octet-stream",
    }
    sdk_event = Sdk2Event(attributes, b"\x00\xff")
    for message in (sdk2_http.to_structured_event(sdk_event), sdk2_http.to_binary_event(sdk_event)):
        [event] = receive(as_headers(message.headers), message.body)
        assert (event.id, event.subject, event.data) == (sdk_event.get_id(), "100% ✓", b"\x00\xff")


def _str_headers(headers: Headers) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in headers}


@pytest.mark.parametrize("data", [{"n": 1}, b"\x00\xff"])
def test_ours_parse_with_the_sdks(data: Any) -> None:
    content_type = None if isinstance(data, dict) else "application/octet-stream"
    event = CloudEvent(
        id="1",
        source="/ours",
        type="t",
        subject="a b ✓",
        time="2024-05-01T12:00:00Z",
        datacontenttype=content_type,
        extensions={"tenant": "acme"},
        data=data,
    )
    headers, body = to_binary(event)
    for message in (
        (_str_headers(headers), body),
        ({"content-type": STRUCTURED_CONTENT_TYPE}, to_json(event)),
    ):
        one = sdk1_http.from_http(*message)
        # The 1.x API does not percent-decode binary-mode headers (2.x does): undo it here.
        assert (one["id"], unquote(one["subject"]), one["tenant"]) == ("1", "a b ✓", "acme")
        assert one.data == data
        two = sdk2_http.from_http_event(sdk2_http.HTTPMessage(*message))
        assert (two.get_subject(), two.get_extension("tenant"), two.get_data()) == (
            "a b ✓",
            "acme",
            data,
        )
