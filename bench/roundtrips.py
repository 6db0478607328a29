"""Section 1: database round trips per request, counted on the wire (tests/pgwire.py).

Each case runs once per route family (`/api/tasks...` and `/api/{user_id}/tasks...`) as a fresh
user, in an order where every case finds the state it needs. The count is every query message
psycopg2 sent while the request ran, whatever the code above the driver does.
"""

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bench import harness
from bench.report import Row, Section
from tests.pgwire import RoundTripProxy

STEADY = 1  # target of a successful request of a known user
AT_MOST_TWO = 2  # target of a user's first request, an Idempotency-Key request, a failure


@dataclass(frozen=True)
class Trip:
    case: str
    target: int
    expected_status: int
    status: int
    round_trips: int


class Walk:
    """Runs the cases in order for one user and family, recording each request's trips."""

    def __init__(self, http: httpx.Client, proxy: RoundTripProxy, base: str) -> None:
        self.http, self.proxy, self.base = http, proxy, base
        self.trips: list[Trip] = []

    def count(self, case: str, target: int, status: int, call: Callable[[], httpx.Response]):
        self.proxy.reset()
        response = call()
        self.trips.append(Trip(case, target, status, response.status_code, self.proxy.round_trips))
        return response

    def run(self) -> list[Trip]:
        http, base, count = self.http, self.base, self.count
        first = count(
            "user's first request (POST)",
            AT_MOST_TWO,
            201,
            lambda: http.post(base, json={"title": "first"}),
        )
        task = f"{base}/{first.json()['id']}"
        for number in range(3):
            http.post(base, json={"title": f"more {number}"})
        count("create (POST)", STEADY, 201, lambda: http.post(base, json={"title": "t"}))
        listed = count("list (GET)", STEADY, 200, lambda: http.get(base))
        count(
            "list, If-None-Match -> 304",
            STEADY,
            304,
            lambda: http.get(base, headers={"If-None-Match": listed.headers["etag"]}),
        )
        page = http.get(base, params={"limit": 2, "sort": "title"})
        count(
            "list page: limit=2 + cursor (next link)",
            STEADY,
            200,
            lambda: http.get(page.links["next"]["url"]),
        )
        got = count("get (GET)", STEADY, 200, lambda: http.get(task))
        count(
            "get, If-None-Match -> 304",
            STEADY,
            304,
            lambda: http.get(task, headers={"If-None-Match": got.headers["etag"]}),
        )
        count("update (PUT)", STEADY, 200, lambda: http.put(task, json={"title": "put"}))
        count("update (PATCH)", STEADY, 200, lambda: http.patch(task, json={"description": "d"}))
        count("toggle (PATCH .../complete)", STEADY, 200, lambda: http.patch(f"{task}/complete"))
        etag = http.get(task).headers["etag"]
        count(
            "update (PUT), If-Match current",
            STEADY,
            200,
            lambda: http.put(task, json={"title": "if"}, headers={"If-Match": etag}),
        )
        count(
            "update (PUT), If-Match stale -> 412",
            AT_MOST_TWO,
            412,
            lambda: http.put(task, json={"title": "stale"}, headers={"If-Match": etag}),
        )
        etag = http.get(task).headers["etag"]
        count(
            "toggle, If-Match current",
            STEADY,
            200,
            lambda: http.patch(f"{task}/complete", headers={"If-Match": etag}),
        )
        count(
            "delete (DELETE), If-Match stale -> 412",
            AT_MOST_TWO,
            412,
            lambda: http.delete(task, headers={"If-Match": etag}),
        )
        key = {"Idempotency-Key": f"bench-{id(self)}-create"}
        count(
            "create with Idempotency-Key",
            AT_MOST_TWO,
            201,
            lambda: http.post(base, json={"title": "idem"}, headers=key),
        )
        count(
            "create with Idempotency-Key, replay",
            AT_MOST_TWO,
            201,
            lambda: http.post(base, json={"title": "idem"}, headers=key),
        )
        count(
            "update (PUT) with Idempotency-Key",
            AT_MOST_TWO,
            200,
            lambda: http.put(
                task, json={"title": "idem"}, headers={"Idempotency-Key": f"u-{id(self)}"}
            ),
        )
        count(
            "toggle with Idempotency-Key",
            AT_MOST_TWO,
            200,
            lambda: http.patch(f"{task}/complete", headers={"Idempotency-Key": f"t-{id(self)}"}),
        )
        missing = f"{base}/2147483000"
        count("get missing -> 404", AT_MOST_TWO, 404, lambda: http.get(missing))
        count(
            "update missing -> 404",
            AT_MOST_TWO,
            404,
            lambda: http.put(missing, json={"title": "x"}),
        )
        count("delete missing -> 404", AT_MOST_TWO, 404, lambda: http.delete(missing))
        etag = http.get(task).headers["etag"]
        count(
            "delete (DELETE), If-Match current",
            STEADY,
            204,
            lambda: http.delete(task, headers={"If-Match": etag}),
        )
        plain = http.post(base, json={"title": "to delete"}).json()["id"]
        count("delete (DELETE)", STEADY, 204, lambda: http.delete(f"{base}/{plain}"))
        return self.trips


def measure(database_url: str) -> Section:
    """The round trips of every case, both families, on a server behind the counting proxy."""
    with (
        harness.proxied(database_url) as (url, proxy),
        harness.serving(harness.app_env(url)) as server,
    ):
        with httpx.Client(base_url=server.url, timeout=30) as http:
            warm = harness.user()
            # the pool and the dialect are set up before anything is counted
            http.get("/api/tasks", headers=warm.headers).raise_for_status()
        families = {}
        for family, prefix in (("A", "/api"), ("B", "/api/{user}")):
            caller = harness.user()
            with httpx.Client(base_url=server.url, headers=caller.headers, timeout=30) as http:
                base = f"{server.url}{prefix.format(user=caller.id)}/tasks"
                families[family] = Walk(http, proxy, base).run()
    return Section(
        rows=[_row(a, b) for a, b in zip(families["A"], families["B"])],
        details=[
            "Round trips are counted by `tests/pgwire.py`'s `RoundTripProxy` between the app and "
            "PostgreSQL: every simple Query or extended-protocol Sync the driver sends while the "
            "request runs. Each case is shown as *family A · family B* "
            "(`/api/tasks...` · `/api/{user_id}/tasks...`); a status other than the expected one "
            "is printed next to the count."
        ],
    )


def _row(a: Trip, b: Trip) -> Row:
    def shown(trip: Trip) -> str:
        wrong = "" if trip.status == trip.expected_status else f" (status {trip.status}!)"
        return f"{trip.round_trips}{wrong}"

    ok = all(t.round_trips <= t.target and t.status == t.expected_status for t in (a, b))
    target = "1" if a.target == STEADY else "≤ 2"
    return Row("round trips", a.case, f"{shown(a)} · {shown(b)}", target, ok)
