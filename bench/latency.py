"""Section 2: per-endpoint latency with 0 and with `delay_ms` of added database round-trip time.

Sequential requests from one httpx client (keep-alive), timed from send to full response, against
one server whose database connection runs through `RoundTripProxy`; the proxy's `delay` is the
far database (Neon in another region). Each endpoint gets a few untimed warm-up requests first.
"""

import functools
import os
import time
import uuid
from dataclasses import dataclass, field

import httpx
import psycopg2

from bench import harness
from bench.config import Settings
from bench.report import Row, Section
from tests.servers import run_sql
from tests.users import User

WARMUP = 5
SLACK_MS = 5.0  # the target: median at most the added RTT plus this


@dataclass
class Samples:
    """Durations (seconds) of one endpoint, and how many answers had an unexpected status."""

    seconds: list[float] = field(default_factory=list)
    unexpected: int = 0


class Endpoints:
    """The endpoints of one route family, each a call that makes one timed request. `reader`
    owns the listed tasks; `writer` owns task `task_id` and the tasks `create` adds."""

    def __init__(
        self, http: httpx.Client, family: str, reader: User, writer: User, task_id: int
    ) -> None:
        def base(owner: User) -> str:
            return "/api/tasks" if family == "A" else f"/api/{owner.id}/tasks"

        self.http, self.read_base, self.base = http, base(reader), base(writer)
        self.label = "/api/tasks" if family == "A" else "/api/{user_id}/tasks"
        self.task = f"{self.base}/{task_id}"
        self.reader, self.writer = reader.headers, writer.headers
        first = http.get(self.read_base, params={"limit": 10}, headers=self.reader)
        self.listed = len(http.get(self.read_base, headers=self.reader).json())
        self.next_page = first.links["next"]["url"]
        self.created: list[int] = []  # by `create`, consumed by `delete`

    def cases(self) -> list[tuple[str, int, object, bool]]:
        """(label, expected status, call, whether the latency target applies)."""
        http, label, task = self.http, self.label, self.task
        return [
            (
                f"GET {label} ({self.listed} tasks)",
                200,
                lambda: http.get(self.read_base, headers=self.reader),
                True,
            ),
            (
                f"GET {label}?limit=10&cursor=",
                200,
                lambda: http.get(self.next_page, headers=self.reader),
                True,
            ),
            (f"GET {label}/{{id}}", 200, lambda: http.get(task, headers=self.writer), True),
            (f"POST {label}", 201, self._create, True),
            (
                f"PUT {label}/{{id}}",
                200,
                lambda: http.put(task, json={"title": "put"}, headers=self.writer),
                True,
            ),
            (
                f"PATCH {label}/{{id}}",
                200,
                lambda: http.patch(task, json={"description": "patch"}, headers=self.writer),
                True,
            ),
            (
                f"PATCH {label}/{{id}}/complete",
                200,
                lambda: http.patch(f"{task}/complete", headers=self.writer),
                True,
            ),
            (f"DELETE {label}/{{id}}", 204, self._delete, True),
            (f"POST {label}, Idempotency-Key", 201, self._create_idempotent, False),
        ]

    def _create(self) -> httpx.Response:
        response = self.http.post(self.base, json={"title": "new"}, headers=self.writer)
        if response.status_code == 201:
            self.created.append(response.json()["id"])
        return response

    def _delete(self) -> httpx.Response:
        return self.http.delete(f"{self.base}/{self.created.pop()}", headers=self.writer)

    def _create_idempotent(self) -> httpx.Response:
        headers = {**self.writer, "Idempotency-Key": uuid.uuid4().hex}
        return self.http.post(self.base, json={"title": "once"}, headers=headers)


def _sample(call, expected: int, count: int, into: Samples) -> None:
    for _ in range(count):
        response, seconds = harness.timed(call)
        into.seconds.append(seconds)
        into.unexpected += response.status_code != expected


