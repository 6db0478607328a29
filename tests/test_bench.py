"""`make bench` at toy sizes: the benchmark still runs, measures and writes its report (the
sections that need wrk are left to `make bench` itself); its bare-driver baseline answers with
our app's bytes."""

import json
import os
import re
import subprocess
import sys

import httpx

from bench import harness, report
from tests.servers import ROOT, AppServer
from tests.users import new_user


def _bench(env: dict, timeout: float) -> subprocess.CompletedProcess:
    """`python -m bench` from the project root with `env`, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "bench"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bench_runs_at_toy_sizes(postgres_admin_url, tmp_path):
    output = tmp_path / "performance.md"
    kept = f"{report.ANALYSIS_START}\nhand-written notes\n{report.ANALYSIS_END}"
    output.write_text(f"old figures\n{kept}\n")
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": postgres_admin_url,
        "BENCH_OUTPUT": str(output),
        "BENCH_SECTIONS": "roundtrips,latency,scale",
        "BENCH_LATENCY_REQUESTS": "3",
        "BENCH_LATENCY_REQUESTS_DELAYED": "2",
        "BENCH_DELAY_MS": "5",
        "BENCH_SCALE_TASKS": "2000",
        "BENCH_SCALE_USERS": "20",
        "BENCH_SCALE_BIG_USER_TASKS": "500",
        "BENCH_SCALE_REQUESTS": "2",
    }
    done = _bench(env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\| round trips \| list \(GET\) +\| 1 · 1 +\| 1 +\| yes", done.stdout)
    assert re.search(r"\| latency +\| GET /api/tasks/\{id\} .*; 5 ms: p50 \d+\.\d", done.stdout)
    assert "Index Scan Backward using ix_tasks_user_created" in done.stdout  # tables.py's index
    document = output.read_text()
    assert "old figures" not in document and "hand-written notes" in document
    assert done.stdout.splitlines()[2] in document and "## Query plans" in document


def test_wrk_missing_is_explained(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "BENCH_SECTIONS": "throughput"}
    done = _bench(env, timeout=60)
    assert done.returncode == 2 and "apt-get install wrk" in done.stderr


def test_bare_endpoint_answers_with_the_apps_bytes(postgres_server, postgres_database, tmp_path):
    owner = new_user()
    with httpx.Client(base_url=postgres_server.url, timeout=30) as http:
        harness.create_tasks(http, owner, 5)
        ours = http.get("/api/tasks", headers=owner.headers)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({owner.token: owner.id}))
    env = {"DATABASE_URL": postgres_database.url, "BENCH_TOKENS": str(tokens)}
    bare = AppServer(env, app="bench.bare:app").start()
    try:
        theirs = httpx.get(f"{bare.url}/api/tasks", headers=owner.headers, timeout=30)
    finally:
        bare.stop()
    assert len(ours.json()) == 5
    assert theirs.content == ours.content
