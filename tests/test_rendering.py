"""Task JSON rendered by PostgreSQL is byte for byte the JSON the Python path writes
(statements.py: "Task answers rendered by PostgreSQL"), over any task contents: Unicode and control
characters, the extreme dates Python can hold, times with and without microseconds, every list
shape and page. Three renderings are compared: PostgreSQL's, Python's over the same PostgreSQL
rows (`Store(json_by_database=False)`), and Python's over SQLite, the embedded default."""

import re
import uuid
from datetime import datetime, timezone
from typing import get_type_hints

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st
from pydantic import ValidationError

import migrations
import store as store_module
from middleware.tokens import Caller
from schemas.tasks import ListQuery, TaskCreate, TaskPublic, TaskRow
from store import Store
from tests.servers import PostgresDatabase, run_sql

# Any text a task may hold: no NUL, no lone surrogates (both refused by validation).
TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
UTC_TIMES = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
    timezones=st.just(timezone.utc),
)
TASKS = st.builds(
    dict,
    title=st.text(TEXT, min_size=1, max_size=200),
    description=st.none() | st.text(TEXT, max_size=1000),
    due_date=st.none() | UTC_TIMES,
    completed=st.booleans(),
)
SHAPES = [
    (status, sort, order)
    for status in ("all", "pending", "completed")
    for sort in ("created", "updated", "completed", "title", "due_date")
    for order in ("asc", "desc")
]
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def stores(postgres_admin_url, tmp_path_factory):
    """(PostgreSQL rendering, Python over the same PostgreSQL, Python over SQLite, PostgreSQL
    rendering with the session TimeZone at +14:00)."""
    utc, far_east = PostgresDatabase(postgres_admin_url), PostgresDatabase(postgres_admin_url)
    run_sql(
        postgres_admin_url,
        f"ALTER DATABASE \"{far_east.name}\" SET timezone = 'Pacific/Kiritimati'",
    )
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('rendering')}/todo.db"
    for url in (utc.url, sqlite_url, far_east.url):
        migrations.upgrade(url)
    made = (
        Store(utc.url),
        Store(utc.url, json_by_database=False),
        Store(sqlite_url),
        Store(far_east.url),
    )
    yield made
    for one in made:
        one.dispose()
    utc.drop()
    far_east.drop()


def _without_ids(body: bytes) -> bytes:
    """`body` with every task id as 0: ids differ between databases."""
    return re.sub(rb'(^|\[|,)\{"id":\d+,', rb'\1{"id":0,', body)


def _task(contents: dict) -> TaskCreate:
    try:
        return TaskCreate.model_validate(contents)
    except ValidationError:
        assume(False)  # e.g. a title of spaces only, refused with 400


def _same_position(rendered, python) -> bool:
    """Page.last of both paths names the same task and sort value (PostgreSQL gives times as
    ISO 8601 text, Python as datetimes; Cursors.encode writes either)."""
    if rendered is None or python is None:
        return rendered is python
    value, task_id = rendered
    if isinstance(python[0], datetime):
        value = datetime.fromisoformat(value)
    return (value, task_id) == python


# Every character either encoder escapes, and some that neither does.
ESCAPED = (
    "a" + "".join(map(chr, range(1, 32))) + '\x7f"\\/\u2028\u2029\ufeff\uffff\U0001f600e\u0301z'
)
EARLIEST, LATEST = (
    datetime(1, 1, 1, tzinfo=timezone.utc),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
)


