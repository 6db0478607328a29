"""Liveness and readiness probes (docs/api.md: Operations); no authentication."""

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from schemas.health import Health, Ready


def _json(model) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


async def health(request: Request) -> Response:
    """GET /health -> 200 `{"status": "ok"}` while the process serves requests."""
    return _json(Health())


async def ready(request: Request) -> Response:
    """GET /ready -> 200 `{"status": "ready"}` when the database answers; DatabaseUnavailable
    (503) otherwise."""
    await run_in_threadpool(request.app.state.store.ping)
    return _json(Ready())
