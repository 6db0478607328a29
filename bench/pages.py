"""Section: the list's cost per task against the bare driver, pages of 20, 200 and 1,000 tasks.

For each page size, `pages_users` users (1,000 by default) each own exactly that many tasks
(bulk-loaded with `INSERT ... SELECT generate_series`), and every request of a run takes the
next user's token in turn (a wrk Lua script), so tokens, users and pages rotate as with many
real users. Three things are measured per page size, interleaved over `wrk_rounds` rounds:

- our app as the Procfile runs it (one log line per request);
- bench/bare.py: a minimal Starlette endpoint over a bare psycopg2 pool (no SQLAlchemy) that
  answers the same user with the same bytes (checked before each run);
- psycopg2 alone (bench/bare.py's loop): the same query, execute + fetch, from 20 threads: the
  rate no endpoint written in Python can pass.

Servers and the driver loop run on CPU 1 and wrk on CPU 0, as in bench/throughput.py.
"""

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from bench import harness, wrk
from bench.config import ROOT, Settings
from bench.report import Row, Section
from bench.throughput import LOAD_CPUS, SERVER_CPUS
from tests.servers import run_sql

SIZES = (20, 200, 1000)
PRIMING_THREADS = 8
DRIVER_THREADS = 20  # as many as the app's pool has connections (store.POOL_SIZE)
TARGET_BARE = 0.90  # of the bare endpoint's requests/s
TARGET_DRIVER = 0.70  # of psycopg2's own query rate, at 1,000 tasks
TARGET_CPU_PER_TASK_US = 1.5

BULK_USERS_SQL = """
INSERT INTO users (id, email, name, created_at)
SELECT %(prefix)s || n, %(prefix)s || n || '@example.com', 'Bench User', now()
FROM generate_series(0, %(users)s - 1) AS n
"""
# Task t of user u: due every 2nd, completed every 3rd, times to the microsecond.
BULK_TASKS_SQL = """
INSERT INTO tasks (user_id, title, description, completed, due_date, completed_at,
                   created_at, updated_at, version)
SELECT %(prefix)s || u, 'Task ' || t || ' ' || left(md5(u || '-' || t), 8),
       CASE WHEN t %% 2 = 0 THEN 'bench' END, t %% 3 = 0,
       CASE WHEN t %% 2 = 1 THEN timestamptz '2030-01-01' + (t %% 28) * interval '1 day' END,
       CASE WHEN t %% 3 = 0 THEN timestamptz '2026-01-01' + t * interval '1.000001 second' END,
       timestamptz '2025-01-01' + (u * 1000 + t) * interval '1.000001 second',
       timestamptz '2025-01-01' + (u * 1000 + t) * interval '1.000001 second',
       1
FROM generate_series(0, %(users)s - 1) AS u, generate_series(1, %(size)s) AS t
"""


@dataclass(frozen=True)
class Run:
    per_second: float
    cpu_ms: float  # server (or driver) CPU per request (or query)
    failures: int = 0

    def describe(self, unit: str = "req") -> str:
        failed = f"; {self.failures} failed!" if self.failures else ""
        return f"{self.per_second:,.0f} {unit}/s (CPU {self.cpu_ms:.3f} ms/{unit}{failed})"


def _prefix(size: int) -> str:
    return f"pages-{size}-"


def _load(database_url: str, users: int) -> dict[int, dict[str, str]]:
    """Bulk-load the users and tasks of every size; {size: {token: user id}}."""
    tokens = {}
    for size in SIZES:
        parameters = {"prefix": _prefix(size), "users": users, "size": size}
        run_sql(database_url, BULK_USERS_SQL, parameters)
        run_sql(database_url, BULK_TASKS_SQL, parameters)
        tokens[size] = {
            harness.user(f"{_prefix(size)}{n}").token: f"{_prefix(size)}{n}" for n in range(users)
        }
    run_sql(database_url, "ANALYZE tasks")
    return tokens


def _serve(
    app: str,
    env: dict,
    tokens: dict[str, str],
    size: int,
    settings: Settings,
    connections: int,
    expected: bytes | None,
) -> tuple[Run, bytes]:
    """One measured wrk run against a fresh server of `app`; (run, the first user's body)."""
    args = ("--no-access-log",) if app != "app:app" else ()
    with (
        harness.serving(env, app=app, args=args) as server,
        tempfile.NamedTemporaryFile(suffix=".lua") as script,
    ):
        if SERVER_CPUS:
            harness.pin(server.process.pid, SERVER_CPUS)
        url = f"{server.url}/api/tasks"
        token = next(iter(tokens))
        check = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        check.raise_for_status()
        if len(check.json()) != size or (expected is not None and check.content != expected):
            raise RuntimeError(f"{app}: not the same {size}-task page as the other endpoint")
        wrk.rotating_tokens(script.name, list(tokens))
        _prime(url, list(tokens))
        wrk.run(
            url, {}, settings.wrk_warmup_seconds, connections, cpus=LOAD_CPUS, script=script.name
        )
        pids = harness.process_tree(server.process.pid)
        cpu = harness.cpu_seconds(pids)
        result = wrk.run(
            url, {}, settings.wrk_seconds, connections, cpus=LOAD_CPUS, script=script.name
        )
        cpu = harness.cpu_seconds(pids) - cpu
    run = Run(result.per_second, 1000 * cpu / max(result.requests, 1), result.failures)
    return run, check.content