@SETTINGS
@given(tasks=st.lists(TASKS, min_size=1, max_size=4), now=UTC_TIMES)
@example(
    tasks=[{"title": ESCAPED, "description": ESCAPED, "due_date": LATEST, "completed": True}],
    now=EARLIEST,
)
@example(
    tasks=[{"title": "x", "description": "", "due_date": EARLIEST, "completed": False}], now=LATEST
)
def test_single_task_answers_are_the_same_bytes(stores, monkeypatch, tasks, now):
    """POST, GET, PATCH and toggle answers on every path."""
    monkeypatch.setattr(store_module, "_now", lambda: now)
    user = Caller(f"user-{uuid.uuid4().hex}")
    for contents in tasks:
        data = _task(contents)
        bodies = set()
        for one in stores:
            created = one.create_task(user, data)
            read = one.get_task(user, created["id"])
            changed = one.update_task(user, created["id"], {"description": data.title})
            toggled = one.toggle_task(user, created["id"])
            assert read == created
            assert (changed["version"], toggled["version"]) == (2, 3)
            bodies.add(
                tuple(_without_ids(answer["body"]) for answer in (created, changed, toggled))
            )
        assert len(bodies) == 1


@SETTINGS
@given(tasks=st.lists(TASKS, min_size=1, max_size=6), now=UTC_TIMES, limit=st.integers(1, 4))
def test_list_pages_are_the_same_bytes(stores, monkeypatch, tasks, now, limit):
    """Every list shape, page by page: PostgreSQL's body and next-page position are the
    Python path's over the same rows."""
    database, python, _, _ = stores
    monkeypatch.setattr(store_module, "_now", lambda: now)
    user = Caller(f"user-{uuid.uuid4().hex}")
    for contents in tasks:
        database.create_task(user, _task(contents))
    for status, sort, order in SHAPES:
        query = ListQuery(status=status, sort=sort, order=order, limit=limit)
        after = None
        for _ in range(len(tasks) + 1):
            rendered = database.list_tasks(user, query, after)
            expected = python.list_tasks(user, query, after)
            assert rendered.body == expected.body, (status, sort, order)
            assert rendered.versions == expected.versions
            assert _same_position(rendered.last, expected.last)
            if expected.last is None:
                break
            after = expected.last


@SETTINGS
@given(tasks=st.lists(TASKS, min_size=1, max_size=4), now=UTC_TIMES)
def test_lists_are_the_same_bytes_on_sqlite(stores, monkeypatch, tasks, now):
    """Newest first (ties by id, in insertion order on both databases), the embedded default
    gives the same list as PostgreSQL, whatever PostgreSQL's session TimeZone."""
    database, _, sqlite, far_east = stores
    monkeypatch.setattr(store_module, "_now", lambda: now)
    user = Caller(f"user-{uuid.uuid4().hex}")
    for one in (database, sqlite, far_east):
        for contents in tasks:
            one.create_task(user, _task(contents))
    bodies = {
        _without_ids(one.list_tasks(user, ListQuery()).body) for one in (database, sqlite, far_east)
    }
    assert len(bodies) == 1


def test_a_key_stored_by_an_earlier_version_replays_the_same_bytes(stores):
    """Idempotency-Keys stored before answers were rendered hold the task row as JSON (in the
    session's TimeZone): a replay still gives the task's bytes."""
    user = Caller(f"user-{uuid.uuid4().hex}")
    for one in (stores[0], stores[3]):
        task = one.create_task(user, TaskCreate(title='Ünïcode "1"', due_date="2030-01-31"))
        with one.engine.connect() as connection:
            connection.exec_driver_sql(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, created_at, status, "
                "response) SELECT user_id, %(key)s, 'f', now(), 201, row_to_json(tasks)::text "
                "FROM tasks WHERE id = %(id)s",
                {"key": f"key-{task['id']}", "id": task["id"]},
            )
        assert one.claim_key(user, f"key-{task['id']}", "f")["response"] == task


def test_task_rows_have_exactly_the_fields_of_task_public():
    """The Python path renders rows through TaskRow: its members are TaskPublic's, in the same
    order and of the same types, so both write the same JSON."""
    hints = get_type_hints(TaskPublic)
    assert list(get_type_hints(TaskRow).items()) == [
        (name, hints[name]) for name in TaskPublic.model_fields
    ]
