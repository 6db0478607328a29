"""The database connection policy: the engine, its connection hooks, the errors callers see, and
the fast path that sends a compiled statement straight to the driver (docs/security.md: 5.
Database faults and overload; docs/performance.md).

Both databases run in autocommit mode: each statement is its own transaction, so a request
costs one round trip, with no BEGIN or COMMIT around it.
"""

import functools
import select as select_module
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from threading import RLock
from typing import Any, NamedTuple, cast

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.expression import ClauseElement, Executable
from sqlmodel import create_engine

SQLITE_DEFAULT = "sqlite:///./todo.db"
POOL_SIZE = 20  # connections per worker, kept open: a new one costs Neon 6-7 round trips
POOL_OVERFLOW = 0  # no overflow: overflow connections are opened and closed under load
POOL_TIMEOUT = 5  # seconds a request waits for a connection before 503
CONNECT_TIMEOUT = 5  # seconds to open a PostgreSQL connection
STATEMENT_TIMEOUT_MS = 10_000  # server-side limit per statement

# SQLSTATEs after which a session is of no further use, though it is still open (PostgreSQL
# Appendix A): the server turned read-only (25006: a failover left the pool on a replica, or
# default_transaction_read_only), or it is shutting down or not yet accepting work (57P01-03).
RENEW_SESSIONS = {"25006", "57P01", "57P02", "57P03"}
# SQLite's result code (the low byte of its extended codes) of a write on a connection opened
# read-only: SQLite opens a file it may not write read-only and keeps the connection so.
SQLITE_READONLY = 8


class DatabaseUnavailable(Exception):
    """The database cannot be reached or did not answer in time; retrying later may work."""


class InvalidData(ValueError):
    """The database refused a value (a NUL character, text that is not valid Unicode, a value
    out of a column's range): input that validation should have stopped; retrying cannot help."""


