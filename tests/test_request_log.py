"""The request log and the last-resort error boundary: an unexpected exception is a 500 problem
with a request id and no trace for the client (docs/api.md: Validation, Errors), and every request
has its log line (docs/api.md: Operations)."""

import io
import logging
import uuid

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from middleware.request_log import InternalErrorMiddleware, RequestLogMiddleware, log_handler
from tests.helpers import FRONTEND, in_process, make_app, server_env
from tests.users import new_user


async def broken_app(scope, receive, send):
    raise RuntimeError("secret internals")


@pytest.mark.anyio
async def test_unhandled_exception_is_500_problem_with_request_id(caplog):
    app = RequestLogMiddleware(InternalErrorMiddleware(broken_app))
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.INFO, logger="todo.request"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/api/tasks", headers={"X-Request-ID": "req-123"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "internal error",
        "request_id": "req-123",
    }
    assert "secret internals" not in response.text
    assert "secret internals" in caplog.text  # the traceback goes to the log
    assert "GET /api/tasks 500" in caplog.text


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def configured_app(tmp_path) -> Starlette:
    """app.py's application for a SQLite file in `tmp_path` (not started)."""
    return make_app(server_env(f"sqlite:///{tmp_path}/todo.db"))


@pytest.mark.anyio
async def test_app_stack_logs_every_request_and_its_500_carries_cors(configured_app, caplog):
    """In app.py's middleware order a CORS preflight that CORSMiddleware answers itself is
    logged too, and a 500 made of an unhandled exception carries the CORS headers a browser
    needs to show it to the frontend."""
    app = Starlette(
        routes=[Route("/boom", broken_endpoint)], middleware=configured_app.user_middleware
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.INFO, logger="todo.request"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            boom = await client.get("/boom", headers={"Origin": FRONTEND})
            preflight = await client.options(
                "/api/tasks",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
            )
    assert boom.status_code == 500
    assert boom.headers["access-control-allow-origin"] == FRONTEND
    assert boom.json()["request_id"] == boom.headers["x-request-id"]
    assert preflight.status_code == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "todo.request"]
    assert any(line.startswith("GET /boom 500 ") for line in lines), lines
    assert any(line.startswith("OPTIONS /api/tasks 400 ") for line in lines), lines


async def broken_endpoint(request):
    raise RuntimeError("secret internals")


def test_every_middleware_is_pure_asgi(configured_app):
    """No BaseHTTPMiddleware (pure ASGI middleware): it runs the rest of the app in a separate
    task behind a re-wrapped response stream, so context does not propagate back and a failure
    or a client disconnect is seen late."""
    from starlette.middleware.base import BaseHTTPMiddleware

    app = configured_app
    classes = [entry.cls for entry in app.user_middleware]
    assert classes and not any(issubclass(cls, BaseHTTPMiddleware) for cls in classes), classes


def test_a_line_logged_inside_a_request_carries_its_request_id(tmp_path):
    """The store's warning, logged in a worker thread while it serves a request, ends with that
    request's id, as the request's own line does; a line outside any request says `-`."""
    stream = io.StringIO()
    handler = log_handler(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    shared = f"{uuid.uuid4().hex}@example.com"
    try:
        with in_process(server_env(f"sqlite:///{tmp_path}/todo.db")) as client:
            holder, intruder = new_user(email=shared), new_user(email=shared)
            assert client.get("/api/tasks", headers=holder.headers).status_code == 200
            headers = {**intruder.headers, "X-Request-ID": "intruder-1"}
            assert client.get("/api/tasks", headers=headers).status_code == 200
        logging.getLogger("todo.test").info("after the requests")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    warnings = [line for line in lines if "held by another user" in line]
    assert len(warnings) == 1 and warnings[0].endswith(" request_id=intruder-1"), lines
    ours = [line for line in lines if line.endswith(" request_id=intruder-1")]
    assert len(ours) == 2 and " todo.request GET /api/tasks 200 " in ours[1], ours
    assert lines[-1].endswith(" todo.test after the requests request_id=-"), lines
