"""Real servers for the tests: uvicorn processes of the app, and throwaway PostgreSQL databases."""

import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import psycopg2
import pytest
from sqlalchemy.engine import make_url

import migrations

ROOT = Path(__file__).resolve().parent.parent


def require_node_packages(folder: Path, stamp: str = "node_modules/.installed") -> None:
    """Skip when Node or the packages of `folder` are missing (`make test` runs `npm ci` and
    stamps node_modules/.installed, or what `stamp` names, e.g. a build); under CI that is a
    failure."""
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not (folder / stamp).exists():
        missing = f"{folder.relative_to(ROOT)}/{stamp} is missing (make test makes it)"
    if missing:
        if os.getenv("CI"):
            pytest.fail(f"{missing}: CI must run these tests")
        pytest.skip(missing)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


APP_VARIABLES = (
    "DATABASE_URL",
    "BETTER_AUTH_SECRET",
    "BETTER_AUTH_URL",
    "BETTER_AUTH_JWKS_URL",
    "CORS_ORIGINS",
    "LOG_LEVEL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "CURSOR_SECRET",
)


# coverage.py measures every Python child whose environment holds this variable (pyproject.toml:
# `patch = ["subprocess"]`, which sets it for the run).
COVERAGE_VARIABLE = "COVERAGE_PROCESS_CONFIG"


def unmeasured(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without coverage.py's variable: for a child that runs no code of the app's that a
    measured process does not run too (a tool, a load client, the workers of a multi-worker
    server); measuring one costs about a second of CPU for its start alone and adds nothing
    to the report."""
    return {name: value for name, value in env.items() if name != COVERAGE_VARIABLE}


class AppServer:
    """`uvicorn app:app` in a child process on a free loopback port, run in `cwd`, configured by
    `env` alone (the app's variables of the calling environment are left out). `app` names
    another ASGI app and `args` adds uvicorn options (the benchmark's `--workers 2`, the
    Procfile's: `procfile_options()`). Its database is migrated first, as the release step does
    (`migrate=False`: not); `open_files` is the soft RLIMIT_NOFILE the server starts with.
    coverage.py measures it, unless `measured=False` (see `unmeasured`)."""

    def __init__(
        self,
        env: dict[str, str],
        port: int | None = None,
        cwd: Path = ROOT,
        app: str = "app:app",
        args: Sequence[str] = (),
        migrate: bool = True,
        open_files: int | None = None,
        measured: bool = True,
    ) -> None:
        inherited = {k: v for k, v in os.environ.items() if k not in APP_VARIABLES}
        self.env = {**inherited, **env} if measured else unmeasured({**inherited, **env})
        self.cwd = cwd
        self.app = app
        self.args = list(args)
        self.open_files = open_files
        self.migrate = migrate
        self.port_given = port is not None
        self._new_log(port or free_port())
        self.process: subprocess.Popen | None = None

    def _new_log(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="todo-api-", suffix=".log", delete=False)

    def start(self, wait: bool = True) -> "AppServer":
        if self.migrate:
            migrations.upgrade(self.env.get("DATABASE_URL") or f"sqlite:///{self.cwd}/todo.db")
        self._spawn()
        if wait:
            self.wait_ready()
        return self

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "uvicorn", self.app, "--app-dir", str(ROOT)]
        self.process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            cwd=self.cwd,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._limit_open_files if self.open_files else None,
        )

    def _limit_open_files(self) -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, hard))

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /health answers 200; RuntimeError with the log if not within `timeout` s (the
        server stopped first, so its process and log file are not left to the caller)."""
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    if self.port_given or "address already in use" not in self.logs():
                        raise RuntimeError(
                            f"server exited {self.process.returncode}:\n{self.logs()}"
                        )
                    # free_port's port was taken before uvicorn bound it (by another process
                    # of the run: pytest-xdist's workers pick ports at once): another one
                    self.log.close()
                    os.unlink(self.log.name)  # that attempt's log: nothing to keep
                    self._new_log(free_port())
                    self._spawn()
                try:
                    if http.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.logs()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Stop the server with `sig` (killed after `timeout` seconds); its exit code. The log
        stays readable."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode if self.process else 0

    def logs(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


def procfile_options() -> list[str]:
    """The uvicorn options of the Procfile's `web:` line but --host and --port (the limits it
    sets for production), so that tests run the server as deployed."""
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    words = shlex.split(line.removeprefix("web:"))
    options = words[words.index("app:app") + 1 :]
    kept = []
    for name, value in zip(options[::2], options[1::2]):
        if name not in ("--host", "--port"):
            kept += [name, value]
    return kept


def run_sql(url: str, sql: str, params=None) -> list[tuple]:
    """Run one statement on a new autocommit connection to `url`; its rows, if it returns any."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


class PostgresDatabase:
    """A fresh database on the server of `admin_url`, dropped by `drop()`."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"todo_test_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{self.name}"')
        self.url = make_url(admin_url).set(database=self.name).render_as_string(False)

    def _admin(self, sql: str, *params) -> list:
        return run_sql(self.admin_url, sql, params)

    def terminate_connections(self) -> int:
        """pg_terminate_backend on every connection to this database; returns how many."""
        rows = self._admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            self.name,
        )
        return len(rows)

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
