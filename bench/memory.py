"""Section 5: resident memory of one uvicorn worker under sustained load.

The app runs as the Procfile runs it (one worker, INFO logs); wrk loads `GET /api/tasks` in runs
of a few seconds, sized from the rate so far, until the request counts reach the two samples;
VmRSS is read after warm-up and at each sample. The loop is bounded in runs and in time.
"""

import time

import httpx

from bench import harness, wrk
from bench.config import Settings
from bench.report import Row, Section

LIMIT_MIB = 100  # target: RSS below this
GROWTH_TOLERANCE_KIB = 1024  # "no growth": at most this much between the two samples
MAX_RUNS = 200
CHUNK_SECONDS = (1, 10)  # bounds of one wrk run


def measure(database_url: str, settings: Settings) -> Section:
    owner = harness.user()
    samples: list[tuple[int, int]] = []  # (requests so far, VmRSS KiB)
    with (
        harness.serving(harness.app_env(database_url)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        url, pid = f"{server.url}/api/tasks", server.process.pid
        idle_kib = harness.rss_kib(pid)  # imports, engine, one pooled connection
        harness.create_tasks(http, owner, settings.list_tasks)
        wrk.run(url, owner.headers, settings.wrk_warmup_seconds, settings.wrk_connections)
        start_kib = harness.rss_kib(pid)
        done, rate, runs = 0, 1000.0, 0
        deadline = time.monotonic() + 20 * 60
        for goal in (settings.memory_first_sample, settings.memory_second_sample):
            while done < goal and runs < MAX_RUNS and time.monotonic() < deadline:
                seconds = min(max(round((goal - done) / rate), CHUNK_SECONDS[0]), CHUNK_SECONDS[1])
                result = wrk.run(url, owner.headers, seconds, settings.wrk_connections)
                done, rate, runs = done + result.requests, max(result.per_second, 1.0), runs + 1
            samples.append((done, harness.rss_kib(pid)))
    return Section(
        rows=_rows(idle_kib, start_kib, samples, settings),
        details=[
            f"Memory: VmRSS of the one uvicorn worker (`/proc/PID/status`), started as the "
            f"Procfile does with INFO logs, after {settings.wrk_warmup_seconds} s of warm-up load "
            f"and after the given number of `GET /api/tasks` requests ({settings.list_tasks} "
            f'tasks each) from wrk with {settings.wrk_connections} connections. "No growth" allows '
            f"{GROWTH_TOLERANCE_KIB} KiB of allocator noise between the two samples."
        ],
    )


def _rows(
    idle_kib: int, start_kib: int, samples: list[tuple[int, int]], settings: Settings
) -> list[Row]:
    rows = [
        Row("memory", "RSS at start, before any request", f"{idle_kib / 1024:.1f} MiB"),
        Row("memory", "RSS after warm-up", f"{start_kib / 1024:.1f} MiB"),
    ]
    goals = (settings.memory_first_sample, settings.memory_second_sample)
    for goal, (requests, kib) in zip(goals, samples):
        reached = "" if requests >= goal else f" (stopped early at {requests:,} requests!)"
        rows.append(
            Row(
                "memory",
                f"RSS after {requests:,} requests",
                f"{kib / 1024:.1f} MiB{reached}",
                f"< {LIMIT_MIB} MiB",
                kib < LIMIT_MIB * 1024 and requests >= goal,
            )
        )
    growth = samples[1][1] - samples[0][1]
    rows.append(
        Row(
            "memory",
            "growth between the two samples",
            f"{growth:+,} KiB",
            f"≤ {GROWTH_TOLERANCE_KIB:,} KiB",
            growth <= GROWTH_TOLERANCE_KIB,
        )
    )
    return rows
