"""What the figures were measured on: hardware, versions, and how uvicorn runs."""

import importlib.metadata
import importlib.util
import os
import platform

from bench import wrk
from tests.servers import run_sql

PACKAGES = (
    "uvicorn",
    "starlette",
    "SQLAlchemy",
    "sqlmodel",
    "psycopg2-binary",
    "pydantic",
    "PyJWT",
    "uvloop",
    "httptools",
)


def _first(path: str, prefix: str) -> str:
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def facts(database_url: str) -> list[tuple[str, str]]:
    """(what, value) pairs describing this machine and software."""
    postgres = run_sql(database_url, "SHOW server_version")[0][0]
    mem_kib = int(_first("/proc/meminfo", "MemTotal").split()[0])
    fast = [name for name in ("uvloop", "httptools") if importlib.util.find_spec(name)]
    return [
        ("CPU", _first("/proc/cpuinfo", "model name")),
        ("cores", str(os.cpu_count())),
        ("RAM", f"{mem_kib / 1024 / 1024:.1f} GiB"),
        (
            "OS",
            _first("/etc/os-release", "PRETTY_NAME").strip().strip('"')
            + f", Linux {platform.release()}",
        ),
        ("Python", platform.python_version()),
        ("PostgreSQL", postgres + " (local, 127.0.0.1)"),
        ("wrk", wrk.version() if wrk.available() else "not installed"),
        ("packages", ", ".join(f"{name} {_version(name)}" for name in PACKAGES)),
        (
            "uvicorn event loop / HTTP parser",
            "uvloop + httptools (uvicorn[standard] installs both; `uvicorn app:app` picks them)"
            if len(fast) == 2
            else f"asyncio / h11 ({', '.join(fast) or 'neither uvloop nor httptools'} installed)",
        ),
        ("load average at start (1, 5, 15 min)", ", ".join(f"{x:.1f}" for x in os.getloadavg())),
    ]
