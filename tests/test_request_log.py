"""The last-resort error boundary: an unexpected exception is a 500 problem with a request id
and no trace for the client (SPEC.md: Validation and errors)."""

import logging

import httpx
import pytest

from middleware.request_log import RequestLogMiddleware


async def broken_app(scope, receive, send):
    raise RuntimeError("secret internals")


@pytest.mark.anyio
async def test_unhandled_exception_is_500_problem_with_request_id(caplog):
    transport = httpx.ASGITransport(app=RequestLogMiddleware(broken_app))
    with caplog.at_level(logging.INFO, logger="todo.request"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/api/tasks", headers={"X-Request-ID": "req-123"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {"type": "about:blank", "title": "Internal Server Error",
                               "status": 500, "detail": "internal error", "request_id": "req-123"}
    assert "secret internals" not in response.text
    assert "secret internals" in caplog.text  # the traceback goes to the log
    assert "GET /api/tasks 500" in caplog.text


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_every_middleware_is_pure_asgi(monkeypatch, tmp_path):
    """No BaseHTTPMiddleware (SPEC.md: pure ASGI): it runs the rest of the app in a separate
    task behind a re-wrapped response stream, so context does not propagate back and a failure
    or a client disconnect is seen late."""
    import importlib
    import sys

    from starlette.middleware.base import BaseHTTPMiddleware

    monkeypatch.setenv("BETTER_AUTH_SECRET", "s" * 48)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/todo.db")
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app = importlib.import_module("app").app
    classes = [entry.cls for entry in app.user_middleware]
    assert classes and not any(issubclass(cls, BaseHTTPMiddleware) for cls in classes), classes
