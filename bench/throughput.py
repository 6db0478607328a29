"""Section 3: throughput of `GET /api/tasks` (20 tasks) with wrk, our app against a baseline.

Every server is `uvicorn <app> --host 127.0.0.1 --port N` as the Procfile runs it (uvicorn picks
uvloop and httptools when installed, which uvicorn[standard] does), one worker unless stated,
straight on PostgreSQL (no proxy). A one-worker server runs on CPU 1 and wrk on CPU 0 (when there
are two), so the two do not take turns on one core; PostgreSQL runs where the system puts it.
Each run: one checked request, `wrk_warmup_seconds` of unmeasured load, then `wrk_seconds`
measured. Besides requests/s each run records the CPU time the server processes spent per
request (less sensitive than requests/s to other load on the machine) and how many database
connections the server opened while measured.

The ladder: the baseline wrapped in our app's own middleware, one layer more per rung
(bench/baseline.py BENCH_LAYERS), then our app, so each piece of the contract shows its cost.
"""

import os
from dataclasses import dataclass

import httpx

from bench import harness, wrk
from bench.config import Settings
from bench.report import Row, Section
from tests.users import User

TARGET_RATIO = 0.90
SERVER_CPUS, LOAD_CPUS = ({1}, {0}) if (os.cpu_count() or 1) >= 2 else (None, None)


@dataclass(frozen=True)
class Config:
    name: str
    app: str = "app:app"
    log_level: str = "INFO"
    args: tuple[str, ...] = ()
    layers: str = ""  # bench/baseline.py BENCH_LAYERS

    @property
    def workers(self) -> int:
        return int(self.args[self.args.index("--workers") + 1]) if "--workers" in self.args else 1


def _baseline(name: str, layers: str = "") -> Config:
    return Config(name, app="bench.baseline:app", args=("--no-access-log",), layers=layers)


BASELINE = _baseline("baseline (bench/baseline.py: same SQL and engine, nothing else)")
LADDER = (
    _baseline("baseline + bearer token check (AuthMiddleware)", "AuthMiddleware"),
    _baseline(
        "baseline + token check + request id and log line (RequestLogMiddleware)",
        "AuthMiddleware,RequestLogMiddleware",
    ),
    _baseline(
        "baseline + all our middleware (+ CORSMiddleware, InternalErrorMiddleware)",
        "AuthMiddleware,RequestLogMiddleware,CORSMiddleware,InternalErrorMiddleware",
    ),
)
PROCFILE = Config("our app as the Procfile runs it (one log line per request)")
NO_LOGS = Config("our app, LOG_LEVEL=WARNING (no per-request line)", log_level="WARNING")
TWO_WORKERS = Config("our app, --workers 2 (Procfile otherwise)", args=("--workers", "2"))
CONFIGS = (BASELINE, *LADDER, PROCFILE, NO_LOGS, TWO_WORKERS)


@dataclass(frozen=True)
class Run:
    config: Config
    load: wrk.WrkResult
    cpu_ms_per_request: float
    new_connections: int
    log_bytes_per_request: float
    load_average: float

    def describe(self) -> str:
        failed = f"; {self.load.failures} failed!" if self.load.failures else ""
        return (
            f"{self.load.per_second:,.0f} req/s (p50 {self.load.p50_ms:.0f} ms, "
            f"CPU {self.cpu_ms_per_request:.2f} ms/req, "
            f"{self.new_connections} new DB connections{failed})"
        )