def _prime(url: str, tokens: list[str]) -> None:
    """One request per token before the warm-up, so the measured run is the steady state of
    users the server has seen (our app verifies a token and stores its user once per process):
    the warm-up alone does not reach every one of 1,000 users at 150 requests/s."""
    with httpx.Client(timeout=60) as http, ThreadPoolExecutor(PRIMING_THREADS) as pool:

        def one(token: str) -> None:
            http.get(url, headers={"Authorization": f"Bearer {token}"}).raise_for_status()

        list(pool.map(one, tokens))


def _driver(env: dict, settings: Settings) -> Run:
    pin = (lambda: os.sched_setaffinity(0, SERVER_CPUS)) if SERVER_CPUS else None
    done = subprocess.run(
        [sys.executable, "-m", "bench.bare", str(settings.wrk_seconds), str(DRIVER_THREADS)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=settings.wrk_seconds + 120,
        preexec_fn=pin,
    )
    found = json.loads(done.stdout)
    return Run(
        found["queries"] / found["seconds"], 1000 * found["cpu_seconds"] / max(found["queries"], 1)
    )


def measure(database_url: str, settings: Settings) -> Section:
    """Requests/s and CPU per request of our app, the bare endpoint and the driver alone."""
    with harness.serving(harness.app_env(database_url)):
        pass  # the app creates its tables
    tokens = _load(database_url, settings.pages_users)
    best: dict[tuple[str, int], Run] = {}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(settings.wrk_rounds):  # interleaved, as bench/throughput.py
            for size in SIZES:
                tokens_file = os.path.join(directory, f"tokens-{size}.json")
                with open(tokens_file, "w") as out:
                    json.dump(tokens[size], out)
                env = harness.app_env(database_url, BENCH_TOKENS=tokens_file)
                connections = settings.wrk_connections if size == SIZES[0] else 12
                bare, body = _serve(
                    "bench.bare:app", env, tokens[size], size, settings, connections, None
                )
                ours, _ = _serve("app:app", env, tokens[size], size, settings, connections, body)
                driver = _driver(env, settings)
                for name, run in (("bare", bare), ("app", ours), ("driver", driver)):
                    if (name, size) not in best or run.per_second > best[name, size].per_second:
                        best[name, size] = run
    return Section(rows=_rows(best), details=[_details(settings)])


def _rows(best: dict[tuple[str, int], Run]) -> list[Row]:
    rows = []
    for size in SIZES:
        bare, ours, driver = best["bare", size], best["app", size], best["driver", size]
        rows += [
            Row("pages", f"{size} tasks: our app (Procfile)", ours.describe()),
            Row("pages", f"{size} tasks: bare driver endpoint (bench/bare.py)", bare.describe()),
            Row(
                "pages", f"{size} tasks: psycopg2 alone (execute + fetch)", driver.describe("query")
            ),
        ]
        ratio = ours.per_second / bare.per_second
        judged = size in (SIZES[0], SIZES[-1])
        rows.append(
            Row(
                "pages",
                f"{size} tasks: our app / bare endpoint",
                f"{ratio:.0%} of req/s ({bare.cpu_ms / ours.cpu_ms:.0%} by CPU)",
                f"≥ {TARGET_BARE:.0%}" if judged else "",
                ratio >= TARGET_BARE if judged else None,
            )
        )
    largest, smallest = SIZES[-1], SIZES[0]
    ours, driver = best["app", largest], best["driver", largest]
    ratio = ours.per_second / driver.per_second
    rows.append(
        Row(
            "pages",
            f"{largest} tasks: our app / psycopg2 alone",
            f"{ratio:.0%} of its query rate",
            f"≥ {TARGET_DRIVER:.0%}",
            ratio >= TARGET_DRIVER,
        )
    )
    per_task = (ours.cpu_ms - best["app", smallest].cpu_ms) * 1000 / (largest - smallest)
    rows.append(
        Row(
            "pages",
            "our app: server CPU per task (1,000-task against 20-task page)",
            f"{per_task:.2f} us",
            f"≤ {TARGET_CPU_PER_TASK_US} us",
            per_task <= TARGET_CPU_PER_TASK_US,
        )
    )
    return rows


def _details(settings: Settings) -> str:
    return (
        f"Pages: {settings.pages_users:,} users per page size, each with exactly that many tasks; "
        "every request takes the next user's bearer token (wrk Lua script), so the app verifies "
        "and remembers each token once per server and reads a different user's page each time. "
        "Before the warm-up every server gets one request per user (8 at a time), so the "
        "measured run is the steady state of users it has seen. "
        f"`wrk -t1 -c{settings.wrk_connections}` for 20 tasks, `-c12` for 200 and 1,000, "
        f"{settings.wrk_warmup_seconds} s warm-up then {settings.wrk_seconds} s measured, "
        f"{settings.wrk_rounds} interleaved round(s), the best counts. The bare endpoint "
        "(bench/bare.py) runs the app's own list SQL on a psycopg2 pool of the app's size and "
        "finds the user by looking the token up in a table (no signature check); its body is "
        "checked to be byte for byte our app's before each run of ours. psycopg2 alone runs "
        f"that query for the users in turn from {DRIVER_THREADS} threads with a connection each. "
        "CPU is the server's (or the loop's) user + system time over the measured run, per "
        "request; the CPU per task is the difference between the 1,000- and 20-task pages' CPU "
        "per request over the 980 tasks between them."
    )
