"""The Todo API: configuration, routes, middleware, lifespan and error handlers.

Run with `uvicorn app:app`. Configuration comes from environment variables (SPEC.md:
Configuration); see `.env.example`.
"""

import logging
import os
import sys
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from handlers import health, tasks
from handlers.errors import EXCEPTION_HANDLERS
from middleware.auth import AuthMiddleware
from middleware.request_log import RequestLogMiddleware
from middleware.tokens import make_verifier
from store import SQLITE_DEFAULT, Store

MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """The environment does not describe a runnable server; the message says how to fix it."""


def task_routes(prefix: str, wrap=lambda endpoint: endpoint) -> list[Route]:
    """The task endpoints under `prefix`, each endpoint passed through `wrap`."""
    return [
        Route(f"{prefix}/tasks", wrap(tasks.list_tasks), methods=["GET"]),
        Route(f"{prefix}/tasks", wrap(tasks.create_task), methods=["POST"]),
        Route(f"{prefix}/tasks/{{task_id}}", wrap(tasks.get_task), methods=["GET"]),
        Route(f"{prefix}/tasks/{{task_id}}", wrap(tasks.update_task), methods=["PUT", "PATCH"]),
        Route(f"{prefix}/tasks/{{task_id}}", wrap(tasks.delete_task), methods=["DELETE"]),
        Route(f"{prefix}/tasks/{{task_id}}/complete", wrap(tasks.toggle_task), methods=["PATCH"]),
    ]


ROUTES = [
    Route("/health", health.health, methods=["GET"]),
    Route("/ready", health.ready, methods=["GET"]),
    *task_routes("/api"),
    *task_routes("/api/{user_id}", tasks.for_path_user),
]


def _secret() -> str | None:
    secret = os.getenv("BETTER_AUTH_SECRET") or None
    if secret is None:
        raise ConfigError(
            "BETTER_AUTH_SECRET is not set: set it to the secret of your Better Auth app "
            "(32+ characters; `make run` generates one into .env)"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"BETTER_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
    return secret


def _origins() -> list[str]:
    frontend = os.getenv("BETTER_AUTH_URL", "http://localhost:3000")
    extra = os.getenv("CORS_ORIGINS", "")
    return [frontend.rstrip("/")] + [o.strip().rstrip("/") for o in extra.split(",") if o.strip()]


def create_app() -> Starlette:
    """The application, configured from the environment. Raises ConfigError."""
    store = Store(os.getenv("DATABASE_URL") or SQLITE_DEFAULT)
    verify = make_verifier(_secret())

    @asynccontextmanager
    async def lifespan(app: Starlette):
        store.create_tables()
        yield
        store.dispose()

    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=_origins(),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Location", "Retry-After", "WWW-Authenticate", "X-Request-ID"],
            max_age=600,
        ),
        Middleware(RequestLogMiddleware),
        Middleware(AuthMiddleware, verify=verify),
    ]
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.store = store
    return app


def _configure_logging() -> None:
    level = os.getenv("LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(f"LOG_LEVEL {level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


try:
    _configure_logging()
    app = create_app()
except ConfigError as error:
    sys.exit(f"todo-api: {error}")
