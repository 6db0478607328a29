"""Section "profile": where a `GET /api/tasks` request spends its CPU, our app against the baseline.

Two measurements that check each other:
1. py-spy (`requirements-bench.txt`) samples the server under wrk load, only the thread holding
   the GIL (`--gil`: the one worker's Python work), and each sample is put into the category of
   its innermost recognised frame (CATEGORIES). Shares times the run's CPU per request give
   approximate microseconds per request.
2. In-process timings of the pieces our app adds, called exactly as the app calls them.
"""

import asyncio
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import TypeAdapter
from pydantic_core import to_json
from sqlalchemy import event

from bench import harness, wrk
from bench.config import Settings
from bench.report import Row, Section
from bench.throughput import BASELINE, PROCFILE, Config
from middleware.tokens import SecretVerifier, make_verifier
from schemas.tasks import ListQuery, TaskPublic
from store import Store
from tests.users import SECRET, User

CATEGORIES = (  # (name, pattern of a frame "function (file:line)"), tried innermost frame first
    ("JWT verification (PyJWT HS256, claims)", r"jwt/|middleware/tokens\.py"),
    ("logging (app line, uvicorn access line)", r"logging/|uvicorn/logging\.py"),
    ("response/query models (Pydantic; baseline: to_json)",
     r"pydantic/|schemas/|^tasks \(bench/baseline\.py"),
    ("SQLAlchemy + psycopg2 (statement, execute, rows)",
     r"sqlalchemy/|psycopg2/|store\.py|^_rows.* \(bench/baseline\.py"),
    ("thread-pool hand-off (anyio, threading)",
     r"anyio/|starlette/concurrency\.py|threading\.py|queue\.py"),
    ("app middleware (request id, bearer header)",
     r"middleware/request_log\.py|middleware/auth\.py"),
    ("app handler (query string, ETag, headers)", r"handlers/"),
    ("Starlette (routing, middleware, responses)", r"starlette/"),
    ("uvicorn + httptools (parse, socket writes)", r"uvicorn/"),
)
OTHER = "event loop and the rest"
MATCHERS = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]


def categorise(raw_profile: str) -> Counter:
    """Samples per category of py-spy's raw (collapsed stack) output."""
    counts: Counter = Counter()
    for line in raw_profile.splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():  # skip anything that is not "frame;frame;... count"
            counts[_category(stack.split(";"))] += int(samples)
    return counts


def _category(frames: list[str]) -> str:
    """The category of the innermost frame that has one; stdlib helpers such as json, base64,
    hmac or uuid have none, so their time counts for whoever called them."""
    for frame in reversed(frames):
        for name, pattern in MATCHERS:
            if pattern.search(frame):
                return name
    return OTHER


def py_spy() -> str | None:
    """The py-spy executable next to this Python (the venv), else on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _profile(config: Config, database_url: str, owner: User, settings: Settings
             ) -> tuple[Counter, float]:
    """(samples per category, CPU ms per request) of `config` under wrk load."""
    env = harness.app_env(database_url, config.log_level, BENCH_USER_ID=owner.id)
    with harness.serving(env, app=config.app, args=config.args) as server, \
            tempfile.TemporaryDirectory() as scratch:
        url = f"{server.url}/api/tasks"
        wrk.run(url, owner.headers, settings.wrk_warmup_seconds, settings.wrk_connections)
        output = Path(scratch) / "profile.txt"
        pid = server.process.pid
        result: list[wrk.WrkResult] = []
        load = threading.Thread(target=lambda: result.append(wrk.run(
            url, owner.headers, settings.profile_seconds + 2, settings.wrk_connections)))
        cpu = harness.cpu_seconds([pid])
        load.start()
        time.sleep(1)
        subprocess.run([py_spy(), "record", "--gil", "--nonblocking", "--rate", "250",
                        "--duration", str(settings.profile_seconds), "--format", "raw",
                        "--output", str(output), "--pid", str(pid)],
                       capture_output=True, check=True, timeout=settings.profile_seconds + 60)
        load.join()
        cpu = harness.cpu_seconds([pid]) - cpu
        if not result:
            raise RuntimeError(f"{config.name}: the wrk run under the profiler failed")
        return categorise(output.read_text()), 1000 * cpu / max(result[0].requests, 1)


def _per_call_us(call: Callable[[], object], count: int = 2000) -> float:
    """Best of three: microseconds per call of `call`."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


