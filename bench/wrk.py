"""Load runs with wrk (Debian: `apt-get install wrk`), bounded in time, and their parsed output."""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

INSTALL_HINT = "wrk is not installed: run `apt-get install wrk` (Debian/Ubuntu) and retry"
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    """One run: completed requests, duration, rate, latency percentiles, failed requests."""

    requests: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    failures: int  # non-2xx/3xx answers plus socket errors


def available() -> bool:
    return shutil.which("wrk") is not None


def version() -> str:
    """wrk's version line, e.g. `wrk debian/4.1.0-3+b2 [epoll]`."""
    completed = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return (completed.stdout or completed.stderr).splitlines()[0].split(" Copyright")[0]


def run(
    url: str,
    headers: dict[str, str],
    seconds: int,
    connections: int,
    threads: int = 1,
    cpus: set[int] | None = None,
    script: str | None = None,
) -> WrkResult:
    """`wrk` against `url` for `seconds` with `connections` keep-alive connections, on `cpus`
    (all by default), with the Lua `script` file if given (`rotating_tokens`)."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
    ] + (["-s", script] if script else [])
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    completed = subprocess.run(
        command + [url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        preexec_fn=pin,
    )
    return parse(completed.stdout)


def rotating_tokens(path: str, tokens: list[str]) -> str:
    """Write a wrk Lua script to `path` whose requests take the bearer `tokens` in turn (one
    wrk thread: one counter); returns `path`."""
    listed = ",\n".join(f'  "{token}"' for token in tokens)
    with open(path, "w") as script:
        script.write(
            f"local tokens = {{\n{listed}\n}}\nlocal turn = 0\n"
            "request = function()\n"
            "  turn = turn % #tokens + 1\n"
            '  return wrk.format(nil, nil, {Authorization = "Bearer " .. tokens[turn]})\n'
            "end\n"
        )
    return path


def parse(output: str) -> WrkResult:
    """The figures of wrk's report."""
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+),", output)
    seconds = float(total.group(2)) * UNITS_MS[total.group(3)] / 1000
    failures = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        failures += sum(int(n) for n in socket.groups())
    return WrkResult(
        requests=int(total.group(1)),
        seconds=seconds,
        per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=_percentile(output, "50"),
        p99_ms=_percentile(output, "99"),
        failures=failures,
    )


def _percentile(output: str, which: str) -> float:
    found = re.search(rf"^\s+{which}%\s+([\d.]+)(\w+)", output, re.MULTILINE)
    return float(found.group(1)) * UNITS_MS[found.group(2)]
