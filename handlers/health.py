"""Liveness and readiness probes (SPEC.md: Operations); no authentication."""

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse


async def health(request: Request) -> JSONResponse:
    """GET /health -> 200 while the process serves requests."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    """GET /ready -> 200 when the database answers; DatabaseUnavailable (503) otherwise."""
    await run_in_threadpool(request.app.state.store.ping)
    return JSONResponse({"status": "ready"})