def pieces(database_url: str, owner: User) -> list[tuple[str, float]]:
    """(what, microseconds per call) of the work our app adds to a list request, in-process."""
    store = Store(database_url)
    rows = store.list_tasks(owner.id, ListQuery())
    task_list = TypeAdapter(list[TaskPublic])  # as handlers/tasks.py builds it
    body = task_list.dump_json(task_list.validate_python(rows))
    verify = make_verifier(SecretVerifier(SECRET), None)
    loop = asyncio.new_event_loop()

    async def verify_many(count: int) -> None:
        for _ in range(count):
            await verify(owner.token)

    sql, parameters = _captured_list_query(store, owner.id)

    def replay() -> list[dict]:
        with store.engine.connect() as connection:
            return [dict(row) for row in connection.exec_driver_sql(sql, parameters).mappings()]

    raw = store.engine.raw_connection()

    def bare() -> list[tuple]:
        with raw.cursor() as cursor:
            cursor.execute(sql, parameters)
            return cursor.fetchall()

    with tempfile.TemporaryDirectory() as scratch:
        app_line, access_line = _loggers(Path(scratch))
        found = [
            ("JWT: verify an HS256 bearer token", _per_call_us(
                lambda: loop.run_until_complete(verify_many(100)), 20) / 100),
            ("Pydantic: ListQuery from the query string", _per_call_us(
                lambda: ListQuery.model_validate({}))),
            (f"Pydantic: validate + dump {len(rows)} TaskPublic", _per_call_us(
                lambda: task_list.dump_json(task_list.validate_python(rows)))),
            (f"baseline: pydantic_core.to_json of the same {len(rows)} rows", _per_call_us(
                lambda: to_json(rows))),
            ("(json.dumps of them, datetime default)", _per_call_us(
                lambda: json.dumps(rows, default=lambda value: value.isoformat()))),
            ("ETag: sha256 of the list body",
             _per_call_us(lambda: hashlib.sha256(body).hexdigest())),
            ("log: the app's request line (to a file)", _per_call_us(app_line)),
            ("log: uvicorn's access line (to a file)", _per_call_us(access_line)),
            ("SQL: Store.list_tasks (build statement, execute, rows)", _per_call_us(
                lambda: store.list_tasks(owner.id, ListQuery()), 500)),
            ("SQL: the same via exec_driver_sql (the baseline's way)", _per_call_us(replay, 500)),
            ("SQL: the same on a bare psycopg2 cursor", _per_call_us(bare, 500)),
        ]
    loop.close()
    raw.close()
    store.dispose()
    return found


def _captured_list_query(store: Store, user_id: str) -> tuple[str, dict]:
    sent = []

    def capture(_connection, _cursor, statement, parameters, _context, _executemany):
        sent.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    store.list_tasks(user_id, ListQuery())
    event.remove(store.engine, "before_cursor_execute", capture)
    return sent[-1]


def _loggers(directory: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    """Calls that log one line like the app's request log and like uvicorn's access log."""
    from uvicorn.logging import AccessFormatter

    def logger(name: str, formatter: logging.Formatter) -> logging.Logger:
        handler = logging.FileHandler(directory / f"{name}.log")
        handler.setFormatter(formatter)
        log = logging.getLogger(f"bench.costs.{name}")
        log.handlers[:] = [handler]
        log.propagate = False
        log.setLevel(logging.INFO)
        return log

    app_log = logger("app", logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    access_format = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
    access_log = logger("access", AccessFormatter(access_format))
    request_id = "0" * 32

    def app_line() -> None:
        app_log.info("%s %s %d %.1fms request_id=%s", "GET", "/api/tasks", 200, 1.234, request_id)

    def access_line() -> None:
        access_log.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/api/tasks", "1.1",
                        200)

    return app_line, access_line


def measure(database_url: str, settings: Settings) -> Section:
    """py-spy shares (app and baseline) and the in-process cost of each piece."""
    owner = harness.user()
    with harness.serving(harness.app_env(database_url)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        harness.create_tasks(http, owner, settings.list_tasks)
    rows: list[Row] = []
    details: list[str] = []
    if py_spy() is None:
        rows.append(Row("profile", "py-spy",
                        "not installed (pip install -r requirements-bench.txt)"))
    else:
        try:
            profiles = {config: _profile(config, database_url, owner, settings)
                        for config in (PROCFILE, BASELINE)}
        except subprocess.CalledProcessError as error:
            rows.append(Row("profile", "py-spy", f"failed: {error.stderr.decode()[-200:].strip()}"))
        else:
            rows += _profile_rows(profiles)
            details.append(_profile_details(profiles, settings))
    found = pieces(database_url, owner)
    rows += [Row("profile", what, f"{us:.0f} µs per call (in-process)") for what, us in found]
    return Section(rows=rows, details=details)


def _profile_rows(profiles: dict[Config, tuple[Counter, float]]) -> list[Row]:
    (app, app_cpu), (base, base_cpu) = profiles[PROCFILE], profiles[BASELINE]
    app_total, base_total = sum(app.values()) or 1, sum(base.values()) or 1
    rows = []
    for name in [name for name, _ in CATEGORIES] + [OTHER]:
        app_share, base_share = app[name] / app_total, base[name] / base_total
        rows.append(Row("profile", f"py-spy: {name}",
                        f"app {app_share:.0%} ≈ {app_share * app_cpu * 1000:.0f} µs/req; "
                        f"baseline {base_share:.0%} ≈ {base_share * base_cpu * 1000:.0f} µs/req"))
    return rows


def _profile_details(profiles: dict[Config, tuple[Counter, float]], settings: Settings) -> str:
    (app, app_cpu), (base, base_cpu) = profiles[PROCFILE], profiles[BASELINE]
    return (
        f"Profile: `py-spy record --gil --nonblocking --rate 250 --duration "
        f"{settings.profile_seconds}` on the one uvicorn worker while wrk loads `GET /api/tasks` "
        f"({settings.wrk_connections} connections); {sum(app.values())} samples of our app "
        f"(as the Procfile runs it) and {sum(base.values())} of the baseline. Only the thread "
        "holding the GIL is sampled, i.e. the Python work that limits one worker; each sample "
        "counts for the innermost frame of a known category (bench/costs.py CATEGORIES). "
        f"µs/request = share × CPU per request of that run ({app_cpu:.2f} ms app, "
        f"{base_cpu:.2f} ms baseline), an approximation: time spent in C with the GIL released "
        "(libpq inside psycopg2, part of the socket I/O) is not sampled."
    )
