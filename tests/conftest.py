"""Shared fixtures. Per-request behaviour runs against the app in process (tests/helpers.py:
in_process) on SQLite and on PostgreSQL (TEST_DATABASE_URL), for both route families; what
needs a process (logs, signals, disconnects, faults) runs against a real uvicorn server."""

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, Api, in_process, server_env
from tests.servers import AppServer, PostgresDatabase
from tests.users import new_user

# How `make test` spreads the suite over pytest-xdist's workers (`--dist loadgroup
# --no-loadscope-reorder`, docs/testing.md: Suite time). Each module is one unit of work, run by
# one worker, so that its module-scoped servers start once, except the SPLIT modules', whose tests
# share no module-scoped fixture: each of those goes alone to the next free worker. Workers take
# units in collection order, here the modules' measured cost, slowest first, so that no long
# module starts last and runs alone at the end; the other modules follow in name order.
SLOWEST_FIRST = (
    "test_container.py",
    "test_migrations.py",
    "test_schemathesis.py",
    "test_server.py",
    "test_workers.py",
    "test_nextjs.py",
    "test_concurrency.py",
    "test_better_auth.py",
    "test_faults.py",
    "test_fuzz.py",
    "test_auth.py",
    "test_pagination.py",
    "test_bench.py",
    "test_validation.py",
)
SPLIT = {"test_migrations.py", "test_workers.py", "test_concurrency.py"}


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.path.name not in SPLIT:
        item.add_marker(pytest.mark.xdist_group(item.path.name))


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by the fixtures' parameters
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: within a module,
    # the tests keep pytest's order


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


# Module scope: an app's pooled connections (up to store.POOL_SIZE) are closed when its module
# is done, so that a run holds few at once on a PostgreSQL server that others may share.
@pytest.fixture(scope="module")
def client(database_url):
    """The app in process on the session's database."""
    with in_process(server_env(database_url)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def server(database_url):
    """The app as a uvicorn process on the session's database (for its log and its sockets)."""
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
    """A direct SQLAlchemy engine on the app's database, for checking what is stored."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    yield engine
    engine.dispose()


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


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright); skipped without it, except under CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - requirements-dev.txt installs it
        sync_playwright = None
    missing = (
        "playwright is not installed"
        if sync_playwright is None
        else (
            None if Path(CHROMIUM).exists() else f"{CHROMIUM} not found (apt-get install chromium)"
        )
    )
    if missing:
        if os.getenv("CI"):
            pytest.fail(f"{missing}: CI must run the browser tests")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
