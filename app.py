"""The Todo API: configuration, routes, middleware, lifespan and error handlers.

Run with `uvicorn app:app`. Configuration comes from environment variables (README:
Configuration); see `.env.example`.
"""

import asyncio
import gc
import logging
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from jwt import PyJWKClientError
from sqlalchemy import exc
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route

import migrations
from engine import POOL_OVERFLOW, POOL_SIZE, SQLITE_DEFAULT, normalize_url
from handlers import docs, health, openapi, tasks
from handlers.cursors import Cursors
from handlers.errors import EXCEPTION_HANDLERS
from middleware.auth import AuthMiddleware
from middleware.jwks import JWKSKeys
from middleware.request_log import InternalErrorMiddleware, RequestLogMiddleware, log_handler
from middleware.tokens import JWKSVerifier, SecretVerifier, Verifier, make_verifier
from store import PURGE_BATCH, DatabaseUnavailable, Store

MIN_SECRET_BYTES = 32
PURGE_INTERVAL_SECONDS = 3600
PURGE_PAUSE_SECONDS = 0.1  # between two purge batches, so a backlog never hogs the database
# Worker threads for the blocking store calls, in each of the two pools (writes: anyio's, whose
# default is 40; reads: the event loop's executor, handlers/tasks.py `_read`), set here so they
# stay tied to the connection pool: more threads than pooled connections, so under overload the pool
# runs out first and a request waits at most engine.POOL_TIMEOUT for a connection, then gets 503,
# instead of queueing for a thread with no time limit (docs/security.md: Overload).
THREADS = 2 * (POOL_SIZE + POOL_OVERFLOW)


class ConfigError(Exception):
    """The environment does not describe a runnable server; the message says how to fix it."""


def _startup_error(url: str, reason: str) -> ConfigError:
    """What to tell an operator whose database failed the start-up: the SQLite file's path or
    PostgreSQL's host, port and database (never the password), the database's own words
    (`reason`), and what to do."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "").resolve()
        if not path.parent.is_dir():
            return ConfigError(
                f"the directory of the SQLite file {path} does not exist: "
                "create it, or set DATABASE_URL to a file in a writable directory"
            )
        return ConfigError(
            f"cannot use the SQLite file {path} ({reason}): make the file and its "
            "directory writable, or set DATABASE_URL to another path"
        )
    where = f"{parsed.host}:{parsed.port or 5432}/{parsed.database}"
    if "statement timeout" in reason:
        return ConfigError(
            f"a statement on {where} was cancelled by the role's statement_timeout ({reason}): "
            f"raise it, e.g. ALTER ROLE {parsed.username} SET statement_timeout = '10s'"
        )
    return ConfigError(
        f"cannot use the database at {where} ({reason}): check DATABASE_URL "
        "and that the database is running and accepts connections"
    )


def task_routes(prefix: str) -> list[Route]:
    """The task paths under `prefix`: one route per path, its HTTPEndpoint serving each method
    (handlers/tasks.py); under `/api/{user_id}` it checks the path's user first."""
    return [
        Route(f"{prefix}/tasks", tasks.Tasks),
        Route(f"{prefix}/tasks/{{task_id}}", tasks.Task),
        Route(f"{prefix}/tasks/{{task_id}}/complete", tasks.TaskCompletion),
    ]


ROUTES = [
    Route("/health", health.health, methods=["GET"]),
    Route("/ready", health.ready, methods=["GET"]),
    *task_routes("/api"),
    *task_routes("/api/{user_id}"),
    # The contract, documented from the routes above (handlers/openapi.py), and its docs page.
    Route("/openapi.json", openapi.openapi_json, methods=["GET"], include_in_schema=False),
    Route("/docs", docs.page, methods=["GET"], include_in_schema=False),
    Route("/docs/init.js", docs.script, methods=["GET"], include_in_schema=False),
    Mount("/docs/assets", docs.ASSETS),
]


def _frontend_url(env: Mapping[str, str]) -> str:
    return env.get("BETTER_AUTH_URL", "http://localhost:3000").rstrip("/")


def _origins(env: Mapping[str, str]) -> list[str]:
    extra = env.get("CORS_ORIGINS", "")
    return [_frontend_url(env)] + [o.strip().rstrip("/") for o in extra.split(",") if o.strip()]


def _verifier(env: Mapping[str, str]) -> Verifier:
    """HS256 with BETTER_AUTH_SECRET and Better Auth's JWKS (docs/api.md: Authentication)."""
    secret = env.get("BETTER_AUTH_SECRET") or None
    explicit_jwks = env.get("BETTER_AUTH_JWKS_URL") or None
    if secret is None and explicit_jwks is None:
        raise ConfigError(
            "BETTER_AUTH_SECRET is not set: set it to the secret of your Better Auth app "
            "(32+ characters; `make run` generates one into .env), or set "
            "BETTER_AUTH_JWKS_URL for a deployment that only accepts JWKS-signed tokens"
        )
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"BETTER_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
    frontend = _frontend_url(env)
    try:
        keys = JWKSKeys(explicit_jwks or f"{frontend}/api/auth/jwks")
    except PyJWKClientError as error:
        raise ConfigError(f"BETTER_AUTH_JWKS_URL: {error}") from None
    # Better Auth's jwt plugin sets iss and aud to its baseURL, which is BETTER_AUTH_URL.
    issuer = env.get("JWT_ISSUER") or (frontend, frontend + "/")
    audience = env.get("JWT_AUDIENCE") or [frontend, frontend + "/"]
    jwks = JWKSVerifier(keys, issuer, audience)
    return make_verifier(SecretVerifier(secret) if secret else None, jwks)


