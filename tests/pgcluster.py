"""Throwaway servers shaped like Neon: a private PostgreSQL cluster that accepts only TLS with
SCRAM-SHA-256 passwords (what `sslmode=require&channel_binding=require` needs), and PgBouncer in
transaction pooling mode (what Neon's `-pooler` host is).

Both run as an unprivileged OS user (`postgres` when the tests run as root: the servers refuse
root), on free loopback ports, from temporary directories that stop() removes. A missing program
skips the test locally and fails it in CI (`CI` set), so CI can never skip these tests silently.
"""

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg2
import pytest

from tests.servers import free_port

START_TIMEOUT = 30  # seconds


def unavailable(reason: str):
    """Skip the calling test, or fail it in CI, where these tests must always run."""
    if os.getenv("CI"):
        pytest.fail(f"{reason} (CI must run this test)", pytrace=False)
    pytest.skip(reason)


def require_program(name: str, *search_dirs: str) -> str:
    """The path of program `name`, from PATH or else `search_dirs`."""
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(search_dirs) or None)
    if not path:
        unavailable(f"{name} is not installed (Debian packages: postgresql, pgbouncer, openssl)")
    return path


def postgres_bin_dirs() -> list[str]:
    """Debian's PostgreSQL program directories, newest version first; PG_BINDIR wins."""
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if d.split("/")[-2].isdigit()]
    found.sort(key=lambda d: int(d.split("/")[-2]), reverse=True)
    return [os.environ["PG_BINDIR"], *found] if os.getenv("PG_BINDIR") else found


def connection_url(
    scheme: str, user: str, password: str, address: str, dbname: str, query: dict[str, str]
) -> str:
    """`scheme://user:password@address/dbname?query`, the password percent-encoded."""
    url = f"{scheme}://{user}:{quote(password, safe='')}@{address}/{dbname}"
    return f"{url}?{urlencode(query)}" if query else url


