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
