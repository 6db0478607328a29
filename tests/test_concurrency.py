"""Races: many first requests of one new user, many toggles of one task (SPEC.md: Users,
issue #2: the toggle is one atomic UPDATE)."""

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import Api, new_user, rows

PARALLEL = 50


def in_parallel(server, count: int, call) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    with httpx.Client(base_url=server.url, timeout=60, limits=limits) as http:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(lambda n: call(http, n), range(count)))


def test_concurrent_first_requests_of_a_new_user(server, db):
    user = new_user()

    def first_call(http, n):
        if n % 2:
            return http.get("/api/tasks", headers=user.headers)
        return http.post("/api/tasks", json={"title": f"t{n}"}, headers=user.headers)

    responses = in_parallel(server, PARALLEL, first_call)
    assert sorted({r.status_code for r in responses}) == [200, 201]
    assert rows(db, "SELECT count(*) AS n FROM users WHERE id = :id", id=user.id) == [{"n": 1}]
    tasks = rows(db, "SELECT count(*) AS n FROM tasks WHERE user_id = :id", id=user.id)
    assert tasks == [{"n": PARALLEL // 2}]


def test_concurrent_toggles_lose_no_update(server, client, family):
    api = Api(client, new_user(), family)
    task = api.new_task()
    toggles = PARALLEL + 1  # odd: the task must end completed
    responses = in_parallel(
        server, toggles, lambda http, n: Api(http, api.user, family).toggle(task["id"])
    )
    assert [r.status_code for r in responses] == [200] * toggles
    seen = sorted(r.json()["completed"] for r in responses)
    assert seen.count(True) == toggles // 2 + 1  # each toggle saw a distinct state
    assert api.get(task["id"]).json()["completed"] is True
