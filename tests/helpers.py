"""What the test modules share: the app in process, the servers' configuration, the task API
as one user sees it, and the checks several modules make. Test modules import from here (and
from the infrastructure modules users.py, servers.py, pgcluster.py, pgwire.py, better_auth.py),
never from conftest.py or from one another."""

import base64
import functools
import hashlib
import hmac
import importlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from starlette.applications import Starlette

import migrations
from engine import normalize_url
from store import Store
from tests.pgcluster import PgBouncer
from tests.servers import ROOT, AppServer, PostgresDatabase
from tests.users import SECRET, User, new_user

FRONTEND = "http://localhost:3000"
# httpx logs every request at INFO; the app's own request line already says it.
logging.getLogger("httpx").setLevel(logging.WARNING)


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """The app's environment (.env.example's variables) for a server on `database_url`."""
    return {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "BETTER_AUTH_URL": FRONTEND,
        "CORS_ORIGINS": "https://app.example.com",
        "LOG_LEVEL": "INFO",
        **extra,
    }


@functools.cache
def _create_app():
    """app.create_app. Importing app.py also builds the module's own `app` (uvicorn's
    `app:app`) from the process environment, on a database at the migrations' head, so that
    import gets a migrated throwaway SQLite file; that app is never started."""
    database = f"sqlite:///{tempfile.mkdtemp(prefix='todo-import-')}/todo.db"
    migrations.upgrade(database)
    with mock.patch.dict(os.environ, server_env(database)):
        return importlib.import_module("app").create_app


def make_app(env: Mapping[str, str], store: Store | None = None, migrate: bool = True) -> Starlette:
    """app.py's application built from `env` (and `store`, see create_app), not started. Its
    database is migrated first, as the release step does (`migrate=False`: not)."""
    if migrate:
        migrations.upgrade(env["DATABASE_URL"])
    return _create_app()(env, store)


# The store's timeouts for the fault tests: short, so that waiting them out is quick, and
# apart, so that a test can tell which one ended a request (libpq's connect_timeout is whole
# seconds, at least 2).
FAULT_TIMEOUTS = {"pool_timeout": 1, "connect_timeout": 2, "statement_timeout_ms": 2500}


def short_timeouts_app():
    """app.py's application configured by the process environment, its store with
    FAULT_TIMEOUTS: `uvicorn --factory tests.helpers:short_timeouts_app`."""
    url = os.environ["DATABASE_URL"]  # migrated by AppServer.start
    return make_app(os.environ, Store(url, **FAULT_TIMEOUTS), migrate=False)


class _PortalTransport(httpx.BaseTransport):
    """httpx's ASGITransport for a sync client: each request is one call into the event loop
    of `portal`, where the app runs (requests from several threads run there concurrently, as
    under uvicorn). Exceptions the app lets escape are raised to the caller."""

    def __init__(self, app: Starlette, portal: BlockingPortal) -> None:
        self.asgi = httpx.ASGITransport(app=app)
        self.portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        buffered = httpx.Request(
            request.method, request.url, headers=request.headers, content=request.read()
        )

        async def send() -> httpx.Response:
            response = await self.asgi.handle_async_request(buffered)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self.portal.call(send)


@contextmanager
def in_process(env: Mapping[str, str], store: Store | None = None) -> Iterator[httpx.Client]:
    """A sync httpx client of `make_app(env, store)` running in process: its lifespan runs
    in an event loop of its own thread, where every request is called over ASGI as uvicorn
    would call it, without a socket or a process. Starlette's TestClient does the same with
    several calls into the loop per request, twice the cost of one."""
    app = make_app(env, store)
    with start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
            transport = _PortalTransport(app, portal)
            with httpx.Client(transport=transport, base_url="http://testserver") as client:
                yield client


def rows(engine: Engine, sql: str, **params) -> list[dict]:
    """The rows of `sql` on `engine`, as dicts."""
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(text(sql), params).mappings()]


def assert_problem(response, status: int, field: str | None = None) -> dict:
    """`response` is RFC 9457 problem details with `status` (and, if given, an error for
    exactly `field`); returns the problem."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"] == "about:blank"
    assert problem["title"] and problem["detail"]
    if field is not None:
        assert [e["field"] for e in problem["errors"]] == [field]
    return problem


class Api:
    """The task endpoints of one route family, called as one user through `client` (in
    process or over HTTP)."""

    def __init__(self, client: httpx.Client, user: User, family: str) -> None:
        self.client, self.user, self.family = client, user, family
        self.prefix = "/api" if family == "A" else f"/api/{user.id}"

    def path(self, task_id=None, suffix: str = "") -> str:
        base = f"{self.prefix}/tasks"
        return base if task_id is None else f"{base}/{task_id}{suffix}"

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {**self.user.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def list(self, **params) -> httpx.Response:
        return self.request("GET", self.path(), params=params)

    def create(self, body=None, **kwargs) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        return self.request("POST", self.path(), **kwargs)

    def get(self, task_id) -> httpx.Response:
        return self.request("GET", self.path(task_id))

    def update(self, task_id, body=None, method: str = "PUT", **kwargs) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        return self.request(method, self.path(task_id), **kwargs)

    def toggle(self, task_id) -> httpx.Response:
        return self.request("PATCH", self.path(task_id, "/complete"))

    def delete(self, task_id) -> httpx.Response:
        return self.request("DELETE", self.path(task_id))

    def new_task(self, **body) -> dict:
        response = self.create({"title": "a task", **body})
        assert response.status_code == 201, response.text
        return response.json()


def in_parallel(client: httpx.Client, count: int, call) -> list[httpx.Response]:
    """`call(client, n)` for n in range(count), all at once from `count` threads."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda n: call(client, n), range(count)))


