"""Liveness and readiness probes (docs/api.md: Operations); no authentication."""

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from handlers.operations import Operation
from schemas.health import Health, Ready


def _json(model) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


@Operation(
    "GET",
    "health",
    "Liveness",
    "200 while the process serves requests; no token needed.",
    200,
    Health,
    authenticated=False,
)
async def health(request: Request) -> Response:
    """GET /health -> 200 `{"status": "ok"}` while the process serves requests."""
    return _json(Health())


@Operation(
    "GET",
    "ready",
    "Readiness",
    "200 when the database answers, else 503; no token needed.",
    200,
    Ready,
    authenticated=False,
    errors=(503,),
)
async def ready(request: Request) -> Response:
    """GET /ready -> 200 `{"status": "ready"}` when the database answers; DatabaseUnavailable
    (503) otherwise."""
    await run_in_threadpool(request.app.state.store.ping)
    return _json(Ready())