def _cursor_key(env: Mapping[str, str], store: Store) -> bytes:
    """Signing key of list cursors, the same in every worker, instance and restart: CURSOR_SECRET
    if set, else derived from BETTER_AUTH_SECRET, else a key generated once and kept in the
    database (a JWKS-only deployment)."""
    secret = env.get("CURSOR_SECRET") or env.get("BETTER_AUTH_SECRET")
    return (secret or store.shared_secret("cursor-signing-key")).encode()


async def _purge_idempotency_keys(store: Store) -> None:
    """Delete expired Idempotency-Keys now and every PURGE_INTERVAL_SECONDS, in batches of
    store.PURGE_BATCH with a pause between them, in the background: a backlog of millions
    neither delays start-up nor holds the database (each batch is one short statement)."""
    log = logging.getLogger("todo.store")
    while True:
        purged = 0
        try:
            while (batch := await run_in_threadpool(store.purge_keys)) == PURGE_BATCH:
                purged += batch
                await asyncio.sleep(PURGE_PAUSE_SECONDS)
            purged += batch
        except DatabaseUnavailable as error:
            log.warning("idempotency key purge paused: %s", error)
        except Exception:  # a background loop: log it and carry on, never die silently
            log.exception("idempotency key purge failed")
        if purged:
            log.info("purged %d expired idempotency keys", purged)
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)


def _start_on_database(env: Mapping[str, str], store: Store) -> Cursors:
    """Check that the schema is at the migrations' head (the app runs no DDL: the release step
    does, docs/operations.md) and load the cursor key. ConfigError, one line, if not."""
    try:
        with store.engine.connect() as connection:
            migrations.check(connection)
        return Cursors(_cursor_key(env, store))
    except migrations.SchemaNotCurrent as error:
        raise ConfigError(str(error)) from None
    except (exc.DBAPIError, DatabaseUnavailable) as error:
        reason = error.orig if isinstance(error, exc.DBAPIError) else error
        url = store.engine.url.render_as_string(hide_password=True)
        raise _startup_error(url, " ".join(str(reason).split())) from None


def create_app(env: Mapping[str, str] = os.environ, store: Store | None = None) -> Starlette:
    """The application configured by `env`, the variables of .env.example (by default the
    process environment); `store`, if given, replaces the one DATABASE_URL names (the tests
    pass one with short timeouts). Raises ConfigError."""
    if store is None:
        store = Store(env.get("DATABASE_URL") or SQLITE_DEFAULT)
    verify = _verifier(env)
    cursors = _start_on_database(env, store)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(THREADS, thread_name_prefix="store-read")
        )
        purging = asyncio.create_task(_purge_idempotency_keys(store))
        yield
        purging.cancel()
        store.dispose()

    # Outermost first: every request is logged, CORS preflights too; a 500 still gets CORS
    # headers; only authenticated requests reach the routes.
    middleware = [
        Middleware(RequestLogMiddleware),
        Middleware(
            CORSMiddleware,
            allow_origins=_origins(env),
            # Browsers send fetch(..., {credentials: "include"}) only to an API that allows it;
            # safe because only the Authorization header authenticates, never a cookie
            # (docs/security.md: CORS and cookies). Starlette echoes the exact origin.
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "If-Match",
                "If-None-Match",
                "Idempotency-Key",
                "X-Request-ID",
            ],
            expose_headers=[
                "ETag",
                "Idempotent-Replayed",
                "Link",
                "Location",
                "Retry-After",
                "WWW-Authenticate",
                "X-Request-ID",
            ],
            max_age=600,
        ),
        Middleware(InternalErrorMiddleware),
        Middleware(AuthMiddleware, verify=verify),
    ]
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # No redirect of `/api/tasks/` to `/api/tasks`: Starlette would build it from the client's
    # Host header, always http://; a trailing slash is 404 like any other unknown path.
    app.router.redirect_slashes = False
    app.state.store = store
    app.state.cursors = cursors
    return app


def _configure_logging() -> None:
    """Root logging at LOG_LEVEL, every line escaped and with the id of the request it was
    logged in (docs/operations.md: Logging), and one line per request (docs/api.md: Operations):
    the app's own (middleware/request_log.py), so uvicorn's access line, which would
    repeat it, is switched off as `--no-access-log` does (uvicorn configures its loggers before
    it imports the app, and skips access lines when `uvicorn.access` has no handler)."""
    level = os.getenv("LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(
            f"LOG_LEVEL {level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)"
        )
    logging.basicConfig(level=level, handlers=[log_handler()])
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    # The format shows none of these, so records need not collect them (Python's Logging HOWTO:
    # Optimization); a quarter of what a line costs.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None


def _freeze_startup_objects() -> None:
    """Move every object alive after start-up (modules, models, compiled statements: ~120,000)
    out of the cyclic garbage collector's reach (`gc.freeze`, Python's gc documentation).
    Under load, the objects of requests in flight survive young collections, so full
    collections came every second or two and each scanned the whole heap: measured at
    ~0.1 ms of CPU per request of a 20-task list at 64 connections, a fifth of all it cost
    (docs/performance.md). Garbage left by start-up is collected first; objects created later
    are collected as before."""
    gc.collect()
    gc.freeze()


try:
    _configure_logging()
    app = create_app()
    _freeze_startup_objects()
except ConfigError as error:
    sys.exit(f"todo-api: {error}")
