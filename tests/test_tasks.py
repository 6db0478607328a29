"""Task endpoints end to end (docs/api.md: Endpoints), both route families, SQLite and
PostgreSQL."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from urllib.parse import quote

import pytest

from tests.helpers import Api, assert_problem, rows
from tests.users import User, make_token

TASK_KEYS = {
    "id",
    "title",
    "description",
    "completed",
    "due_date",
    "completed_at",
    "created_at",
    "updated_at",
}


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value} has no offset"
    assert parsed.utcoffset().total_seconds() == 0, f"{value} is not UTC"
    return parsed


def test_create_returns_task_and_location(api):
    response = api.create(
        {"title": "  Buy milk  ", "description": "2 litres", "due_date": "2030-01-31"}
    )
    assert response.status_code == 201
    task = response.json()
    assert set(task) == TASK_KEYS
    assert task["title"] == "Buy milk"
    assert task["description"] == "2 litres"
    assert task["completed"] is False
    assert parse_time(task["due_date"]) == datetime.fromisoformat("2030-01-31T00:00:00+00:00")
    assert task["created_at"] == task["updated_at"]
    parse_time(task["created_at"])
    assert response.headers["location"] == api.path(task["id"])
    assert response.headers["content-type"] == "application/json"
    assert api.client.get(response.headers["location"], headers=api.user.headers).json() == task


@pytest.mark.parametrize(
    "user_id", ["用户", "josé", "a b", "tab\there", "ctrl\x01", "line\r\nSet-Cookie: stolen=1"]
)
def test_location_is_a_valid_header_for_any_user_id(client, user_id):
    """Family B's Location carries the path's user id: percent-encoded, never a 500 after the
    task is stored, never a header split."""
    user_id = f"{user_id}-{uuid.uuid4().hex[:8]}"
    api = Api(client, User(user_id, make_token({"sub": user_id})), "B")
    api.prefix = f"/api/{quote(user_id, safe='')}"
    created = api.create({"title": "t"})
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    assert location.isascii() and location.isprintable(), location
    assert "set-cookie" not in created.headers
    assert client.get(location, headers=api.user.headers).json() == created.json()


def test_create_minimal_and_completed(api):
    task = api.new_task(title="x")
    assert (task["description"], task["due_date"], task["completed"]) == (None, None, False)
    assert api.new_task(completed=True)["completed"] is True


def test_due_date_forms_are_stored_in_utc(api):
    cases = {
        "2030-06-01T12:00:00+02:00": "2030-06-01T10:00:00+00:00",
        "2030-06-01T12:00:00Z": "2030-06-01T12:00:00+00:00",
        "2030-06-01T12:00:00": "2030-06-01T12:00:00+00:00",
        "2030-06-01": "2030-06-01T00:00:00+00:00",
    }
    for sent, stored in cases.items():
        task = api.new_task(due_date=sent)
        assert parse_time(task["due_date"]) == datetime.fromisoformat(stored), sent
        assert api.get(task["id"]).json()["due_date"] == task["due_date"]


def test_list_get_and_empty_list(api):
    assert api.list().json() == []
    first, second = api.new_task(title="one"), api.new_task(title="two")
    listed = api.list()
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()] == [second["id"], first["id"]]  # newest first
    assert api.get(first["id"]).json() == first


def test_partial_update_changes_only_sent_fields(api):
    task = api.new_task(title="t", description="d", due_date="2030-01-01")
    for method in ("PUT", "PATCH"):
        response = api.update(task["id"], {"description": f"by {method}"}, method=method)
        assert response.status_code == 200
        updated = response.json()
        assert updated["description"] == f"by {method}"
        assert (updated["title"], updated["due_date"]) == ("t", task["due_date"])
        assert updated["created_at"] == task["created_at"]
        assert parse_time(updated["updated_at"]) > parse_time(task["updated_at"])
    cleared = api.update(task["id"], {"description": None, "due_date": None}).json()
    assert (cleared["description"], cleared["due_date"]) == (None, None)
    done = api.update(task["id"], {"completed": True, "title": " new "}).json()
    assert (done["completed"], done["title"]) == (True, "new")
    assert api.get(task["id"]).json() == done


def test_empty_update_changes_nothing(api):
    task = api.new_task()
    response = api.update(task["id"], {})
    assert response.status_code == 200
    assert response.json() == task


def test_read_only_fields_are_never_applied(api, other, db):
    sneaky = {
        "title": "mine",
        "id": 999999,
        "user_id": other.user.id,
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
    }
    task = api.new_task(**sneaky)
    assert task["id"] != 999999
    assert parse_time(task["created_at"]).year > 2000
    assert parse_time(task["updated_at"]).year > 2000
    for method in ("PUT", "PATCH"):
        updated = api.update(task["id"], {**sneaky, "title": "still mine"}, method=method).json()
        assert updated["id"] == task["id"]
        assert updated["created_at"] == task["created_at"]
        assert parse_time(updated["updated_at"]).year > 2000
    stored = rows(db, "SELECT user_id FROM tasks WHERE id = :id", id=task["id"])
    assert stored == [{"user_id": api.user.id}]
    assert other.list().json() == []


def test_toggle_flips_completed(api):
    task = api.new_task()
    once = api.toggle(task["id"])
    assert once.status_code == 200
    assert once.json()["completed"] is True
    assert parse_time(once.json()["updated_at"]) > parse_time(task["updated_at"])
    assert api.toggle(task["id"]).json()["completed"] is False
    assert api.get(task["id"]).json()["completed"] is False


def test_delete(api):
    task = api.new_task()
    response = api.delete(task["id"])
    assert response.status_code == 204
    assert response.content == b""
    assert api.get(task["id"]).status_code == 404
    assert api.delete(task["id"]).status_code == 404


def test_status_filter(api):
    open_task = api.new_task(title="open")
    done_task = api.new_task(title="done", completed=True)
    ids = lambda response: [t["id"] for t in response.json()]  # noqa: E731
    assert ids(api.list(status="pending")) == [open_task["id"]]
    assert ids(api.list(status="completed")) == [done_task["id"]]
    assert ids(api.list(status="all")) == [done_task["id"], open_task["id"]]


def test_sort_by_title_is_case_insensitive_with_ties_on_id(api):
    made = [api.new_task(title=title)["id"] for title in ("banana", "Apple", "cherry", "apple")]
    apple_upper, apple_lower = made[1], made[3]
    expected_asc = [apple_upper, apple_lower, made[0], made[2]]
    assert [t["id"] for t in api.list(sort="title").json()] == expected_asc
    expected_desc = [made[2], made[0], apple_lower, apple_upper]
    assert [t["id"] for t in api.list(sort="title", order="desc").json()] == expected_desc


def test_sort_by_title_outside_ascii_is_as_documented(api, db):
    """docs/api.md: `title` ignores the case of A-Z on both databases; beyond ASCII, PostgreSQL
    folds case by its database's LC_CTYPE (Unicode-aware under a UTF-8 locale, such as Neon's
    C.UTF-8), SQLite not at all: there "Éclair" and "éclair" are two keys, in code point order."""
    made = {
        title: api.new_task(title=title)["id"] for title in ("éclair", "Zebra", "Éclair", "apple")
    }
    listed = [t["title"] for t in api.list(sort="title").json()]
    if db.dialect.name == "sqlite":
        assert listed == ["apple", "Zebra", "Éclair", "éclair"]
        return
    ctype = rows(db, "SELECT datctype FROM pg_database WHERE datname = current_database()")
    if ctype[0]["datctype"] in ("C", "POSIX"):
        assert listed == ["apple", "Zebra", "Éclair", "éclair"]
    else:  # one key for both: adjacent, in id order (where Zebra goes is the collation's)
        ids = [t["id"] for t in api.list(sort="title").json()]
        pair = sorted([made["éclair"], made["Éclair"]])
        assert listed[0] == "apple" and pair in (ids[1:3], ids[2:4]), listed


def test_sort_by_created(api):
    made = [api.new_task(title=str(n))["id"] for n in range(4)]
    assert [t["id"] for t in api.list().json()] == made[::-1]
    assert [t["id"] for t in api.list(sort="created", order="desc").json()] == made[::-1]
    assert [t["id"] for t in api.list(sort="created", order="asc").json()] == made


def test_sort_by_due_date_soonest_first_no_date_last(api):
    late = api.new_task(due_date="2031-01-01")["id"]
    none_1 = api.new_task()["id"]
    soon = api.new_task(due_date="2030-01-01")["id"]
    tie = api.new_task(due_date="2030-01-01")["id"]
    none_2 = api.new_task()["id"]
    assert [t["id"] for t in api.list(sort="due_date").json()] == [soon, tie, late, none_1, none_2]
    desc = [t["id"] for t in api.list(sort="due_date", order="desc").json()]
    assert desc == [late, tie, soon, none_2, none_1]


def test_filter_and_sort_combined(api):
    a = api.new_task(title="b", completed=True)["id"]
    api.new_task(title="a")
    c = api.new_task(title="A", completed=True)["id"]
    listed = api.list(status="completed", sort="title", order="asc").json()
    assert [t["id"] for t in listed] == [c, a]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "done"},
        {"sort": "priority"},
        {"order": "up"},
        {"sort": ""},
        {"status": "ALL"},
    ],
)
def test_invalid_list_query_is_400(api, params):
    assert_problem(api.list(**params), 400, next(iter(params)))


def test_unknown_query_parameters_are_ignored(api):
    task = api.new_task()
    response = api.request("GET", api.path(), params={"user_id": "someone-else", "page": "2"})
    assert [t["id"] for t in response.json()] == [task["id"]]


def test_completed_at_follows_completion_by_every_route(api):
    task = api.new_task()
    assert task["completed_at"] is None
    done = api.toggle(task["id"]).json()
    assert parse_time(done["completed_at"]) == parse_time(done["updated_at"])
    again = api.update(task["id"], {"completed": True, "title": "still done"}).json()
    assert again["completed_at"] == done["completed_at"]  # stays from the first completion
    reopened = api.update(task["id"], {"completed": False}, method="PATCH").json()
    assert reopened["completed_at"] is None
    assert api.toggle(task["id"]).json()["completed_at"] is not None
    assert api.toggle(task["id"]).json()["completed_at"] is None
    created_done = api.new_task(completed=True)
    assert parse_time(created_done["completed_at"]) == parse_time(created_done["created_at"])


def test_sort_by_updated_and_completed(api):
    first, second, third = (api.new_task(title=str(n))["id"] for n in range(3))
    api.update(first, {"title": "touched"})
    assert [t["id"] for t in api.list(sort="updated").json()] == [first, third, second]
    assert [t["id"] for t in api.list(sort="updated", order="asc").json()] == [second, third, first]
    api.toggle(third)
    api.toggle(first)
    newest_done = [t["id"] for t in api.list(sort="completed").json()]
    assert newest_done == [first, third, second]  # never completed: last
    assert [t["id"] for t in api.list(sort="completed", order="asc").json()] == [
        third,
        first,
        second,
    ]


def test_reads_run_on_the_lifespans_bounded_read_threads(client, api):
    """Lists and gets run on the event loop's executor that the app's lifespan sized to
    `THREADS` (writes on Starlette's thread pool): 60 reads in flight at once use at most
    that many read threads."""
    from app import THREADS  # app.py is imported (once, with its environment) by `client`

    task_id = api.create({"title": "read me"}).json()["id"]
    paths = [f"{api.prefix}/tasks", f"{api.prefix}/tasks/{task_id}"] * 30
    with ThreadPoolExecutor(60) as requests:
        answers = list(
            requests.map(lambda path: api.client.get(path, headers=api.user.headers), paths)
        )
    assert {response.status_code for response in answers} == {200}
    readers = [t.name for t in threading.enumerate() if t.name.startswith("store-read_")]
    assert 0 < len(readers) <= THREADS, readers
