"""`/v1/status` (liveness and readiness) and `/v1/metrics` (Prometheus text)."""

from fastapi import APIRouter, Request, Response

router = APIRouter(prefix="/v1", tags=["system"])
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/status", summary="The node's status")
async def status(request: Request) -> dict[str, object]:
    report: dict[str, object] = request.app.state.status()
    return report


@router.get(
    "/metrics",
    summary="Prometheus metrics of both ports",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_TEXT: {}}}},
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=PROMETHEUS_TEXT)
