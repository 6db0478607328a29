"""Shared fixtures: every API test runs against a real uvicorn server on SQLite and on
PostgreSQL (TEST_DATABASE_URL), for both route families."""

import os

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.servers import AppServer, PostgresDatabase
from tests.users import SECRET, User, make_token, new_user  # noqa: F401 (re-exported)

FRONTEND = "http://localhost:3000"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.getenv("TEST_DATABASE_URL")
    if not url:
        if os.getenv("CI"):
            pytest.fail("TEST_DATABASE_URL is not set: CI must test PostgreSQL")
        pytest.skip("TEST_DATABASE_URL is not set")
    return url


@pytest.fixture(scope="session")
def postgres_database(postgres_admin_url):
    database = PostgresDatabase(postgres_admin_url)
    yield database
    database.drop()


@pytest.fixture
def new_postgres(postgres_admin_url):
    """A PostgreSQL database of the test's own, for a test that needs it empty or at an older
    schema (the session's `postgres_database` is shared, and migrated to head)."""
    database = PostgresDatabase(postgres_admin_url)
    yield database
    database.drop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/todo.db"
    return request.getfixturevalue("postgres_database").url


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "BETTER_AUTH_URL": FRONTEND,
        "CORS_ORIGINS": "https://app.example.com",
        "LOG_LEVEL": "INFO",
        **extra,
    }


@pytest.fixture(scope="session")
def server(database_url):
    app_server = AppServer(server_env(database_url)).start()
    yield app_server
    app_server.stop()


@pytest.fixture(scope="module")
def postgres_server(postgres_database):
    """The app on the session's PostgreSQL database, fresh for each test module (for tests that
    kill its connections or read its log)."""
    app_server = AppServer(server_env(postgres_database.url)).start()
    yield app_server
    app_server.stop()


@pytest.fixture(scope="session")
def db(database_url):
    """A direct SQLAlchemy engine on the server's database, for checking what is stored."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    yield engine
    engine.dispose()


def rows(engine, sql: str, **params) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(text(sql), params).mappings()]


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


class Api:
    """The task endpoints of one route family, called as one user."""

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


@pytest.fixture(params=["A", "B"], ids=["api-tasks", "api-user-tasks"])
def family(request) -> str:
    return request.param


@pytest.fixture
def api(client, family) -> Api:
    return Api(client, new_user(), family)


@pytest.fixture
def other(client, family) -> Api:
    """A second user of the same route family."""
    return Api(client, new_user(), family)
