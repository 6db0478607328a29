"""CORS for the frontend origin (Starlette's CORSMiddleware); preflights never need a token."""

from tests.helpers import FRONTEND
from tests.users import new_user

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def test_preflight_from_frontend_is_allowed_without_token(client):
    for path in ("/api/tasks", "/api/someone/tasks/1/complete"):
        response = client.options(path, headers={"Origin": FRONTEND, **PREFLIGHT})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == FRONTEND
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        assert "PATCH" in response.headers["access-control-allow-methods"]


def test_extra_origin_from_cors_origins(client):
    origin = "https://app.example.com"
    response = client.options("/api/tasks", headers={"Origin": origin, **PREFLIGHT})
    assert response.headers["access-control-allow-origin"] == origin


def test_other_origin_gets_no_allow_origin(client):
    evil = "https://evil.example"
    response = client.options("/api/tasks", headers={"Origin": evil, **PREFLIGHT})
    assert "access-control-allow-origin" not in response.headers
    user = new_user()
    simple = client.get("/api/tasks", headers={"Origin": evil, **user.headers})
    assert "access-control-allow-origin" not in simple.headers


def test_actual_requests_carry_cors_headers_even_on_errors(client):
    user = new_user()
    ok = client.post("/api/tasks", json={"title": "x"}, headers={"Origin": FRONTEND, **user.headers})
    assert ok.headers["access-control-allow-origin"] == FRONTEND
    assert "location" in ok.headers["access-control-expose-headers"].lower()
    unauthorized = client.get("/api/tasks", headers={"Origin": FRONTEND})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == FRONTEND