def normalize_url(url: str) -> str:
    """SQLAlchemy URL for `url`: `postgres://` and `postgresql://` select psycopg2.

    Query parameters such as `sslmode=require&channel_binding=require` pass through to libpq.
    """
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def make_engine(
    url: str,
    pool_timeout: float = POOL_TIMEOUT,
    connect_timeout: int = CONNECT_TIMEOUT,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
) -> Engine:
    """An autocommit engine for `url` (SQLite file or PostgreSQL) with bounded waits: at most
    `pool_timeout` seconds for a pooled connection (on SQLite: for the write lock),
    `connect_timeout` seconds (whole, libpq's unit) to open one, `statement_timeout_ms`
    milliseconds per PostgreSQL statement."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            connect_args={"check_same_thread": False, "timeout": pool_timeout},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "handle_error", _renew_sessions_of_a_moved_server)
        _queue_sqlite_writers(engine, pool_timeout)
        return engine
    engine = create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_timeout=pool_timeout,
        # No rollback when a connection goes back to the pool: in autocommit mode psycopg2's
        # rollback() sends nothing (it is a no-op even after an explicit BEGIN), so the reset
        # only cost CPU (~2 us per request). Every statement here is its own transaction, which
        # is also what a transaction-mode pooler such as PgBouncer needs.
        pool_reset_on_return=None,
        connect_args={
            "connect_timeout": connect_timeout,
            "application_name": "todo-api",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )
    event.listen(engine, "connect", functools.partial(_postgres_on_connect, statement_timeout_ms))
    event.listen(engine, "checkout", _drop_dead_connection)
    event.listen(engine, "handle_error", _renew_sessions_of_a_moved_server)
    return engine


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _queue_sqlite_writers(engine: Engine, timeout: float) -> None:
    """Make the writers of this process take turns on SQLite's one write lock.

    Left to SQLite, concurrent writers each retry on their own until `timeout` (its busy
    handler sleeps and polls, so some lose every time and give up with "database is locked").
    Here a connection takes a process-wide lock before its first statement that is not a
    SELECT and keeps it until it goes back to the pool (its statements are autocommit, so the
    write is then committed and its rows read): writers wait in line, without polling, and
    SQLite's own wait only arbitrates between processes. Readers never wait (WAL).
    """
    lock = RLock()  # re-entrant: a thread never waits for a lock it holds

    def before_cursor_execute(connection, _cursor, statement, *_args) -> None:
        if connection.info.get("writing") or statement.lstrip()[:6].upper() == "SELECT":
            return
        if not lock.acquire(timeout=timeout):
            raise exc.TimeoutError(f"no turn to write within {timeout} s")
        connection.info["writing"] = True

    def checkin(_dbapi_connection, record) -> None:
        if record.info.pop("writing", False):
            lock.release()

    event.listen(engine, "before_cursor_execute", before_cursor_execute)
    event.listen(engine, "checkin", checkin)


def _postgres_on_connect(statement_timeout_ms: int, dbapi_connection, _record) -> None:
    # Once per new connection; SET rather than the `options` startup parameter, which
    # connection poolers such as PgBouncer reject.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")


def _renew_sessions_of_a_moved_server(context) -> None:
    """SQLAlchemy `handle_error` hook: treat RENEW_SESSIONS, and SQLITE_READONLY, like a lost
    connection, so that SQLAlchemy invalidates the whole pool (each connection is reopened at
    its next checkout, against the writable server a failover points the host at, or the
    SQLite file once writable again) and `connect` maps the error to DatabaseUnavailable (503)
    instead of a 500."""
    if _renews_sessions(context.original_exception):
        context.is_disconnect = True


def _renews_sessions(error: BaseException) -> bool:
    sqlite_code = getattr(error, "sqlite_errorcode", None)
    return getattr(error, "pgcode", None) in RENEW_SESSIONS or (
        sqlite_code is not None and sqlite_code & 0xFF == SQLITE_READONLY
    )


def _drop_dead_connection(dbapi_connection, _record, _proxy) -> None:
    """Discard a pooled connection the server has closed, without a round trip.

    An idle PostgreSQL connection has nothing to read; if its socket is readable the server has
    sent a termination notice or closed it (restart, `pg_terminate_backend`, idle timeout).
    Raising DisconnectionError makes the pool open a fresh connection instead.
    """
    if dbapi_connection.closed:
        raise exc.DisconnectionError("connection closed")
    poller = select_module.poll()  # not select(): it fails for descriptors past 1023
    poller.register(dbapi_connection.fileno(), select_module.POLLIN)
    if poller.poll(0):  # readable, hung up or in error
        raise exc.DisconnectionError("server closed the idle connection")


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """A pooled connection of `engine`, with the database's errors mapped to what a caller can
    act on: DatabaseUnavailable (unreachable, timed out, pool exhausted, session renewed) and
    InvalidData (a value the database or the driver refused). Other errors pass unchanged."""
    try:
        with engine.connect() as connection:
            try:
                yield connection
            except ValueError as error:
                if not _refused_by_driver(error):
                    raise
                raise InvalidData(str(error)) from error
    except (exc.OperationalError, exc.TimeoutError, exc.DisconnectionError) as error:
        raise DatabaseUnavailable(str(error).splitlines()[0]) from error
    except exc.DataError as error:
        raise InvalidData(str(error).splitlines()[0]) from error
    except exc.DBAPIError as error:
        if error.connection_invalidated:
            raise DatabaseUnavailable(str(error).splitlines()[0]) from error
        raise


def _refused_by_driver(error: ValueError) -> bool:
    """Whether psycopg2 refused a parameter before sending it: a NUL character, or text that
    cannot be encoded (lone surrogates)."""
    return isinstance(error, UnicodeEncodeError) or "NUL (0x00)" in str(error)


def foreign_key_violation(error: exc.IntegrityError) -> bool:
    """Whether `error` is a broken foreign key (SQLSTATE 23503; SQLite's own message)."""
    code = getattr(error.orig, "pgcode", None)
    return code == "23503" or "FOREIGN KEY constraint failed" in str(error.orig)


class Fetched(NamedTuple):
    """What a statement run by `run` gave: its rows (tuples, or SQLAlchemy Rows) and how many
    rows it matched."""

    rows: Sequence[Any]
    rowcount: int

    def first(self) -> Any:
        return self.rows[0] if self.rows else None


def run(connection: Connection, statement: Executable, params: dict) -> Fetched:
    """Execute `statement` with `params`. On PostgreSQL a statement that needs no type
    processing (`precompiled`) is compiled once and sent on the pooled psycopg2 connection's
    own cursor: `Connection.execute` repeats on every call, even for a statement compiled
    already, its cache key, an execution context and result metadata (a 20-task list took
    0.22-0.25 ms of CPU in process through it, 0.19 ms this way, the bare driver 0.075 ms; the
    rest is the `Connection` and the pool; `Connection.exec_driver_sql` costs as much as
    `execute`). Errors are wrapped and a dead connection invalidated as SQLAlchemy does it
    (`exc.DBAPIError`), so callers see no difference; no `before_cursor_execute` event fires
    for these. Everything else, and SQLite (whose times are text that SQLAlchemy converts),
    goes through `Connection.execute`. `statement` must be built once per shape: its compiled
    form is kept for good."""
    compiled = precompiled(statement, connection.dialect)
    if compiled is None:
        result = connection.execute(statement, params)
        return Fetched(result.all() if result.returns_rows else [], result.rowcount)
    sql, constants = compiled
    params = {**constants, **params}
    dbapi_connection: Any = connection.connection.dbapi_connection
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(sql, params)
            return Fetched(cursor.fetchall() if cursor.description else [], cursor.rowcount)
    except connection.dialect.loaded_dbapi.Error as error:
        # What SQLAlchemy's own handling does for these errors (with
        # `_renew_sessions_of_a_moved_server`), which a raw cursor bypasses: a lost connection
        # or a session of no further use renews the whole pool.
        lost = connection.dialect.is_disconnect(error, dbapi_connection, None)
        gone = lost or _renews_sessions(error)
        if gone:
            connection.invalidate(error)
            connection.engine.dispose()
        raise exc.DBAPIError.instance(
            sql, params, error, connection.dialect.loaded_dbapi.Error, connection_invalidated=gone
        ) from error


@functools.cache
def precompiled(statement: Executable, dialect: Dialect) -> tuple[str, dict] | None:
    """SQL text of `statement` for `dialect` (PostgreSQL only) and the values of its constant
    parameters (such as the 1 of `version + 1`), or None when running it needs SQLAlchemy's
    processing: an expanding IN, or a type that converts a parameter or a result."""
    if dialect.name != "postgresql":
        return None
    compiled: Any = cast(ClauseElement, statement).compile(dialect=dialect)
    binds = compiled.binds.values()
    if any(bind.expanding or _converts(bind.type, dialect, "bind") for bind in binds):
        return None
    columns = getattr(statement, "exported_columns", ())
    if any(_converts(column.type, dialect, "result") for column in columns):
        return None
    constants = {compiled.bind_names[bind]: bind.value for bind in binds if not bind.required}
    return compiled.string, constants


def _converts(type_, dialect: Dialect, direction: str) -> bool:
    impl = type_.dialect_impl(dialect)
    if direction == "bind":
        return impl.bind_processor(dialect) is not None
    return impl.result_processor(dialect, None) is not None
