"""Delivering events to `http` functions (async subscriptions) and calling authorizers.

An event goes out as the function's mode asks:
- `eventgateway`: POST the Event Gateway's CloudEvents 0.1 envelope as JSON
  (`Content-Type: application/cloudevents+json`), as the Event Gateway did for async events;
- `cloudevents`: POST in CloudEvents 1.0 binary mode (`ce-*` headers, the data as the body);
- `proxy`: the same binary-mode POST to the provider URL. A proxy function is an HTTP service
  that expects requests, and by the time an event is delivered there is no request to forward:
  binary mode is the plain HTTP request closest to one (the data is the body), and it carries
  every attribute in headers.

Only the status of the answer matters (see `delivery/retry.py`); its body is read and kept for
the `eventgateway.function.invoked` system event.
"""

import orjson

from eventgate.dataplane.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from eventgate.delivery.retry import parse_retry_after
from eventgate.events import cloudevents, legacy
from eventgate.events.envelope import CloudEvent
from eventgate.events.http_event import EXTENSIONS, SOURCE
from eventgate.model import HTTP_EVENT_TYPE, Function, parse_duration
from eventgate.providers.base import CallFailed, Deliverer, Reply

_ENVELOPE = [(b"content-type", b"application/cloudevents+json")]
_JSON = [(b"content-type", b"application/json")]


def envelope(event: CloudEvent) -> dict[str, object]:
    """The 0.1 envelope an `eventgateway`-mode function receives; an HTTP event eventgate made
    keeps the Event Gateway's `extensions.eventgateway` marker."""
    body = legacy.to_dict(event)
    if event.type == HTTP_EVENT_TYPE and event.source == SOURCE:
        body["extensions"] = {**body.get("extensions", {}), **EXTENSIONS}  # type: ignore[dict-item]
    return body


class HttpDeliverer(Deliverer):
    """The `http` function type, over the shared upstream pool."""

    def __init__(self, upstream: UpstreamPool) -> None:
        self.upstream = upstream

    def target(self, function: Function) -> str:
        return function.provider.url

    def default_timeout(self, function: Function) -> float | None:
        timeout = function.provider.timeout
        return parse_duration(timeout) if timeout else None

    async def deliver(self, function: Function, event: CloudEvent, timeout: float) -> Reply:  # noqa: ASYNC109
        if function.provider.mode == "eventgateway":
            headers, body = _ENVELOPE, orjson.dumps(envelope(event))
        else:
            headers, body = cloudevents.to_binary(event)
        return await self._post(function.provider.url, headers, body, timeout)

    async def call(self, function: Function, payload: object, timeout: float) -> Reply:  # noqa: ASYNC109
        return await self._post(function.provider.url, _JSON, orjson.dumps(payload), timeout)

    async def _post(
        self,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,  # noqa: ASYNC109
    ) -> Reply:
        try:
            response = await self.upstream.request(
                "POST", url, headers=headers, body=body, timeout=timeout
            )
            try:
                data = await response.read()
            finally:
                await response.aclose()
        except UpstreamTimeout as error:
            raise CallFailed(f"timed out after {timeout:g}s: {error}", timed_out=True) from None
        except UpstreamError as error:
            raise CallFailed(str(error)) from None
        retry_after = None
        for name, value in response.headers:
            if name == b"retry-after":
                retry_after = parse_retry_after(value)
        return Reply(response.status, data, retry_after)
