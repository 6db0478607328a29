"""Authentication middleware: every `/api/*` request must carry a valid bearer token.

Pure ASGI (no BaseHTTPMiddleware), so the request body is never buffered here. The verified
caller is put into `request.state.user`; handlers never see a token.
"""

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from middleware.tokens import InvalidToken, KeysUnavailable, Verifier
from schemas.problem import PROBLEM_JSON, Problem

KEYS_RETRY_AFTER_SECONDS = 5

SEVERAL_AUTHORIZATIONS = Problem.of(400, "send one Authorization header, not several")
MISSING_TOKEN = Problem.of(401, "missing bearer token")
INVALID_TOKEN = Problem.of(401, "invalid or expired token")
KEYS_UNAVAILABLE = Problem.of(503, "token keys are unavailable, try again shortly")


def bearer_token(value: str) -> str | None:
    """The token of an Authorization header `value` of the form `Bearer <token>` (scheme
    case-insensitive, RFC 6750 section 2.1), or None when it is empty or of another scheme."""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _problem(problem: Problem, headers: dict[str, str]) -> Response:
    return Response(problem.body(), problem.status, headers, PROBLEM_JSON)


class AuthMiddleware:
    """Verifies `Authorization: Bearer` on HTTP requests under `/api` (RFC 6750 section 3).

    Several Authorization headers: 400. Missing token: 401 `WWW-Authenticate: Bearer`.
    Invalid or expired: 401
    `WWW-Authenticate: Bearer error="invalid_token"`. Keys unavailable: 503 with `Retry-After`.
    OPTIONS requests (CORS preflights) pass unauthenticated.
    """

    def __init__(self, app: ASGIApp, verify: Verifier) -> None:
        self.app = app
        self.verify = verify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        protected = path == "/api" or path.startswith("/api/")
        if scope["type"] != "http" or not protected or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        # One pass over the raw header list (names arrive lower-cased, ASGI spec), decoded as
        # Starlette's Headers decodes them; building Headers and reading it twice cost more.
        values = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(values) > 1:
            # RFC 9110 section 5.3: one value only; a proxy in front may have used the other.
            response = _problem(SEVERAL_AUTHORIZATIONS, {})
            await response(scope, receive, send)
            return
        token = bearer_token(values[0].decode("latin-1")) if values else None
        if token is None:
            response = _problem(MISSING_TOKEN, {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        try:
            caller = await self.verify(token)
        except InvalidToken:
            response = _problem(INVALID_TOKEN, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            await response(scope, receive, send)
            return
        except KeysUnavailable:
            response = _problem(KEYS_UNAVAILABLE, {"Retry-After": str(KEYS_RETRY_AFTER_SECONDS)})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = caller
        await self.app(scope, receive, send)
