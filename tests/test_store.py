"""The store's failure handling, in process: values PostgreSQL or psycopg2 refuses are the
store's InvalidData, answered 400 problem details, never 500 (defence in depth: the live paths to
these errors are closed by validation, test_validation.py); the dead-connection check at checkout
works for any file descriptor; a cursor's sort value is read back from its text."""

import asyncio
import json
import os
import resource
import uuid
from datetime import datetime

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

import migrations
from handlers.errors import EXCEPTION_HANDLERS
from middleware.tokens import Caller
from schemas.tasks import ListQuery, TaskCreate
from store import InvalidData, Store
from tests.helpers import assert_problem, in_process, server_env, wait_for_no_app_connections
from tests.servers import PostgresDatabase, run_sql
from tests.users import new_user


@pytest.fixture(scope="module")
def pg_store(postgres_database):
    migrations.upgrade(postgres_database.url)
    store = Store(postgres_database.url)
    yield store
    store.dispose()


@pytest.mark.parametrize(
    "title",
    ["a\x00b", "a\ud800", "x" * 201],
    ids=["NUL", "lone surrogate", "longer than the column"],
)
def test_values_postgresql_refuses_are_invalid_data(pg_store, title):
    user = Caller(f"user-{uuid.uuid4().hex}")
    pg_store.ensure_user(user)
    unchecked = TaskCreate.model_construct(
        title=title, description=None, due_date=None, completed=False
    )  # as if validation had let it by
    with pytest.raises(InvalidData):
        pg_store.create_task(user, unchecked)
    with pytest.raises(InvalidData):
        pg_store.update_task(user, 1, {"title": title})
    assert pg_store.list_tasks(user, ListQuery()).body == b"[]"  # nothing stored, pool usable


def test_invalid_data_is_400_problem_details():
    async def refused(request):
        raise InvalidData("A string literal cannot contain NUL (0x00) characters.")

    app = Starlette(routes=[Route("/refused", refused)], exception_handlers=EXCEPTION_HANDLERS)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/refused")

    response = asyncio.run(get())
    problem = assert_problem(response, 400)
    assert "NUL" not in problem["detail"]  # the driver's wording stays in the log


def test_dead_connection_check_works_past_1024_file_descriptors(postgres_database):
    """The checkout check of pooled connections must not depend on select()'s FD_SETSIZE: a busy
    worker (many client sockets, a raised `ulimit -n`) gets connection descriptors past 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-file limit {hard} is too low to reach descriptor 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = []
    try:
        while not filler or filler[-1] < 1100:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        store = Store(postgres_database.url)
        try:
            store.ping()  # a new connection, now pooled, its socket past descriptor 1024
            store.ping()  # its checkout checks that socket
            assert postgres_database.terminate_connections() > 0
            wait_for_no_app_connections(postgres_database)
            store.ping()  # the killed connection is noticed and replaced
        finally:
            store.dispose()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_times_are_utc_whatever_the_session_time_zone(postgres_admin_url):
    """PostgreSQL answers timestamptz in the session's TimeZone, which a server, a role or a
    pooler may set; every time the API sends is still UTC with a `Z` (docs/api.md: Data), on fresh
    answers and on Idempotency-Key replays (rebuilt from row_to_json text in that zone)."""
    database = PostgresDatabase(postgres_admin_url)
    run_sql(
        postgres_admin_url, f"ALTER DATABASE \"{database.name}\" SET timezone TO 'Asia/Kolkata'"
    )
    try:
        with in_process(server_env(database.url)) as client:
            assert run_sql(database.url, "SHOW timezone") == [("Asia/Kolkata",)]
            user = new_user()
            body = {"title": "late", "due_date": "2030-01-31T23:00:00Z", "completed": True}
            keyed = {**user.headers, "Idempotency-Key": f"tz-{uuid.uuid4()}"}
            created = client.post("/api/tasks", json=body, headers=keyed)
            replayed = client.post("/api/tasks", json=body, headers=keyed)
            listed = client.get("/api/tasks", headers=user.headers)
        assert created.status_code == 201 and replayed.headers["idempotent-replayed"] == "true"
        assert replayed.content == created.content
        task = created.json()
        assert listed.json() == [task]
        assert task["due_date"] == "2030-01-31T23:00:00Z"
        for name in ("created_at", "updated_at", "completed_at"):
            assert task[name].endswith("Z"), (name, task[name])
    finally:
        database.drop()


@pytest.mark.parametrize("sort", ["created", "due_date", "title"])
def test_a_page_after_a_sort_value_given_as_text(database_url, sort):
    """A cursor carries Page.last as JSON, a time as ISO 8601 text (handlers/cursors.py): the
    store reads that text as the time it stands for, on both databases, and gives the page
    that follows the last task, as for the value Page.last gave."""
    migrations.upgrade(database_url)
    store = Store(database_url)
    caller = Caller(f"user-{uuid.uuid4().hex}")
    try:
        for n in range(3):
            store.create_task(caller, TaskCreate(title=f"t{n}", due_date=f"2030-01-0{n + 1}"))
        everything = json.loads(store.list_tasks(caller, ListQuery(sort=sort)).body)
        query = ListQuery(sort=sort, limit=1)
        first = store.list_tasks(caller, query)
        assert first.last is not None
        value, task_id = first.last
        text = value.isoformat() if isinstance(value, datetime) else value
        after_text = store.list_tasks(caller, query, (text, task_id))
        assert json.loads(after_text.body) == everything[1:2]
        assert after_text == store.list_tasks(caller, query, first.last)
    finally:
        store.dispose()
