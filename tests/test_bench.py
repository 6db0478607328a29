"""`make bench` at toy sizes: the benchmark still runs, measures and writes its report (the
sections that need wrk are left to `make bench` itself)."""

import os
import re
import subprocess
import sys

from bench import report
from tests.servers import ROOT


def test_bench_runs_at_toy_sizes(postgres_admin_url, tmp_path):
    output = tmp_path / "performance.md"
    kept = f"{report.ANALYSIS_START}\nhand-written notes\n{report.ANALYSIS_END}"
    output.write_text(f"old figures\n{kept}\n")
    env = {
        **os.environ, "BENCH_DATABASE_URL": postgres_admin_url, "BENCH_OUTPUT": str(output),
        "BENCH_SECTIONS": "roundtrips,latency,scale", "BENCH_LATENCY_REQUESTS": "3",
        "BENCH_LATENCY_REQUESTS_DELAYED": "2", "BENCH_DELAY_MS": "5", "BENCH_SCALE_TASKS": "2000",
        "BENCH_SCALE_USERS": "20", "BENCH_SCALE_BIG_USER_TASKS": "500", "BENCH_SCALE_REQUESTS": "2",
    }
    done = subprocess.run([sys.executable, "-m", "bench"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\| round trips \| list \(GET\) +\| 1 · 1 +\| 1 +\| yes", done.stdout)
    assert re.search(r"\| latency +\| GET /api/tasks/\{id\} .*; 5 ms: p50 \d+\.\d", done.stdout)
    assert "Index Scan Backward using ix_tasks_user_created" in done.stdout  # store.py's index
    document = output.read_text()
    assert "old figures" not in document and "hand-written notes" in document
    assert done.stdout.splitlines()[2] in document and "## Query plans" in document


def test_wrk_missing_is_explained(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "BENCH_SECTIONS": "throughput"}
    done = subprocess.run([sys.executable, "-m", "bench"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "apt-get install wrk" in done.stderr
