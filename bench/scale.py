"""Section 4: list, get and update as the tasks table grows, and the list query plans.

In a database of its own: medians for a user with ~100 tasks in an otherwise empty database;
then a bulk load (`INSERT ... SELECT generate_series`, then ANALYZE) of `scale_tasks` tasks over
`scale_users` users plus one big user with `scale_big_user_tasks`, interleaved so every user's
rows are spread over the whole table as years of use would leave them; the same medians for a
~100-task user and the big user, a page of 50 for each sort; EXPLAIN ANALYZE of the app's own
list SQL (`Store.list_sql`, what `Store.list_tasks` sends) per sort, which tables.py's indexes
should make an ordered index scan of one page.
"""

import re
import statistics
import time
from collections.abc import Callable

import httpx

from bench import harness
from bench.config import Settings
from bench.report import Row, Section, ms
from schemas.tasks import ListQuery
from store import Store
from tests.servers import PostgresDatabase, run_sql
from tests.users import User

SORTS = ("created", "updated", "completed", "title", "due_date")
SMALL_TASKS = 100
PAGE = 50
BIG_USER = "scale-big-user"

BULK_USERS_SQL = """
INSERT INTO users (id, email, name, created_at)
SELECT 'scale-' || n, 'scale-' || n || '@example.com', 'Bench User', now()
FROM generate_series(0, %(users)s - 1) AS n
UNION ALL SELECT %(big)s, %(big)s || '@example.com', 'Bench User', now()
"""
# Every `stride`-th row is the big user's; the others go round the bulk users in turn (counting
# only their own rows). Timestamps grow with g; every 4th task is completed, every 2nd is due.
BULK_TASKS_SQL = """
INSERT INTO tasks (user_id, title, description, completed, due_date, completed_at,
                   created_at, updated_at, version)
SELECT CASE WHEN g %% %(stride)s = 0 THEN %(big)s
            ELSE 'scale-' || ((g - g / %(stride)s) %% %(users)s) END,
       'Task ' || md5(g::text),
       CASE WHEN g %% 3 = 0 THEN 'bulk-loaded task number ' || g END,
       g %% 4 = 0,
       CASE WHEN g %% 2 = 0 THEN timestamptz '2030-01-01' + (g %% 730) * interval '1 day' END,
       CASE WHEN g %% 4 = 0 THEN timestamptz '2025-01-01' + g * interval '1 second' END,
       timestamptz '2024-01-01' + g * interval '1 second',
       timestamptz '2024-01-01' + g * interval '1 second' + (g %% 1000) * interval '1 minute',
       1
FROM generate_series(1, %(total)s) AS g
"""


