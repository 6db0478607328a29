"""Tasks are private: another user's task is indistinguishable from a missing one (404), and a
foreign path user is 403 (docs/api.md: Endpoints)."""

from urllib.parse import quote

import jwt

from tests.helpers import Api, assert_problem, rows
from tests.users import new_user

MISSING_ID = 2147483000  # in range, never created

ENDPOINTS = {
    "GET": lambda api, task_id: api.get(task_id),
    "PUT": lambda api, task_id: api.update(task_id, {"title": "stolen"}),
    "PATCH": lambda api, task_id: api.update(task_id, {"completed": True}, method="PATCH"),
    "PATCH complete": lambda api, task_id: api.toggle(task_id),
    "DELETE": lambda api, task_id: api.delete(task_id),
}


def answer(response) -> tuple:
    """What a client can tell from a response, less the per-request id."""
    return response.status_code, response.headers["content-type"], response.json()


def test_other_users_task_is_404_on_every_endpoint(api, other, db):
    """OWASP API1: another user's task answers exactly as a missing one, and stays unchanged."""
    task = api.new_task(title="private", description="secret")
    stored = rows(db, "SELECT * FROM tasks WHERE id = :id", id=task["id"])
    for name, call in ENDPOINTS.items():
        foreign = call(other, task["id"])
        assert_problem(foreign, 404)
        assert answer(foreign) == answer(call(other, MISSING_ID)), name
    assert other.list().json() == []
    assert rows(db, "SELECT * FROM tasks WHERE id = :id", id=task["id"]) == stored
    assert api.get(task["id"]).json() == task


def test_lists_are_scoped_to_the_caller(api, other):
    mine = api.new_task(title="mine")
    theirs = other.new_task(title="theirs")
    assert [t["id"] for t in api.list().json()] == [mine["id"]]
    assert [t["id"] for t in other.list().json()] == [theirs["id"]]


def app_queries(db) -> list[tuple] | None:
    """For PostgreSQL, each app connection to the database with the start of its latest
    statement: any statement the app runs changes this (pg_stat_activity is live, not sampled).
    None for SQLite, which keeps no such record."""
    if db.dialect.name != "postgresql":
        return None
    return [
        tuple(r.values())
        for r in rows(
            db,
            "SELECT pid, backend_start, query_start FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'todo-api' ORDER BY pid",
        )
    ]


def test_foreign_path_user_is_403_before_any_query(client, api, db):
    task = api.new_task()
    intruder = new_user()
    foreign = Api(client, intruder, "A")
    foreign.prefix = f"/api/{api.user.id}"  # intruder's token, victim's path
    before = app_queries(db)
    assert before is None or before, "the app holds no connection to watch"
    assert_problem(foreign.list(), 403)
    assert_problem(foreign.list(status="bogus"), 403)
    assert_problem(foreign.create({"title": "planted"}), 403)
    assert_problem(foreign.create(content=b"not even json"), 403)
    for call in ENDPOINTS.values():
        assert_problem(call(foreign, task["id"]), 403)
    assert_problem(foreign.get("abc"), 403)
    assert_problem(foreign.request("TRACE", foreign.path()), 403)  # nothing about the path
    assert app_queries(db) == before  # the app sent the database nothing at all
    assert rows(db, "SELECT id FROM users WHERE id = :id", id=intruder.id) == []
    assert api.list().json() == [task]


def test_user_id_in_the_query_string_changes_nothing(api, other):
    task = api.new_task()
    as_other = {"user_id": other.user.id}
    assert api.request("GET", api.path(), params=as_other).json() == [task]
    assert api.request("GET", api.path(task["id"]), params=as_other).json() == task
    as_owner = {"user_id": api.user.id}
    assert other.request("GET", other.path(), params=as_owner).json() == []
    for method, suffix, body in [
        ("GET", "", None),
        ("PUT", "", {"title": "x"}),
        ("PATCH", "", {"title": "x"}),
        ("PATCH", "/complete", None),
        ("DELETE", "", None),
    ]:
        response = other.request(method, other.path(task["id"], suffix), params=as_owner, json=body)
        assert_problem(response, 404)
    created = other.request("POST", other.path(), params=as_owner, json={"title": "theirs"})
    assert created.status_code == 201
    assert api.list().json() == [task]
    assert [t["id"] for t in other.list().json()] == [created.json()["id"]]


def test_both_families_see_the_same_tasks(client):
    user = new_user()
    family_a, family_b = Api(client, user, "A"), Api(client, user, "B")
    task = family_a.new_task()
    assert family_b.get(task["id"]).json() == task
    toggled = family_b.toggle(task["id"]).json()
    assert family_a.get(task["id"]).json() == toggled
    assert family_b.delete(task["id"]).status_code == 204
    assert family_a.list().json() == []


def test_user_ids_are_compared_byte_for_byte(client):
    """docs/frontend.md: no normalization. The NFC and NFD spellings of one name are two users,
    each seeing only their own tasks, on both route families."""
    nfc, nfd = "user-caf\u00e9", "user-cafe\u0301"
    users = {form: new_user(sub=form) for form in (nfc, nfd)}
    for form, user in users.items():
        Api(client, user, "A").new_task(title=form)
    for form, user in users.items():
        assert [t["title"] for t in Api(client, user, "A").list().json()] == [form]
        own = client.get(f"/api/{quote(form)}/tasks", headers=user.headers)
        assert [t["title"] for t in own.json()] == [form]
    other = client.get(f"/api/{quote(nfd)}/tasks", headers=users[nfc].headers)
    assert_problem(other, 403)


def test_a_user_id_with_a_slash_has_only_the_token_routes(client):
    """An id containing `/` cannot be a path segment (`%2F` is decoded before routing): the
    path routes are 404 for it, the token-only routes work."""
    user = new_user(sub=f"org/{new_user().id}")
    task = Api(client, user, "A").new_task()
    assert_problem(
        client.get(f"/api/{quote(user_id_of(user), safe='')}/tasks", headers=user.headers), 404
    )
    assert Api(client, user, "A").get(task["id"]).json() == task


def user_id_of(user) -> str:
    return jwt.decode(user.token, options={"verify_signature": False})["sub"]


def test_options_without_a_token_on_a_task_path_is_405(client, api):
    """OPTIONS passes the token check (CORS preflights need none); one that is not a preflight
    reaches the task path, where it is 405 with the path's methods, never a 500, in both
    families, also on another user's path."""
    task_path = {"GET", "HEAD", "PUT", "PATCH", "DELETE"}
    for path in (api.path(1), f"/api/{new_user().id}/tasks/1"):
        response = client.options(path)
        assert_problem(response, 405)
        assert set(response.headers["allow"].split(", ")) == task_path, path
