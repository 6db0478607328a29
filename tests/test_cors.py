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
    ok = client.post(
        "/api/tasks", json={"title": "x"}, headers={"Origin": FRONTEND, **user.headers}
    )
    assert ok.headers["access-control-allow-origin"] == FRONTEND
    assert "location" in ok.headers["access-control-expose-headers"].lower()
    unauthorized = client.get("/api/tasks", headers={"Origin": FRONTEND})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == FRONTEND


def test_credentialed_requests_are_allowed_for_configured_origins_only(client):
    """A browser fetch with `credentials: "include"` needs Access-Control-Allow-Credentials on
    the preflight and the answer, and an exact origin (never `*`, Fetch standard: CORS check)."""
    user = new_user()
    for origin in (FRONTEND, "https://app.example.com"):
        preflight = client.options("/api/tasks", headers={"Origin": origin, **PREFLIGHT})
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert preflight.headers["access-control-allow-origin"] == origin
        answer = client.get("/api/tasks", headers={"Origin": origin, **user.headers})
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert answer.headers["access-control-allow-origin"] == origin
        assert "origin" in answer.headers["vary"].lower()
    evil = client.options("/api/tasks", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert "access-control-allow-origin" not in evil.headers


def test_a_cookie_alone_never_authenticates(client):
    """Credentials mode grants no ambient authority: only the Authorization header counts, so
    a cookie holding a valid token (or Better Auth's session cookies) is a 401."""
    user = new_user()
    cookies = {
        "better-auth.session_token": user.token,
        "better-auth.session_data": user.token,
        "token": user.token,
        "Authorization": f"Bearer {user.token}",
    }
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    for path in ("/api/tasks", f"/api/{user.id}/tasks"):
        answer = client.get(path, headers={"Origin": FRONTEND, "Cookie": cookie})
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        created = client.post(
            path, json={"title": "x"}, headers={"Origin": FRONTEND, "Cookie": cookie}
        )
        assert created.status_code == 401
    assert client.get("/api/tasks", headers=user.headers).json() == []