class Scale:
    """The scale database, its server, and the measurements taken on them."""

    def __init__(self, database: PostgresDatabase, server_url: str, settings: Settings) -> None:
        self.database, self.settings = database, settings
        self.http = httpx.Client(base_url=server_url, timeout=60)

    def sql(self, statement: str, parameters: dict | tuple | None = None) -> list[tuple]:
        return run_sql(self.database.url, statement, parameters)

    def median_ms(self, call: Callable[[], httpx.Response], count: int | None = None) -> float:
        """Median of `count` sequential requests, after two untimed ones; all must succeed."""
        for _ in range(2):
            call().raise_for_status()
        samples = []
        for _ in range(count or self.settings.scale_requests):
            response, seconds = harness.timed(call)
            response.raise_for_status()
            samples.append(seconds)
        return statistics.median(samples) * 1000

    def basics(self, owner: User) -> dict[str, float]:
        """Medians of list (first page of 50), get and update for `owner`."""
        headers = owner.headers
        task_id = self.http.get("/api/tasks", params={"limit": 1}, headers=headers).json()[0]["id"]
        return {
            "list": self.median_ms(
                lambda: self.http.get("/api/tasks", params={"limit": PAGE}, headers=headers)
            ),
            "get": self.median_ms(lambda: self.http.get(f"/api/tasks/{task_id}", headers=headers)),
            "update": self.median_ms(
                lambda: self.http.put(
                    f"/api/tasks/{task_id}", json={"title": "updated"}, headers=headers
                )
            ),
        }

    def sorted_lists(self, owner: User) -> dict[str, float]:
        """Median of a first page of 50 for each sort, for `owner`."""
        count = max(5, self.settings.scale_requests // 2)
        return {
            sort: self.median_ms(
                lambda sort=sort: self.http.get(
                    "/api/tasks", params={"sort": sort, "limit": PAGE}, headers=owner.headers
                ),
                count,
            )
            for sort in SORTS
        }

    def load(self) -> tuple[float, float]:
        """Bulk-load users and tasks; (seconds to insert, seconds to ANALYZE)."""
        settings = self.settings
        total = settings.scale_tasks + settings.scale_big_user_tasks
        started = time.perf_counter()
        self.sql(BULK_USERS_SQL, {"users": settings.scale_users, "big": BIG_USER})
        self.sql(
            BULK_TASKS_SQL,
            {
                "users": settings.scale_users,
                "big": BIG_USER,
                "total": total,
                "stride": max(1, total // settings.scale_big_user_tasks),
            },
        )
        loaded = time.perf_counter()
        self.sql("ANALYZE users")
        self.sql("ANALYZE tasks")
        return loaded - started, time.perf_counter() - loaded

    def plans(self, user_id: str) -> dict[str, list[str]]:
        """EXPLAIN (ANALYZE, BUFFERS) of the app's list SQL, first page of 50, per sort."""
        store = Store(self.database.url)
        try:
            sent = [store.list_sql(user_id, ListQuery(sort=sort, limit=PAGE)) for sort in SORTS]
        finally:
            store.dispose()
        self.statements = [statement for statement, _ in sent]
        return {
            sort: [
                line for (line,) in self.sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
            ]
            for sort, (statement, parameters) in zip(SORTS, sent)
        }


def ordered_by_index(plan: list[str]) -> bool:
    """Whether the plan reads the page in order from an index (an index scan and no Sort)."""
    text = "\n".join(plan)
    return bool(re.search(r"Index (Only )?Scan", text)) and not re.search(r"\bSort\b", text)


def shape(plan: list[str]) -> str:
    """The plan's nodes, outermost first, e.g. `Limit → Index Scan Backward using ix_...`."""
    nodes = []
    for line in plan:
        node = line.strip().removeprefix("->").strip()
        if "(cost=" in node or "(actual" in node:
            nodes.append(re.split(r"\s+\((?:cost|actual)", node)[0].replace(" on tasks", ""))
    return " → ".join(nodes)


def measure(admin_url: str, settings: Settings) -> Section:
    database = PostgresDatabase(admin_url)
    try:
        with harness.serving(harness.app_env(database.url)) as server:
            scale = Scale(database, server.url, settings)
            try:
                return _measure(scale, settings)
            finally:
                scale.http.close()
    finally:
        database.drop()


def _measure(scale: Scale, settings: Settings) -> Section:
    bulk_id = f"scale-{settings.scale_users // 2}"  # one of the bulk users, ~average size
    small, bulk, big = harness.user(), harness.user(bulk_id), harness.user(BIG_USER)
    harness.create_tasks(scale.http, small, SMALL_TASKS)
    empty = scale.basics(small)
    insert_s, analyze_s = scale.load()
    big_count = scale.sql("SELECT count(*) FROM tasks WHERE user_id = %s", (BIG_USER,))[0][0]
    bulk_count = scale.sql("SELECT count(*) FROM tasks WHERE user_id = %s", (bulk_id,))[0][0]
    total = scale.sql("SELECT count(*) FROM tasks")[0][0]
    full = scale.basics(bulk)
    big_basics, big_lists = scale.basics(big), scale.sorted_lists(big)
    plans = scale.plans(BIG_USER)

    where = f"{total:,} tasks, {settings.scale_users + 1:,} users"
    rows = [
        Row(
            "scale",
            "bulk load (INSERT ... SELECT generate_series; ANALYZE)",
            f"{where} in {insert_s:.1f} s + {analyze_s:.1f} s",
        )
    ]
    for name, label in (
        ("list", f"list ?limit={PAGE}"),
        ("get", "get"),
        ("update", "update (PUT)"),
    ):
        rows.append(
            Row(
                "scale",
                f"{label}, user with ~{SMALL_TASKS} tasks",
                f"empty DB {ms(empty[name])}; {where} ({bulk_count} tasks) {ms(full[name])}",
            )
        )
    for name, label in (("get", "get"), ("update", "update (PUT)")):
        rows.append(Row("scale", f"{label}, user with {big_count:,} tasks", ms(big_basics[name])))
    for sort in SORTS:
        rows.append(
            Row(
                "scale",
                f"list ?sort={sort}&limit={PAGE}, user with {big_count:,} tasks",
                f"{ms(big_lists[sort])}: {shape(plans[sort])}",
                "ordered index scan",
                ordered_by_index(plans[sort]),
            )
        )
    return Section(
        rows=rows,
        details=[_method(settings, big_count)],
        appendix=[_plans(scale.statements, plans, big_count)],
    )


def _method(settings: Settings, big_count: int) -> str:
    return (
        f"Scale: medians of {settings.scale_requests} sequential requests (the sorted lists of the "
        f"big user: {max(5, settings.scale_requests // 2)}) straight to PostgreSQL (no proxy), "
        f"first page of {PAGE}. The bulk load interleaves the big user's {big_count:,} tasks with "
        f"the others' ({settings.scale_tasks:,} over {settings.scale_users:,} users), so each "
        "user's rows are spread over the whole table. The indexes are tables.py's: one per list "
        "sort, (user_id, sort key, id)."
    )


def _plans(statements: list[str], plans: dict[str, list[str]], big_count: int) -> str:
    parts = [
        f"EXPLAIN (ANALYZE, BUFFERS) of the app's list query, first page of {PAGE}, for "
        f"the user with {big_count:,} tasks."
    ]
    for sort, statement in zip(SORTS, statements):
        parts += [
            f"\n`sort={sort}`:\n",
            "```sql",
            statement.strip(),
            "```",
            "```",
            *plans[sort],
            "```",
        ]
    return "\n".join(parts)
