"""What the test modules share: the app in process, the servers' configuration, the task API
as one user sees it, and the checks several modules make. Test modules import from here (and
from the infrastructure modules users.py, servers.py, pgcluster.py, pgwire.py, better_auth.py),
never from conftest.py or from one another."""

import importlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from unittest import mock

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from store import Store
from tests.servers import PostgresDatabase
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


def make_app(env: Mapping[str, str], store: Store | None = None) -> Starlette:
    """app.py's application built from `env` (and `store`, see create_app), not started."""
    # Importing app.py also builds the module's own `app` (uvicorn's `app:app`) from the
    # process environment, so that import gets a valid one; that app is never started.
    with mock.patch.dict(os.environ, server_env("sqlite://")):
        create_app = importlib.import_module("app").create_app
    return create_app(env, store)


# The store's timeouts for the fault tests: short, so that waiting them out is quick, and
# apart, so that a test can tell which one ended a request (libpq's connect_timeout is whole
# seconds, at least 2).
FAULT_TIMEOUTS = {"pool_timeout": 1, "connect_timeout": 2, "statement_timeout_ms": 2500}


def short_timeouts_app():
    """app.py's application configured by the process environment, its store with
    FAULT_TIMEOUTS: `uvicorn --factory tests.helpers:short_timeouts_app`."""
    return make_app(os.environ, Store(os.environ["DATABASE_URL"], **FAULT_TIMEOUTS))


class _PortalTransport(httpx.BaseTransport):
    """httpx's ASGITransport for a sync client: each request is one call into the event loop
    of `portal`, where the app runs (requests from several threads run there concurrently, as
    under uvicorn). Exceptions the app lets escape are raised to the caller."""

    def __init__(self, app: Starlette, portal: BlockingPortal) -> None:
        self.asgi = httpx.ASGITransport(app=app)
        self.portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        buffered = httpx.Request(request.method, request.url, headers=request.headers,
                                 content=request.read())

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
    assert [t["id"] for t in api.list(sort="title", order="desc").json()] == [task["id"], later["id"]]
    stranger = Api(api.client, new_user(), api.family)
    for response in (stranger.get(task["id"]), stranger.update(task["id"], {"title": "x"}),
                     stranger.toggle(task["id"]), stranger.delete(task["id"])):
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


def wait_for_no_app_connections(database: PostgresDatabase, timeout: float = 10) -> None:
    """Until the app's terminated backends on `database` have exited (their sockets closed)."""
    sql = ("SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
           " AND application_name = 'todo-api'")
    deadline = time.monotonic() + timeout
    while database._admin(sql, database.name) != [(0,)]:
        assert time.monotonic() < deadline, "terminated connections did not go away"
        time.sleep(0.02)