def _run(config: Config, database_url: str, owner: User, settings: Settings) -> Run:
    env = harness.app_env(
        database_url, config.log_level, BENCH_USER_ID=owner.id, BENCH_LAYERS=config.layers
    )
    pinned = config.workers == 1 and SERVER_CPUS is not None
    load_cpus = LOAD_CPUS if pinned else None
    with harness.serving(env, app=config.app, args=config.args) as server:
        if pinned:
            harness.pin(server.process.pid, SERVER_CPUS)
        url = f"{server.url}/api/tasks"
        check = httpx.get(url, headers=owner.headers, timeout=30)
        check.raise_for_status()
        if len(check.json()) != settings.list_tasks:
            raise RuntimeError(
                f"{config.name}: listed {len(check.json())} tasks, not {settings.list_tasks}"
            )
        wrk.run(
            url,
            owner.headers,
            settings.wrk_warmup_seconds,
            settings.wrk_connections,
            cpus=load_cpus,
        )
        pids = harness.process_tree(server.process.pid)
        sessions, cpu = harness.database_sessions(database_url), harness.cpu_seconds(pids)
        log_size, load_average = os.path.getsize(server.log.name), os.getloadavg()[0]
        result = wrk.run(
            url, owner.headers, settings.wrk_seconds, settings.wrk_connections, cpus=load_cpus
        )
        cpu = harness.cpu_seconds(pids) - cpu
        sessions = harness.database_sessions(database_url) - sessions - 1  # less our own
        log_bytes = os.path.getsize(server.log.name) - log_size
    return Run(
        config,
        result,
        1000 * cpu / max(result.requests, 1),
        sessions,
        log_bytes / max(result.requests, 1),
        load_average,
    )


def measure(database_url: str, settings: Settings) -> Section:
    """Requests/s of every configuration, and each one's share of the baseline's."""
    owner = harness.user()
    with (
        harness.serving(harness.app_env(database_url)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        harness.create_tasks(http, owner, settings.list_tasks)
    runs: dict[Config, Run] = {}
    rates: dict[Config, list[float]] = {config: [] for config in CONFIGS}
    for _ in range(settings.wrk_rounds):  # interleaved, so a busy minute hits every config
        for config in CONFIGS:
            run = _run(config, database_url, owner, settings)
            rates[config].append(run.load.per_second)
            if config not in runs or run.load.per_second > runs[config].load.per_second:
                runs[config] = run
    base = runs[BASELINE]
    rows = [Row("throughput", config.name, run.describe()) for config, run in runs.items()]
    for config in (*LADDER, PROCFILE, NO_LOGS):
        ratio = runs[config].load.per_second / base.load.per_second
        cpu_ratio = base.cpu_ms_per_request / runs[config].cpu_ms_per_request
        target = config is PROCFILE
        rows.append(
            Row(
                "throughput",
                f"ratio to baseline: {config.name.split(' (')[0]}",
                f"{ratio:.0%} of req/s ({cpu_ratio:.0%} by CPU per request)",
                f"≥ {TARGET_RATIO:.0%}" if target else "",
                ratio >= TARGET_RATIO if target else None,
            )
        )
    return Section(rows=rows, details=[_details(runs, rates, settings)])


def _details(runs: dict[Config, Run], rates: dict[Config, list[float]], settings: Settings) -> str:
    pinning = "One-worker servers ran on CPU 1 and wrk on CPU 0. " if SERVER_CPUS else ""
    lines = [
        f"Throughput: `wrk -t1 -c{settings.wrk_connections} -d{settings.wrk_seconds}s --latency` "
        f"on `GET /api/tasks` returning {settings.list_tasks} tasks, after a "
        f"{settings.wrk_warmup_seconds} s warm-up run; one uvicorn worker unless stated. "
        f"{pinning}Every configuration ran {settings.wrk_rounds} time(s), the rounds "
        "interleaved, on a fresh server each; the best round counts (the machine is shared, so "
        "slower rounds mostly measure other load). CPU is user + system time of the server's "
        "processes during the measured run, divided by its requests. New DB connections are "
        "`pg_stat_database.sessions` over the measured run. The load average (1 min) before "
        "each run shows what else the machine was doing.",
        "",
        "| configuration | req/s (best) | all rounds | p50 | p99 | CPU/request "
        "| new DB connections | log bytes/request | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config, run in runs.items():
        lines.append(
            f"| {config.name} | {run.load.per_second:,.0f} | "
            f"{', '.join(f'{rate:,.0f}' for rate in rates[config])} | {run.load.p50_ms:.1f} ms | "
            f"{run.load.p99_ms:.1f} ms | {run.cpu_ms_per_request:.3f} ms | {run.new_connections} | "
            f"{run.log_bytes_per_request:.0f} | {run.load_average:.1f} |"
        )
    return "\n".join(lines)
