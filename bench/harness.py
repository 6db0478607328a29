"""Shared plumbing of the benchmark: users and tokens, app servers, process and database figures.

Servers are the test suite's `AppServer` (`python -m uvicorn app:app`, as the Procfile runs it),
databases its `PostgresDatabase` (created and dropped per run), users and tokens its
`tests/users.py`.
"""

import os
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx
from sqlalchemy.engine import make_url

from tests.pgwire import RoundTripProxy
from tests.servers import AppServer, run_sql
from tests.users import SECRET, User, make_token

TOKEN_LIFETIME = 6 * 3600  # longer than any run


def user(user_id: str | None = None) -> User:
    """`user_id` (a fresh id by default) with an HS256 token valid for the whole run."""
    user_id = user_id or f"bench-{uuid.uuid4().hex}"
    claims = {"sub": user_id, "email": f"{user_id}@example.com", "name": "Bench User"}
    return User(user_id, make_token(claims, lifetime=TOKEN_LIFETIME))


def app_env(database_url: str, log_level: str = "INFO", **extra: str) -> dict[str, str]:
    """The app's environment for `database_url` (per-request INFO log lines by default)."""
    return {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "BETTER_AUTH_URL": "http://localhost:3000",
        "LOG_LEVEL": log_level,
        **extra,
    }


@contextmanager
def serving(
    env: dict[str, str], app: str = "app:app", args: Sequence[str] = ()
) -> Iterator[AppServer]:
    """A running uvicorn server of `app`; stopped, and its log file removed, afterwards."""
    server = AppServer(env, app=app, args=args)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        os.unlink(server.log.name)


@contextmanager
def proxied(database_url: str, delay: float = 0.0) -> Iterator[tuple[str, RoundTripProxy]]:
    """(url through the proxy, proxy): `database_url` behind a round-trip counting proxy."""
    target = make_url(database_url)
    proxy = RoundTripProxy((target.host, target.port or 5432), delay=delay)
    try:
        yield target.set(host="127.0.0.1", port=proxy.port).render_as_string(False), proxy
    finally:
        proxy.close()


def create_tasks(client: httpx.Client, owner: User, count: int, prefix: str = "/api") -> list[dict]:
    """`count` tasks created through the API (varied titles, due dates, every third done)."""
    tasks = []
    for number in range(count):
        body = {
            "title": f"Task {number:04d} {uuid.uuid4().hex[:8]}",
            "description": "bench",
            "due_date": f"2030-01-{1 + number % 28:02d}" if number % 2 else None,
            "completed": number % 3 == 0,
        }
        response = client.post(f"{prefix}/tasks", json=body, headers=owner.headers)
        response.raise_for_status()
        tasks.append(response.json())
    return tasks


# process figures (Linux /proc)


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` in KiB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of `pids` (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Run every thread of `pid` on `cpus` (threads it starts later inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cpus)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's supervisor and its `--workers`)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in os.listdir(f"/proc/{current}/task"):
            with open(f"/proc/{current}/task/{task}/children") as children:
                pending.extend(int(child) for child in children.read().split())
    return found


def database_sessions(database_url: str) -> int:
    """Connections ever opened to the database of `database_url` (pg_stat_database.sessions,
    PostgreSQL 14+), read through that same URL (so it counts one more each call)."""
    name = make_url(database_url).database
    return run_sql(
        database_url, "SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)
    )[0][0]


# statistics


def median_ms(samples: Sequence[float]) -> float:
    """Median of `samples` (seconds) in milliseconds."""
    return statistics.median(samples) * 1000


def p95_ms(samples: Sequence[float]) -> float:
    """95th percentile (nearest rank) of `samples` (seconds) in milliseconds."""
    ordered = sorted(samples)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)] * 1000


def timed(call) -> tuple[httpx.Response, float]:
    """(response, seconds) of `call()`."""
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started
