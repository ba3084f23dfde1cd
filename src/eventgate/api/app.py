"""The config API (port 4001): the Event Gateway's `/v1/spaces/{space}/...` resources, status,
metrics, and OpenAPI at `/openapi.json` with docs at `/docs`."""

from collections.abc import Awaitable, Callable

from fastapi import FastAPI

from eventgate import __version__
from eventgate.api import (
    cors,
    delivery,
    eventtypes,
    functions,
    images,
    invocations,
    secrets,
    subscriptions,
    system,
)
from eventgate.api.errors import install_error_handlers
from eventgate.api.middleware import ConfigMetrics
from eventgate.api.resources import Resources
from eventgate.delivery import Queue
from eventgate.functions import PythonFunctions
from eventgate.observability.metrics import Metrics
from eventgate.store import Store

DESCRIPTION = """\
Configure an eventgate node the way you would configure the Serverless Event Gateway: register
**functions**, bind them to events with **subscriptions** (`sync` subscriptions answer HTTP
requests on the events port, `async` ones receive events in the background), declare **event
types** (with a JSON Schema and an authorizer) and **CORS** settings. Every resource lives in a
space (`/v1/spaces/{space}/...`). Ask where an event went at `/events/{eventId}`, and inspect,
delete or redrive the deliveries that failed for good at `/deadletters`. Run Python code as
functions the way Dispatch did: build **images** (requirements), create `python` functions from
source, give them **secrets**, and invoke them at `/functions/{functionId}/invocations`.

Errors always have the shape `{"errors": [{"message": "..."}]}`.
"""


def ok() -> dict[str, object]:
    return {"status": "ok"}


def create_config_app(
    store: Store,
    metrics: Metrics,
    *,
    status: Callable[[], dict[str, object]] | None = None,
    settle: Callable[[int], Awaitable[None]] | None = None,
    queue: Queue | None = None,
    python: PythonFunctions | None = None,
) -> FastAPI:
    """The config API over `store`. `status` builds the `/v1/status` body (default: ok);
    `settle(revision)` is awaited after each write before answering (see `Resources`); `queue`
    serves event lives and dead letters (without it those answer 503); `python` runs python
    functions (without it, images and invocations answer 503)."""
    app = FastAPI(
        title="eventgate config API",
        description=DESCRIPTION,
        version=__version__,
        separate_input_output_schemas=False,
    )
    app.state.resources = Resources(store, settle)
    app.state.metrics = metrics
    app.state.status = status or ok
    app.state.queue = queue
    app.state.python = python
    for module in (functions, subscriptions, eventtypes, cors, delivery, system):
        app.include_router(module.router)
    for module in (images, invocations, secrets):  # python functions
        app.include_router(module.router)
    install_error_handlers(app)
    app.add_middleware(ConfigMetrics, metrics=metrics)
    return app