def unprivileged() -> dict:
    """Popen arguments that drop root to the `postgres` OS user; none when not root."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root and there is no `postgres` OS user to run the servers as")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def hand_over(directory: Path, owner: dict) -> None:
    """Give `directory` and everything in it to the unprivileged user of `owner`."""
    if owner:
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, owner["user"], owner["group"])


class _Process:
    """A server process started from a temporary directory; stop() kills it and removes both."""

    def __init__(self, prefix: str) -> None:
        self.owner = unprivileged()
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.log_path = self.dir / "server.log"
        self.process: subprocess.Popen | None = None

    def _launch(self, command: list[str]) -> None:
        hand_over(self.dir, self.owner)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self.owner,
            )

    def _wait_until(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} exited {self.process.returncode}:\n{self.logs()}")
            try:
                ready()
                return
            except (OSError, psycopg2.OperationalError):
                time.sleep(0.05)
        raise RuntimeError(f"{what} did not start in {START_TIMEOUT} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGINT) -> None:
        """`sig` (a fast shutdown for both servers), SIGKILL after 10 s; then remove the files."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresCluster(_Process):
    """A private PostgreSQL cluster like a Neon endpoint: over TCP only `hostssl` with
    SCRAM-SHA-256, a self-signed certificate, a `todo` role with a random password owning a
    `todo` database. Its Unix socket (in `dir`) trusts everyone: set-up and checks only."""

    USER = DATABASE = "todo"
    HBA = "local   all  all                trust\nhostssl all  all  127.0.0.1/32  scram-sha-256\n"

    def __init__(self) -> None:
        initdb = require_program("initdb", *postgres_bin_dirs())
        self.postgres = str(Path(initdb).with_name("postgres"))
        self.pg_ctl = str(Path(initdb).with_name("pg_ctl"))
        self.initdb, self.openssl = initdb, require_program("openssl")
        super().__init__("todo-pg-")
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.data = self.dir / "data"

    def start(self) -> "PostgresCluster":
        try:
            self._run(
                [
                    self.initdb,
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ]
            )
            self._run(
                [
                    self.openssl,
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.crt",
                ]
            )
            (self.dir / "server.key").chmod(0o600)
            (self.data / "pg_hba.conf").write_text(self.HBA)
            self._launch([self.postgres, "-D", str(self.data), *self._settings()])
            self._wait_until(lambda: self.admin("SELECT 1"), "postgres")
            self.admin(f"CREATE ROLE {self.USER} LOGIN PASSWORD %s", self.password)
            self.admin(f"CREATE DATABASE {self.DATABASE} OWNER {self.USER}")
        except BaseException:
            self.stop()
            raise
        return self

    def pause(self) -> None:
        """Stop the server as an operator would (`pg_ctl stop -m fast`: open connections are
        terminated), keeping its data for resume()."""
        self._run([self.pg_ctl, "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "20"])
        self.process.wait(10)

    def resume(self) -> None:
        """Start the server paused by pause() again, on the same port with the same data."""
        self._launch([self.postgres, "-D", str(self.data), *self._settings()])
        self._wait_until(lambda: self.admin("SELECT 1"), "postgres")

    def _settings(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": self.dir,
            "ssl": "on",
            "ssl_cert_file": self.dir / "server.crt",
            "ssl_key_file": self.dir / "server.key",
            "password_encryption": "scram-sha-256",
            "fsync": "off",  # throwaway data: fast start-up and writes
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]

    def _run(self, command: list[str]) -> None:
        hand_over(self.dir, self.owner)
        done = subprocess.run(command, cwd=self.dir, capture_output=True, text=True, **self.owner)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")

    def admin(self, sql: str, *params, dbname: str = "postgres") -> list[tuple]:
        """Run `sql` as superuser over the trusted Unix socket, in database `dbname`; the rows
        it returns."""
        connection = psycopg2.connect(
            host=str(self.dir),
            port=self.port,
            user="postgres",
            dbname=dbname,
            connect_timeout=5,
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params or None)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def url(self, scheme: str = "postgresql", host: str = "localhost", **query: str) -> str:
        """`scheme://todo:PASSWORD@host:PORT/todo?query`, a Neon-style connection string."""
        address = f"{host}:{self.port}"
        return connection_url(scheme, self.USER, self.password, address, self.DATABASE, query)


class PgBouncer(_Process):
    """PgBouncer in transaction pooling mode in front of one database, like Neon's `-pooler`
    host: clients log in as `todo` with a random password (SCRAM-SHA-256, checked against a
    userlist file), share at most `pool_size` server connections, and startup parameters
    `extra_float_digits` and `options` are ignored as Neon does. PgBouncer logs in to the
    server as `server_user`."""

    USER = DATABASE = "todo"

    def __init__(
        self,
        host: str,
        port: int,
        dbname: str,
        server_user: str,
        server_password: str | None = None,
        pool_size: int = 3,
    ) -> None:
        self.program = require_program("pgbouncer", "/usr/sbin", "/usr/local/sbin")
        super().__init__("todo-pgbouncer-")
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.target = f"host={host} port={port} dbname={dbname} user={server_user}"
        if server_password:
            self.target += f" password={server_password}"
        self.config = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",  # TCP only: no socket file in /tmp to clash with
            "auth_type": "scram-sha-256",
            "auth_file": self.dir / "userlist.txt",
            "pool_mode": "transaction",
            "default_pool_size": pool_size,
            "max_client_conn": 500,
            "ignore_startup_parameters": "extra_float_digits,options",
        }

    def start(self) -> "PgBouncer":
        settings = "".join(f"{name} = {value}\n" for name, value in self.config.items())
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\n{self.DATABASE} = {self.target}\n\n[pgbouncer]\n{settings}"
        )
        (self.dir / "userlist.txt").write_text(f'"{self.USER}" "{self.password}"\n')
        try:
            self._launch([self.program, str(self.dir / "pgbouncer.ini")])
            self._wait_until(
                lambda: socket.create_connection(("127.0.0.1", self.port), 1).close(), "pgbouncer"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def url(self, scheme: str = "postgresql", **query: str) -> str:
        """`scheme://todo:PASSWORD@127.0.0.1:PORT/todo?query`, the pooled connection string."""
        address = f"127.0.0.1:{self.port}"
        return connection_url(scheme, self.USER, self.password, address, self.DATABASE, query)
