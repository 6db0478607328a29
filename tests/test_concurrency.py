"""Races: many first requests of one new user, many toggles of one task (docs/api.md: Users,
the toggle is one atomic UPDATE)."""

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import httpx
import pytest

from tests.helpers import Api, in_parallel, rows, server_env, wait_for_workers
from tests.servers import AppServer, unmeasured
from tests.users import User, new_user

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
    """An update is one `UPDATE ... SET` of only the members sent (docs/api.md: Validation), so
    parallel updates of different fields of one task never undo each other."""
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
        responses = in_parallel(
            client,
            len(bodies),
            lambda http, i: Api(http, api.user, family).update(
                task["id"], bodies[i], method="PATCH"
            ),
        )
        assert [r.status_code for r in responses] == [200] * len(bodies)
        stored = api.get(task["id"]).json()
        assert stored["title"] == values["title"](n)
        assert stored["description"] == values["description"](n)
        assert stored["due_date"].startswith(f"2030-01-{n + 1:02d}T00:00:00")
        assert stored["completed"] is values["completed"](n)


WRITER_PROCESSES, WRITERS_PER_PROCESS, WRITES = 4, 25, 10


def _writers(url: str, users: list[User]) -> list[int]:
    """One client per user of `users` writing at once, each user new: its row, then tasks
    created (with an Idempotency-Key), toggled and changed; the statuses they got."""

    def write(n: int) -> list[int]:
        with httpx.Client(base_url=url, timeout=60) as http:
            api = Api(http, users[n], "AB"[n % 2])
            statuses = []
            for r in range(WRITES):
                created = api.create({"title": f"w{r}"}, headers={"Idempotency-Key": f"k{r}"})
                statuses.append(created.status_code)
                if created.status_code == 201:
                    task_id = created.json()["id"]
                    statuses += [
                        api.toggle(task_id).status_code,
                        api.update(task_id, {"title": "u"}, method="PATCH").status_code,
                    ]
            return statuses

    with ThreadPoolExecutor(WRITERS_PER_PROCESS) as pool:
        return [status for statuses in pool.map(write, range(len(users))) for status in statuses]


@pytest.mark.parametrize("workers", [1, 2])
def test_100_concurrent_writers_on_sqlite_get_no_503(tmp_path, workers):
    """The embedded SQLite default, 100 clients writing at once (from several processes, so
    that they really are at once): the writers of a worker queue for the one write lock SQLite
    has instead of each polling for it, so none gives up with 503 "database is locked"; with
    several workers, SQLite's own wait only arbitrates between one writer per worker."""
    server = AppServer(  # coverage.py measures one worker: more run the same code
        server_env(f"sqlite:///{tmp_path}/todo.db"),
        args=["--workers", str(workers)],
        measured=workers == 1,
    ).start()
    if workers > 1:
        wait_for_workers(server, workers)
    try:
        # Tokens are signed here, with this process's test secret; the writer processes are
        # spawned, not forked: a fork of this multi-threaded process (in-process apps, coverage)
        # can copy a lock another thread holds and hang the child.
        users = [[new_user() for _ in range(WRITERS_PER_PROCESS)] for _ in range(WRITER_PROCESSES)]
        # The writers are clients: coverage.py has nothing to measure there.
        with mock.patch.dict(os.environ, clear=True, values=unmeasured(os.environ)):
            pool = multiprocessing.get_context("spawn").Pool(WRITER_PROCESSES)
        work = pool.starmap_async(_writers, [(server.url, part) for part in users])
        # close(), not the terminate() of `with Pool`: each worker leaves once the work is done.
        # SIGTERM can hang a worker that has coverage's Python SIGTERM handler: a signal landing
        # just before the worker blocks on the task queue's lock (which terminate() keeps) only
        # marks the handler due, and the wait never returns to run it (a CI run hung here 450 s).
        pool.close()
        try:
            parts = work.get(timeout=300)  # a hung writer fails the test instead of stalling
        except BaseException:
            pool.terminate()
            raise
        pool.join()
        statuses = [status for part in parts for status in part]
        counts = {status: statuses.count(status) for status in set(statuses)}
        writers = WRITER_PROCESSES * WRITERS_PER_PROCESS
        unavailable = [line for line in server.logs().splitlines() if "unavailable" in line]
        assert counts == {201: writers * WRITES, 200: 2 * writers * WRITES}, (counts, unavailable)
        assert "database is locked" not in server.logs()
    finally:
        server.stop()