def measure(database_url: str, settings: Settings) -> Section:
    """Median and p95 of every endpoint, both families, at 0 and at `delay_ms` added RTT."""
    delay = settings.delay_ms / 1000
    runs = ((0.0, settings.latency_requests), (delay, settings.latency_requests_delayed))
    results: dict[tuple[str, float], Samples] = {}
    applies: dict[str, bool] = {}
    load_average = os.getloadavg()[0]
    with (
        harness.proxied(database_url) as (url, proxy),
        harness.serving(harness.app_env(url)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        reader, writer = harness.user(), harness.user()
        harness.create_tasks(http, reader, settings.list_tasks)
        task_id = harness.create_tasks(http, writer, 1)[0]["id"]
        families = [Endpoints(http, family, reader, writer, task_id) for family in "AB"]
        # the throughput baseline through the same proxy: what any app pays at this distance
        baseline_env = harness.app_env(url, BENCH_USER_ID=reader.id)
        with harness.serving(
            baseline_env, app="bench.baseline:app", args=("--no-access-log",)
        ) as baseline:
            bare = f"baseline app (bench/baseline.py): GET /api/tasks ({families[0].listed} tasks)"
            applies[bare] = False
            for added, count in runs:
                proxy.delay = added
                call = functools.partial(http.get, f"{baseline.url}/api/tasks")
                _sample(call, 200, WARMUP, Samples())
                _sample(call, 200, count, results.setdefault((bare, added), Samples()))
                for endpoints in families:
                    for label, expected, call, target in endpoints.cases():
                        applies[label] = target
                        _sample(call, expected, WARMUP, Samples())
                        samples = results.setdefault((label, added), Samples())
                        _sample(call, expected, count, samples)
        proxy.delay = delay
        alone = _database_alone(database_url, url, {"id": task_id, "user": writer.id}, settings)
    labels = [label for label in applies if not label.startswith("baseline")] + [bare]
    rows = [
        _row(label, results[(label, 0.0)], results[(label, delay)], applies[label], settings)
        for label in labels
    ] + alone
    return Section(
        rows=rows,
        details=[
            f"Latency: {settings.latency_requests} sequential requests per endpoint at 0 ms and "
            f"{settings.latency_requests_delayed} at {settings.delay_ms:g} ms of added round-trip "
            f"time (`RoundTripProxy(delay={delay:g})` between the app and PostgreSQL; the 0 ms "
            "runs go through the same proxy without delay), from one keep-alive httpx client, "
            f"after {WARMUP} untimed requests each. Times are client-side: send to full response. "
            "The lists read a user with "
            f"{settings.list_tasks} tasks (`GET .../tasks` returns all of them; the cursor page is "
            "the second page of `limit=10`). The Idempotency-Key row has no latency target: it "
            "costs the round trips counted above. The *database alone* rows run the app's kind "
            "of read and write statement on a bare psycopg2 connection (no app), straight to "
            "PostgreSQL and through the proxy; the write includes its commit (synchronous_commit="
            f"{_setting(database_url, 'synchronous_commit')}, wal_sync_method="
            f"{_setting(database_url, 'wal_sync_method')}). Through the proxy they show the "
            "round-trip time the endpoints really paid, sleep overshoot and this machine's "
            "scheduling included. The baseline app row is bench/baseline.py (no auth, validation "
            "or logging) behind the same proxy, sampled just before the endpoints of each phase: "
            "an endpoint's p50 less the baseline's is what our app adds at that distance. "
            "The load average before the run was "
            f"{load_average:.1f}."
        ],
    )


def _row(label: str, fast: Samples, far: Samples, applies: bool, settings: Settings) -> Row:
    measured = f"0 ms: {_pair(fast)}; {settings.delay_ms:g} ms: {_pair(far)}"
    unexpected = fast.unexpected + far.unexpected
    if unexpected:
        measured += f" ({unexpected} unexpected statuses!)"
    if not applies:
        return Row("latency", label, measured)
    limit = settings.delay_ms + SLACK_MS
    met = harness.median_ms(far.seconds) <= limit and not unexpected
    return Row("latency", label, measured, f"p50 ≤ {limit:g} ms at {settings.delay_ms:g} ms", met)


def _pair(samples: Samples) -> str:
    return (
        f"p50 {harness.median_ms(samples.seconds):.1f} · "
        f"p95 {harness.p95_ms(samples.seconds):.1f} ms"
    )


def _setting(database_url: str, name: str) -> str:
    return run_sql(database_url, f"SHOW {name}")[0][0]


READ = "SELECT * FROM tasks WHERE id = %(id)s AND user_id = %(user)s"
WRITE = (
    "UPDATE tasks SET title = 'db', version = version + 1 "
    "WHERE id = %(id)s AND user_id = %(user)s RETURNING *"
)


def _statement_samples(url: str, statement: str, parameters: dict, count: int) -> Samples:
    """Durations of `statement` run `count` times on one bare autocommit psycopg2 connection."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    samples = Samples()
    try:
        with connection.cursor() as cursor:
            for _ in range(count):
                started = time.perf_counter()
                cursor.execute(statement, parameters)
                cursor.fetchall()
                samples.seconds.append(time.perf_counter() - started)
    finally:
        connection.close()
    return samples


def _database_alone(
    direct_url: str, proxied_url: str, parameters: dict, settings: Settings
) -> list[Row]:
    """What the database and the proxy add to each request, without the app: a read and a
    write (autocommit, so with its commit) by primary key, straight to PostgreSQL and through
    the proxy at the added delay (the round-trip time the endpoints really paid)."""
    count, delayed = settings.latency_requests, settings.latency_requests_delayed
    rows = []
    for kind, statement in (
        ("read a task by id (SELECT)", READ),
        ("write a task by id (UPDATE ... RETURNING, commit)", WRITE),
    ):
        direct = _statement_samples(direct_url, statement, parameters, count)
        far = _statement_samples(proxied_url, statement, parameters, delayed)
        rows.append(
            Row(
                "latency",
                f"database alone: {kind}",
                f"0 ms: {_pair(direct)}; {settings.delay_ms:g} ms: {_pair(far)}",
            )
        )
    return rows