def check_task_flow(api: Api) -> None:
    """Create, list (sorted and filtered), get, update (PUT and PATCH), toggle twice, delete,
    and another user's 404s: each answers as specified."""
    created = api.create({"title": "Buy milk", "description": "2 litres", "due_date": "2030-01-31"})
    assert created.status_code == 201, created.text
    task = created.json()
    assert api.list().json() == [task]
    assert api.get(task["id"]).json() == task
    later = api.create({"title": "a later one", "due_date": "2031-01-01"}).json()
    assert [t["id"] for t in api.list(sort="due_date").json()] == [task["id"], later["id"]]
    assert [t["id"] for t in api.list(sort="title", order="desc").json()] == [
        task["id"],
        later["id"],
    ]
    stranger = Api(api.client, new_user(), api.family)
    for response in (
        stranger.get(task["id"]),
        stranger.update(task["id"], {"title": "x"}),
        stranger.toggle(task["id"]),
        stranger.delete(task["id"]),
    ):
        assert response.status_code == 404, response.text
    assert stranger.list().json() == []
    assert api.delete(later["id"]).status_code == 204
    renamed = api.update(task["id"], {"title": "Buy oat milk"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Buy oat milk", renamed.text
    cleared = api.update(task["id"], {"description": None}, method="PATCH")
    assert cleared.status_code == 200 and cleared.json()["description"] is None, cleared.text
    assert api.toggle(task["id"]).json()["completed"] is True
    assert [t["id"] for t in api.list(status="completed").json()] == [task["id"]]
    assert api.toggle(task["id"]).json()["completed"] is False
    assert api.delete(task["id"]).status_code == 204
    assert api.get(task["id"]).status_code == 404
    assert api.list().json() == []


class FakeJWKS:
    """A loopback HTTP server standing in for Better Auth's JWKS endpoint, answering whatever
    `serve()` last set."""

    def __init__(self) -> None:
        answer = self.answer = {"status": 200, "body": b"{}"}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(answer["status"])
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer["body"])))
                self.end_headers()
                self.wfile.write(answer["body"])

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/api/auth/jwks"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def serve(self, status: int, body: bytes) -> None:
        self.answer.update(status=status, body=body)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def engine_for(url: str) -> Engine:
    """A SQLAlchemy engine on the app's database `url` (any form the app accepts)."""
    return create_engine(normalize_url(url))


def wait_for_workers(server: AppServer, workers: int, timeout: float = 60) -> None:
    """Until each of `workers` uvicorn workers of `server` has logged its start-up."""
    deadline = time.monotonic() + timeout
    while server.logs().count("Application startup complete") < workers:
        assert time.monotonic() < deadline, server.logs()
        assert server.process.poll() is None, server.logs()
        time.sleep(0.2)


# The browser tests: Debian's Chromium, driven by Playwright (conftest.py: browser).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 15_000


def screenshot(page, name: str) -> None:
    """A full-page screenshot of `page` as test-artifacts/`name`."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def wait_for_no_app_connections(database: PostgresDatabase, timeout: float = 10) -> None:
    """Until the app's terminated backends on `database` have exited (their sockets closed)."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'todo-api'"
    )
    deadline = time.monotonic() + timeout
    while database._admin(sql, database.name) != [(0,)]:
        assert time.monotonic() < deadline, "terminated connections did not go away"
        time.sleep(0.02)


def signed_payload(payload: str) -> str:
    """An HS256 token with the real secret over `payload`, JSON text as given (Infinity, NaN
    and 400-digit numbers, which json.dumps would not write or would write differently)."""
    header = base64.urlsafe_b64encode(b'{"alg": "HS256", "typ": "JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    signature = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def assert_one_clear_line(output: str, *words: str) -> None:
    """A start-up refusal: no traceback, and one line that says all of `words`."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if all(word in line for word in words)]
    assert len(lines) == 1, output
    assert len(output.splitlines()) <= 6, output


def instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def bouncer_for(database: PostgresDatabase, pool_size: int) -> PgBouncer:
    url = make_url(database.url)
    return PgBouncer(
        url.host or "127.0.0.1",
        url.port or 5432,
        url.database,
        url.username or "postgres",
        url.password,
        pool_size=pool_size,
    ).start()
