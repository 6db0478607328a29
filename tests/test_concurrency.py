"""Races: many first requests of one new user, many toggles of one task (SPEC.md: Users,
issue #2: the toggle is one atomic UPDATE)."""

from tests.helpers import Api, in_parallel, rows
from tests.users import new_user

PARALLEL = 50


def test_concurrent_first_requests_of_a_new_user(client, db):
    user = new_user()

    def first_call(http, n):
        if n % 2:
            return http.get("/api/tasks", headers=user.headers)
        return http.post("/api/tasks", json={"title": f"t{n}"}, headers=user.headers)

    responses = in_parallel(client, PARALLEL, first_call)
    assert sorted({r.status_code for r in responses}) == [200, 201]
    assert rows(db, "SELECT count(*) AS n FROM users WHERE id = :id", id=user.id) == [{"n": 1}]
    tasks = rows(db, "SELECT count(*) AS n FROM tasks WHERE user_id = :id", id=user.id)
    assert tasks == [{"n": PARALLEL // 2}]


def test_concurrent_toggles_lose_no_update(client, family):
    api = Api(client, new_user(), family)
    task = api.new_task()
    toggles = PARALLEL + 1  # odd: the task must end completed
    responses = in_parallel(
        client, toggles, lambda http, n: Api(http, api.user, family).toggle(task["id"])
    )
    assert [r.status_code for r in responses] == [200] * toggles
    seen = sorted(r.json()["completed"] for r in responses)
    assert seen.count(True) == toggles // 2 + 1  # each toggle saw a distinct state
    assert api.get(task["id"]).json()["completed"] is True


def test_parallel_updates_of_different_fields_all_survive(client, family):
    """An update is one `UPDATE ... SET` of only the members sent (README: Update), so parallel
    updates of different fields of one task never undo each other."""
    api = Api(client, new_user(), family)
    task = api.new_task()
    values = {
        "title": lambda n: f"title {n}",
        "description": lambda n: f"description {n}",
        "due_date": lambda n: f"2030-01-{n + 1:02d}T00:00:00Z",
        "completed": lambda n: n % 2 == 0,
    }
    copies = 3  # each field sent three times per round, with the same value
    for n in range(8):
        bodies = [{field: value(n)} for field, value in values.items()] * copies
        responses = in_parallel(client, len(bodies), lambda http, i: Api(
            http, api.user, family).update(task["id"], bodies[i], method="PATCH"))
        assert [r.status_code for r in responses] == [200] * len(bodies)
        stored = api.get(task["id"]).json()
        assert stored["title"] == values["title"](n)
        assert stored["description"] == values["description"](n)
        assert stored["due_date"].startswith(f"2030-01-{n + 1:02d}T00:00:00")
        assert stored["completed"] is values["completed"](n)
