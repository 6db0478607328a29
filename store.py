"""The database: engine, tables and every query (docs/api.md: Data).

Every task query takes the caller's user id and is scoped by it, so no function here can reach
another user's rows. Statements run in autocommit mode: each is its own transaction, so a request
costs one round trip, with no BEGIN or COMMIT around it. Nothing here knows about HTTP or tokens.
"""

import functools
import hashlib
import json
import logging
import secrets
import select as select_module
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from threading import Lock, RLock, local
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    event,
    exc,
    func,
    literal_column,
    not_,
    or_,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel, create_engine, delete, insert, select, update

from schemas.tasks import TASK_JSON, TASK_LIST_JSON, ListQuery, TaskCreate, TaskPublic, as_utc

log = logging.getLogger("todo.store")

SQLITE_DEFAULT = "sqlite:///./todo.db"
POOL_SIZE = 20  # connections per worker, kept open: a new one costs Neon 6-7 round trips
POOL_OVERFLOW = 0  # no overflow: overflow connections are opened and closed under load
POOL_TIMEOUT = 5  # seconds a request waits for a connection before 503
CONNECT_TIMEOUT = 5  # seconds to open a PostgreSQL connection
STATEMENT_TIMEOUT_MS = 10_000  # server-side limit per statement
KNOWN_USERS_MAX = 10_000  # users remembered per process, so the upsert is not repeated


class DatabaseUnavailable(Exception):
    """The database cannot be reached or did not answer in time; retrying later may work."""


class InvalidData(ValueError):
    """The database refused a value (a NUL character, text that is not valid Unicode, a value
    out of a column's range): input that validation should have stopped; retrying cannot help."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


class utc_wall_time(FunctionElement):
    """`timezone('UTC', <timestamptz>)` on PostgreSQL: the instant as UTC wall time (a
    timestamp without time zone), whatever the session's TimeZone; the value itself elsewhere."""

    name = "utc_wall_time"
    inherit_cache = True


@compiles(utc_wall_time)
def _utc_wall_time(element, compiler, **kw) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(utc_wall_time, "postgresql")
def _utc_wall_time_postgresql(element, compiler, **kw) -> str:
    return f"timezone('UTC', {compiler.process(element.clauses, **kw)})"


class UTCTimestamp(TypeDecorator):
    """A timestamp with time zone that reads back as an aware UTC datetime on both databases.

    SQLite keeps no zone (its values are UTC, naive). PostgreSQL would answer in the session's
    TimeZone, which a server, a Neon project or a DBA may set to anything, and in which the
    extremes of the range leave the years Python can read (0001-01-01 UTC is year 0 in New York,
    9999-12-31 23:59 UTC year 10000 in Tokyo). So every selected or returned column of this
    type is converted to UTC wall time in the statement itself (`column_expression`): unlike a
    session `SET TIME ZONE`, this holds behind a transaction pooler (docs/security.md)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def column_expression(self, column):
        expression = utc_wall_time(column)
        expression.type = self
        return expression

    def process_result_value(self, value: datetime | None, _dialect) -> datetime | None:
        if value is None or value.tzinfo is timezone.utc:
            return value
        return as_utc(value)


def _timestamp(**kwargs) -> Column:
    return Column(UTCTimestamp(), **kwargs)


class User(SQLModel, table=True):
    """A Better Auth user, created on the first authenticated call (id is the token's user id)."""

    __tablename__ = "users"

    id: str = Field(primary_key=True)
    email: str | None = Field(default=None, unique=True)
    name: str | None = None
    created_at: datetime = Field(sa_column=_timestamp(nullable=False))
    # `iat` (seconds) of the token whose email and name are stored: older tokens never win
    claims_issued_at: float | None = None


class Task(SQLModel, table=True):
    """A task owned by one user. `version` starts at 1 and grows by one on every change (the
    ETag); ids are never reused, not even on SQLite (AUTOINCREMENT)."""

    __tablename__ = "tasks"
    # One index per list sort, led by user_id: a user's first page is an index range scan of
    # `limit` rows whatever the table size (docs/performance.md).
    __table_args__ = (
        Index("ix_tasks_user_created", "user_id", "created_at", "id"),
        Index("ix_tasks_user_updated", "user_id", "updated_at", "id"),
        # sort=completed runs newest first with never-completed tasks last (DESC NULLS LAST),
        # which a backward scan of an ascending index cannot give; SQLite cannot index it.
        Index(
            "ix_tasks_user_completed",
            "user_id",
            column("completed_at").desc().nulls_last(),
            column("id").desc(),
        ).ddl_if(dialect="postgresql"),
        Index("ix_tasks_user_due", "user_id", "due_date", "id"),
        Index("ix_tasks_user_title", "user_id", text("lower(title)"), "id"),
        {"sqlite_autoincrement": True},
    )

    # 64-bit (SQLite's INTEGER PRIMARY KEY already is: the rowid, which AUTOINCREMENT needs
    # spelled INTEGER); the API hands out at most 2^53 - 1 (migrations/versions/0006).
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    )
    user_id: str = Field(foreign_key="users.id")  # indexed first in every ix_tasks_user_*
    title: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    completed: bool = Field(default=False, index=True)
    due_date: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    completed_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    created_at: datetime = Field(sa_column=_timestamp(nullable=False))
    updated_at: datetime = Field(sa_column=_timestamp(nullable=False))
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})


class IdempotencyKey(SQLModel, table=True):
    """A client's Idempotency-Key and the response it produced (IETF Idempotency-Key draft).

    `status` is NULL while the first request with the key is still running.
    """

    __tablename__ = "idempotency_keys"

    user_id: str = Field(primary_key=True)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str
    created_at: datetime = Field(sa_column=_timestamp(nullable=False, index=True))
    status: int | None = None
    response: str | None = None  # the task row the request produced, as JSON


class AppSecret(SQLModel, table=True):
    """A key every worker and restart shares, generated once (Store.shared_secret)."""

    __tablename__ = "app_secrets"

    name: str = Field(primary_key=True, max_length=64)
    value: str
    created_at: datetime = Field(sa_column=_timestamp(nullable=False))


TASK_COLUMNS = tuple(Task.__table__.c)
IDEMPOTENCY_TTL = timedelta(hours=24)  # how long a key is remembered
IDEMPOTENCY_ABANDONED = timedelta(minutes=1)  # an unfinished claim older than this is retaken
PURGE_BATCH = 1000  # expired keys deleted per statement: well inside STATEMENT_TIMEOUT_MS


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


# SQLSTATEs after which a session is of no further use, though it is still open (PostgreSQL
# Appendix A): the server turned read-only (25006: a failover left the pool on a replica, or
# default_transaction_read_only), or it is shutting down or not yet accepting work (57P01-03).
RENEW_SESSIONS = {"25006", "57P01", "57P02", "57P03"}


def _renew_sessions_of_a_moved_server(context) -> None:
    """SQLAlchemy `handle_error` hook: treat RENEW_SESSIONS like a lost connection, so that
    SQLAlchemy invalidates the whole pool (each connection is reopened at its next checkout,
    against the writable server a failover points the host at) and Store maps the error to
    DatabaseUnavailable (503) instead of a 500."""
    if getattr(context.original_exception, "pgcode", None) in RENEW_SESSIONS:
        context.is_disconnect = True


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


def _foreign_key_violation(error: exc.IntegrityError) -> bool:
    """Whether `error` is a broken foreign key (SQLSTATE 23503; SQLite's own message)."""
    code = getattr(error.orig, "pgcode", None)
    return code == "23503" or "FOREIGN KEY constraint failed" in str(error.orig)


def _refused_by_driver(error: ValueError) -> bool:
    """Whether psycopg2 refused a parameter before sending it: a NUL character, or text that
    cannot be encoded (lone surrogates)."""
    return isinstance(error, UnicodeEncodeError) or "NUL (0x00)" in str(error)


Versions = list[int] | str | None  # If-Match: None (absent), "*" (any), or acceptable versions


class VersionMismatch(Exception):
    """The task exists but not at an expected version; `current` is the task as it is now."""

    def __init__(self, current: dict) -> None:
        super().__init__("version mismatch")
        self.current = current


class Store:
    """Every query of the API over one engine. Methods are blocking: call them off the event loop.

    Raises DatabaseUnavailable when the database cannot be reached, times out or the pool is
    exhausted for `pool_timeout` seconds, and InvalidData when it refuses a value. The timeouts
    are `make_engine`'s; the defaults are the deployed ones.
    """

    def __init__(
        self,
        url: str = SQLITE_DEFAULT,
        json_by_database: bool = True,
        *,
        pool_timeout: float = POOL_TIMEOUT,
        connect_timeout: int = CONNECT_TIMEOUT,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    ) -> None:
        """A store over the database at `url`. Task JSON is rendered by PostgreSQL, in Python
        on SQLite, and also on PostgreSQL with `json_by_database=False` (tests compare the two:
        the same bytes). The timeouts are `make_engine`'s (seconds, and milliseconds for
        statements); the defaults are the deployed ones."""
        self.engine = make_engine(url, pool_timeout, connect_timeout, statement_timeout_ms)
        self._known: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self._known_lock = Lock()
        self._pending = local()  # .user: claims to upsert with this thread's next statement
        self._postgres = self.engine.dialect.name == "postgresql"
        # INSERT with ON CONFLICT, in the engine's dialect
        self._insert = pg_insert if self._postgres else sqlite_insert
        self._json_by_database = json_by_database and self._postgres
        # what single-task statements return: the rendered task, or its row
        self._columns = TASK_ANSWER if self._json_by_database else TASK_COLUMNS

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
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

    def shared_secret(self, name: str) -> str:
        """The secret `name` kept in the database (app_secrets): the first process to ask
        stores a new random one (32 bytes, URL-safe text), race-free (INSERT ... ON CONFLICT DO
        NOTHING); every worker, instance and restart then reads the same value."""
        statement = (
            self._insert(AppSecret)
            .values(name=name, value=secrets.token_urlsafe(32), created_at=_now())
            .on_conflict_do_nothing(index_elements=[AppSecret.name])
        )
        with self._connect() as connection:
            connection.execute(statement)
            return connection.execute(
                select(AppSecret.value).where(AppSecret.name == name)
            ).scalar_one()

    def ping(self) -> None:
        """One trivial query; raises DatabaseUnavailable if the database does not answer or,
        PostgreSQL, answers read-only (then every pooled session is renewed, as after a write
        refused for that reason: a session keeps the read-only default it started with)."""
        with self._connect() as connection:
            if self.engine.dialect.name != "postgresql":
                connection.exec_driver_sql("SELECT 1")
                return
            read_only = (
                connection.exec_driver_sql(
                    "SELECT current_setting('transaction_read_only')"
                ).scalar()
                == "on"
            )
        if read_only:
            self.engine.dispose()
            raise DatabaseUnavailable("the database is read-only")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # users

    def ensure_user(
        self, user_id: str, email: str | None, name: str | None, issued_at: float | None = None
    ) -> None:
        """Create the user or refresh its email and name, race-free (INSERT ... ON CONFLICT).

        Skipped when this process already stored the same claims. If another user already holds
        `email` (unique), the user is stored without it rather than failing the request, and
        each later request of the user tries the email again (the holder may have given it up).
        Email and name are only refreshed from claims issued (`issued_at`, the token's `iat`) at
        or after the stored ones, so an older token never rolls them back, on any worker.
        """
        if not self._knows(user_id, email, name):
            with self._connect() as connection:
                self._store_user(connection, user_id, email, name, issued_at)

    @contextmanager
    def acting_for(
        self, user_id: str, email: str | None, name: str | None, issued_at: float | None = None
    ) -> Iterator[None]:
        """A block of queries for this user, whose row must exist (docs/api.md: Users, created on
        the first authenticated call). A user this process has not yet stored with these claims
        is upserted as `ensure_user` does; on PostgreSQL the upsert travels inside the block's
        first statement (a data-modifying CTE) instead of costing a round trip of its own. A
        user this process stored but whose row is gone (deleted in the database) is stored
        again when a statement of the block needs the row (`_execute`)."""
        self._pending.caller = (user_id, email, name, issued_at)
        try:
            if self.engine.dialect.name != "postgresql":
                self.ensure_user(user_id, email, name, issued_at)
            elif not self._knows(user_id, email, name):
                self._pending.user = (user_id, email, name, issued_at)
            yield
        finally:
            self._pending.user = self._pending.caller = None

    def _execute(self, connection: Connection, statement, params: dict) -> "Fetched":
        """`statement` with `params` (via `_run`), carrying the upsert `acting_for` left pending.

        If the statement breaks a constraint because of the caller's row (another user holds
        the email the combined upsert wrote, or the row was deleted in the database since this
        process stored it), none of it happened: the user is stored as `ensure_user` stores it,
        then the statement runs again, alone.
        """
        claims = getattr(self._pending, "user", None)
        try:
            if claims is None:
                return _run(connection, statement, params)
            self._pending.user = None
            combined = _with_user_upsert(statement, self._insert)
            result = _run(connection, combined, {**params, **_user_params(*claims, True)})
        except exc.IntegrityError as error:
            caller = getattr(self._pending, "caller", None)
            if caller is None or (claims is None and not _foreign_key_violation(error)):
                raise
            self._store_user(connection, *caller)
            return _run(connection, statement, params)
        self._remember(*claims[:3])
        return result

    def _store_user(
        self,
        connection: Connection,
        user_id: str,
        email: str | None,
        name: str | None,
        issued_at: float | None = None,
    ) -> None:
        try:
            connection.execute(
                _user_upsert(self._insert, True),
                _user_params(user_id, email, name, issued_at, True),
            )
        except exc.IntegrityError:
            log.warning("email of user %s is held by another user; stored without it", user_id)
            connection.execute(
                _user_upsert(self._insert, False),
                _user_params(user_id, email, name, issued_at, False),
            )
            email = None  # remembered as stored: the next request tries the email again
        self._remember(user_id, email, name)

    def _knows(self, user_id: str, email: str | None, name: str | None) -> bool:
        with self._known_lock:
            if self._known.get(user_id, ()) != (email, name):
                return False
            self._known.move_to_end(user_id)
            return True

    def _remember(self, user_id: str, email: str | None, name: str | None) -> None:
        with self._known_lock:
            self._known[user_id] = (email, name)
            self._known.move_to_end(user_id)
            if len(self._known) > KNOWN_USERS_MAX:
                self._known.popitem(last=False)

    # idempotency keys

    def claim_key(self, user_id: str, key: str, fingerprint: str) -> dict | None:
        """Claim `key` for a first request: None when claimed (new, expired, or abandoned by a
        request that never finished), else the stored row {fingerprint, status, response}
        (`status` None: the first request is still running; `response` the task answer it
        gave, as `get_task` returns it)."""
        now = _now()
        claim = self._insert(IdempotencyKey).values(
            user_id=user_id, key=key, fingerprint=fingerprint, created_at=now
        )
        retake = or_(
            IdempotencyKey.created_at < now - IDEMPOTENCY_TTL,
            and_(
                IdempotencyKey.status.is_(None),
                IdempotencyKey.created_at < now - IDEMPOTENCY_ABANDONED,
            ),
        )
        fresh = claim.excluded
        claim = claim.on_conflict_do_update(
            index_elements=[IdempotencyKey.user_id, IdempotencyKey.key],
            set_={
                "fingerprint": fresh.fingerprint,
                "created_at": fresh.created_at,
                "status": None,
                "response": None,
            },
            where=retake,
        ).returning(IdempotencyKey.key)
        stored = select(
            IdempotencyKey.fingerprint, IdempotencyKey.status, IdempotencyKey.response
        ).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        with self._connect() as connection:
            if connection.execute(claim).first() is not None:
                return None
            row = connection.execute(stored).mappings().first()
        if row is None:
            return None
        response = row["response"] and _stored_answer(json.loads(row["response"]))
        return {**row, "response": response}

    def release_key(self, user_id: str, key: str) -> None:
        """Forget an unfinished claim (its request failed), so a retry can run again."""
        statement = delete(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id,
            IdempotencyKey.key == key,
            IdempotencyKey.status.is_(None),
        )
        with self._connect() as connection:
            connection.execute(statement)

    def purge_keys(self, batch: int = PURGE_BATCH) -> int:
        """Delete up to `batch` keys older than IDEMPOTENCY_TTL; returns how many (fewer than
        `batch`: none is left). One short statement: call it again for the next batch. On
        PostgreSQL rows another worker's purge holds are skipped (SKIP LOCKED), not waited for."""
        expired = (
            select(IdempotencyKey.user_id, IdempotencyKey.key)
            .where(IdempotencyKey.created_at < _now() - IDEMPOTENCY_TTL)
            .limit(batch)
            .with_for_update(skip_locked=True)  # ignored by SQLite, whose writers take turns
        )
        statement = delete(IdempotencyKey).where(
            tuple_(IdempotencyKey.user_id, IdempotencyKey.key).in_(expired)
        )
        with self._connect() as connection:
            return connection.execute(statement).rowcount

    # tasks

    def list_tasks(
        self, user_id: str, query: ListQuery, after: tuple[object, int] | None = None
    ) -> "Page":
        """Up to `query.limit` of the user's tasks as a JSON array, filtered by `query.status`
        and ordered by `query.sort` then id (both in the same direction, no-value rows last);
        with `after` (sort value, id) of the previous page's last task, only the tasks after it
        (keyset pagination: no task is skipped or repeated when others are added or deleted).
        The page's `last` is the (sort value, id) of its last task when more tasks follow."""
        shape, params = _list_shape(user_id, query, after)
        with self._connect() as connection:
            if self._json_by_database:
                fetched = self._execute(connection, _list_json_statement(*shape), params)
                body, versions, found, last_value, last_id = fetched.rows[0]
                more = found > query.limit
                return Page(body.encode(), versions, (last_value, last_id) if more else None)
            fetched = self._execute(connection, _list_statement(*shape), params)
            rows = [row._mapping for row in fetched.rows]
        page = rows[: query.limit]
        versions = ",".join(f"{row['id']}-{row['version']}" for row in page)
        cursor_column = SORT_KEYS[query.sort][2]
        last = (page[-1][cursor_column.name], page[-1]["id"]) if len(rows) > len(page) else None
        body = TASK_LIST_JSON.dump_json([dict(row) for row in page])
        return Page(body, hashlib.md5(versions.encode(), usedforsecurity=False).hexdigest(), last)

    def list_sql(self, user_id: str, query: ListQuery) -> tuple[str, dict]:
        """(SQL text, parameters) that `list_tasks` sends for this user and query on
        PostgreSQL, once the user's row exists: for EXPLAIN, and for the benchmark's
        bare-driver baseline, which must run exactly the app's query."""
        shape, params = _list_shape(user_id, query, None)
        sql, constants = _precompiled(_list_json_statement(*shape), self.engine.dialect)
        return sql, {**constants, **params}

    def get_task(self, user_id: str, task_id: int) -> dict | None:
        """The user's task `task_id` as {id, version, body: its JSON}, or None if it does not
        exist or belongs to someone else."""
        params = _owned(user_id, task_id, None)
        with self._connect() as connection:
            statement = _select_statement(False, self._columns)
            return self._answer(self._execute(connection, statement, params).first())

    def create_task(self, user_id: str, data: TaskCreate, key: str | None = None) -> dict:
        """Insert a task for the user and return it as `get_task` does (INSERT ... RETURNING);
        with `key`, a claimed Idempotency-Key, the task is also stored as the key's response."""
        now = _now()
        values = {
            "user_id": user_id,
            "completed_at": now if data.completed else None,
            **data.model_dump(),
        }
        params = {"now": now, **{f"new_{name}": value for name, value in values.items()}}
        return self._write(user_id, _insert_statement(self._columns), params, key, 201)

    def update_task(
        self,
        user_id: str,
        task_id: int,
        changes: dict[str, object],
        versions: Versions = None,
        key: str | None = None,
    ) -> dict | None:
        """Apply `changes` ({column: value}) to the user's task and return it as `get_task`
        does; None if it is not theirs.

        `completed_at` follows `completed`: set when the task becomes completed, kept while it
        stays so, cleared when it is reopened. An empty `changes` changes nothing, not even
        `updated_at`. For `versions` and `key`, see `_apply`.
        """
        params = _owned(user_id, task_id, versions)
        if not changes:
            statement = _select_statement("versions" in params, self._columns)
            return self._apply(user_id, task_id, statement, params, key)
        params["now"] = _now()
        params.update({f"new_{name}": value for name, value in changes.items()})
        statement = _update_statement(
            frozenset(changes), changes.get("completed"), "versions" in params, self._columns
        )
        return self._apply(user_id, task_id, statement, params, key)

    def toggle_task(
        self, user_id: str, task_id: int, versions: Versions = None, key: str | None = None
    ) -> dict | None:
        """Flip `completed` atomically in the database, so concurrent toggles all count."""
        params = {**_owned(user_id, task_id, versions), "now": _now()}
        statement = _toggle_statement("versions" in params, self._columns)
        return self._apply(user_id, task_id, statement, params, key)

    def delete_task(self, user_id: str, task_id: int, versions: Versions = None) -> bool:
        """Delete the user's task; False if it does not exist or belongs to someone else.

        Raises VersionMismatch as `_apply` does."""
        params = _owned(user_id, task_id, versions)
        with self._connect() as connection:
            statement = _delete_statement("versions" in params)
            if self._execute(connection, statement, params).rowcount == 1:
                return True
        return self._unmatched(user_id, task_id, params) is not None

    def _apply(self, user_id: str, task_id: int, statement, params: dict, key: str | None):
        """Run `statement` (the task's row or nothing) via `_write`. With If-Match (`versions`
        in `params`: `_owned`) and no row, tell a missing task (None) from one at another
        version (VersionMismatch, with the task as it is now). With `key`, a claimed
        Idempotency-Key, the row is also stored as the key's response."""
        row = self._write(user_id, statement, params, key, 200)
        return row if row is not None else self._unmatched(user_id, task_id, params)

    def _unmatched(self, user_id: str, task_id: int, params: dict) -> dict | None:
        """Why a write of task `task_id` matched no row: None when the task is missing (all a
        miss can mean without If-Match, so no second statement then); under If-Match a read
        tells a missing task (None) from one at another version (VersionMismatch)."""
        if "versions" not in params:
            return None
        task = self.get_task(user_id, task_id)
        if task is not None and task["version"] not in params["versions"]:
            raise VersionMismatch(task)
        return task

    def _write(
        self, user_id: str, statement, params: dict, key: str | None, status: int
    ) -> dict | None:
        """Run a task INSERT or UPDATE ... RETURNING and return its answer (`_answer`); with
        `key`, also record the answer as that Idempotency-Key's response: on PostgreSQL in the
        same statement (a data-modifying CTE, so still one round trip), else right after it."""
        recording = {"key_owner": user_id, "idempotency_key": key, "key_status": status}
        with self._connect() as connection:
            if key is None or not self._json_by_database:
                answer = self._answer(self._execute(connection, statement, params).first())
                if answer and key is not None:
                    stored = json.dumps({**answer, "body": answer["body"].decode()})
                    connection.execute(_record_response(stored), recording)
            else:  # the answer {id, version, body} stored as JSON by the statement itself
                record = _recording(statement)
                fetched = self._execute(connection, record, {**params, **recording})
                answer = self._answer(fetched.first())
        return answer

    def _answer(self, row) -> dict | None:
        """A task answer {id, version, body: the task's JSON as bytes} from a row of a
        single-task statement (`self._columns`: rendered already, or every column, which
        TASK_JSON renders); None for no row."""
        if row is None:
            return None
        if self._json_by_database:
            task_id, version, body = row[:3]
            return {"id": task_id, "version": version, "body": body.encode()}
        task = dict(row._mapping)
        return {"id": task["id"], "version": task["version"], "body": TASK_JSON.dump_json(task)}


def _record_response(response):
    """UPDATE storing `response` and status `key_status` as the answer of the Idempotency-Key
    `idempotency_key` of user `key_owner`."""
    return (
        update(IdempotencyKey)
        .where(
            IdempotencyKey.user_id == bindparam("key_owner"),
            IdempotencyKey.key == bindparam("idempotency_key"),
        )
        .values(status=bindparam("key_status"), response=response)
    )


@functools.cache
def _recording(statement):
    """`statement` (a task write returning TASK_ANSWER) as a data-modifying CTE whose answer
    the UPDATE of `_record_response` stores and returns: one round trip for both."""
    written = statement.cte("written")
    answer = (written.c.id, written.c.version, written.c.body)
    as_json = func.json_build_object("id", answer[0], "version", answer[1], "body", answer[2])
    # Joined on the key's user (the written task is that user's), not a cross product with the
    # CTE, which SQLAlchemy warns of.
    return (
        _record_response(cast(as_json, Text))
        .where(IdempotencyKey.user_id == written.c.user_id)
        .returning(*answer)
    )


class Page(NamedTuple):
    """A page of a list: `body` its JSON array; `versions` a digest of its tasks' ids and
    versions in order (the same tasks at the same versions are the same bytes: an ETag that
    costs nothing per byte of the body, where hashing a 1,000-task body costs ~0.3 ms); `last`
    the (sort value, id) of its last task when more tasks follow (the next page's cursor),
    else None."""

    body: bytes
    versions: str
    last: tuple[object, int] | None


def _stored_answer(stored: dict) -> dict:
    """The task answer an Idempotency-Key stored: {id, version, body} (body as text), or the
    task row itself as earlier versions stored it (times as ISO text, any offset)."""
    if "body" in stored:
        return {**stored, "body": stored["body"].encode()}
    task = TaskPublic.model_validate(stored).model_dump()
    return {"id": stored["id"], "version": stored["version"], "body": TASK_JSON.dump_json(task)}


def _owned(user_id: str, task_id: int, versions: Versions) -> dict:
    """Parameters of `_where_owned`: the task, its user, and the versions If-Match accepts
    (none for no condition or "*")."""
    params = {"task_id": task_id, "owner_id": user_id}
    if versions not in (None, "*"):
        params["versions"] = list(versions)
    return params


def _where_owned(conditional: bool) -> list:
    conditions = [Task.id == bindparam("task_id"), Task.user_id == bindparam("owner_id")]
    if conditional:
        conditions.append(Task.version.in_(bindparam("versions", expanding=True)))
    return conditions


def _new(name: str):
    """The bound parameter of a value written to column `name` (SET/VALUES reserve the bare
    column names for SQLAlchemy's own parameters)."""
    return bindparam(f"new_{name}", type_=Task.__table__.c[name].type)


# Write statements, each shape built once with bound parameters, as the list's are
# (_list_statement): building one costs more than a round trip to a near database.

_NOW = bindparam("now", type_=UTCTimestamp())


@functools.cache
def _select_statement(conditional: bool, columns: tuple):
    return select(*columns).where(*_where_owned(conditional))


@functools.cache
def _delete_statement(conditional: bool):
    return delete(Task).where(*_where_owned(conditional))


@functools.cache
def _insert_statement(columns: tuple):
    """INSERT of a new task returning `columns`: parameters `now` and `new_<column>`
    (Store.create_task)."""
    written = ("user_id", "title", "description", "due_date", "completed", "completed_at")
    values = {name: _new(name) for name in written}
    return (
        insert(Task)
        .values(**values, created_at=_NOW, updated_at=_NOW, version=1)
        .returning(*columns)
    )


@functools.cache
def _update_statement(sent: frozenset, completing: bool | None, conditional: bool, columns: tuple):
    """UPDATE of the columns a client `sent` (parameters `new_<column>`), `updated_at` to
    `now` and `version` + 1, returning `columns`. `completed_at` follows `completing` (the
    `completed` sent): set when the task becomes completed, kept while it stays so, cleared
    when it is reopened."""
    values = {name: _new(name) for name in sent}
    if completing is not None:
        values["completed_at"] = (
            case((Task.completed, Task.completed_at), else_=_NOW) if completing else None
        )
    return _changing(values, conditional, columns)


@functools.cache
def _toggle_statement(conditional: bool, columns: tuple):
    """UPDATE flipping `completed` in the database, so concurrent toggles all count."""
    values = {
        "completed": not_(Task.completed),
        "completed_at": case((Task.completed, None), else_=_NOW),
    }
    return _changing(values, conditional, columns)


def _changing(values: dict, conditional: bool, columns: tuple):
    return (
        update(Task)
        .where(*_where_owned(conditional))
        .values({**values, "updated_at": _NOW, "version": Task.version + 1})
        .returning(*columns)
    )


SORT_KEYS = {  # sort name -> (expression ordered by, may be NULL, column a cursor holds)
    "created": (Task.created_at, False, Task.created_at),
    "updated": (Task.updated_at, False, Task.updated_at),
    "completed": (Task.completed_at, True, Task.completed_at),
    "title": (func.lower(Task.title), False, Task.title),
    "due_date": (Task.due_date, True, Task.due_date),
}


@functools.cache
def _list_statement(status: str, sort: str, descending: bool, position: str | None):
    """The list query of one shape, built once: parameters `user_id`, `limit`, and after a
    cursor `after_id` (position "tail": the previous page ended among NULL keys) or also
    `after_value` (position "value"). Building a statement costs more than running it."""
    statement = select(*TASK_COLUMNS).where(Task.user_id == bindparam("user_id"))
    if status != "all":
        statement = statement.where(Task.completed == (status == "completed"))
    key, nullable, _ = SORT_KEYS[sort]
    if position is not None:
        statement = statement.where(_after(key, nullable, descending, position == "tail"))
    return statement.order_by(*_order(sort, descending)).limit(bindparam("limit"))


def _order(sort: str, descending: bool) -> tuple:
    """ORDER BY of a list: the sort key, rows without one last, then id, in one direction."""
    key, nullable, _ = SORT_KEYS[sort]
    direction = (lambda c: c.desc()) if descending else (lambda c: c.asc())
    first = direction(key).nulls_last() if nullable else direction(key)
    return first, direction(Task.id)


def _list_shape(
    user_id: str, query: ListQuery, after: tuple[object, int] | None
) -> tuple[tuple, dict]:
    """(shape, parameters) of a list query (`_list_statement`, `_list_json_statement`)."""
    position = None if after is None else "tail" if after[0] is None else "value"
    params = {"user_id": user_id, "limit": query.limit + 1, "page_size": query.limit}
    if after is not None:
        params["after_value"], params["after_id"] = after
    return (query.status, query.sort, query.descending, position), params


def _after(key, nullable: bool, descending: bool, in_tail: bool):
    """Rows after (:after_value, :after_id) in the order (key, id), both descending or both
    ascending, rows whose key is NULL last; `in_tail`: the previous row's key was NULL."""
    later = (lambda a, b: a < b) if descending else (lambda a, b: a > b)
    last_id = bindparam("after_id", type_=Integer())
    if in_tail:  # already in the NULL tail, ordered by id alone
        return and_(key.is_(None), later(Task.id, last_id))
    if key is SORT_KEYS["title"][0]:  # compare lower() on both sides, as the ORDER BY does
        bound = func.lower(bindparam("after_value", type_=String()))
    else:
        bound = bindparam("after_value", type_=Task.created_at.type)
    after = later(tuple_(key, Task.id), tuple_(bound, last_id))
    return or_(after, key.is_(None)) if nullable else after


# The user upsert, built once per shape with bound parameters (`_user_params`), as the task
# statements are. Built per request, with the values in it, a user's first request in a process
# cost 1.3-1.9 ms of CPU in process against 0.2-0.3 ms for a known user's (an empty list): the
# statement, its cache key and its compilation were new every time. Now 0.25-0.45 ms.


def _user_params(
    user_id: str, email: str | None, name: str | None, issued_at: float | None, with_email: bool
) -> dict:
    """Parameters of `_user_upsert` (`issued_at`: the claims' `iat`, seconds since the epoch);
    without `with_email` the user is stored without an email."""
    return {
        "caller_id": user_id,
        "caller_email": email if with_email else None,
        "caller_name": name,
        "caller_since": _now(),
        "caller_issued_at": issued_at,
    }


@functools.cache
def _user_upsert(insert, with_email: bool):
    """INSERT ... ON CONFLICT of the caller's user row (`insert`: the dialect's insert), which
    refreshes `name`, and `email` if `with_email`, only when they changed and the claims are not
    older than the stored ones (a token without `iat` only refreshes a row stored without one:
    NULL compares as unknown)."""
    issued_at = User.__table__.c.claims_issued_at
    statement = insert(User).values(
        id=bindparam("caller_id"),
        email=bindparam("caller_email"),
        name=bindparam("caller_name"),
        created_at=bindparam("caller_since", type_=UTCTimestamp()),
        claims_issued_at=bindparam("caller_issued_at", type_=issued_at.type),
    )
    fresh = statement.excluded
    changed = User.name.is_distinct_from(fresh.name)
    refresh = {"name": fresh.name, "claims_issued_at": fresh.claims_issued_at}
    if with_email:
        changed |= User.email.is_distinct_from(fresh.email)
        refresh["email"] = fresh.email
    not_older = or_(issued_at.is_(None), fresh.claims_issued_at >= issued_at)
    return statement.on_conflict_do_update(
        index_elements=[User.id], set_=refresh, where=and_(changed, not_older)
    )


@functools.cache
def _with_user_upsert(statement, insert):
    """`statement` with the caller's user upsert as a data-modifying CTE (Store.acting_for)."""
    return statement.add_cte(_user_upsert(insert, True).cte("caller_user"))


# Task answers rendered by PostgreSQL. A list of 1,000 tasks read as rows costs ~10 us of Python
# per task (SQLAlchemy rows, mappings, the UTC type on four columns, then the JSON encoder);
# asked for as one JSON text it costs well under 1 us (docs/performance.md). The text is the
# very bytes the Python path (TASK_JSON, used on SQLite) writes: TaskPublic's fields in order,
# compact, times in UTC as `...Z` with microseconds only when not zero, strings escaped as
# PostgreSQL's to_json and pydantic-core (serde_json) both escape them (", \, control characters
# as \b \f \n \r \t or \u00XX, everything else as UTF-8); tests/test_rendering.py proves it.


def _sql_string(value: str):
    """A constant string written into the SQL text (not a bound parameter)."""
    return literal_column("'" + value.replace("'", "''") + "'", Text)


def _utc_text(time):
    """`time` (timestamptz) as ISO 8601 text in UTC with `Z`, whatever the session TimeZone;
    fractional seconds only when not zero, all six digits then (as pydantic writes datetimes)."""
    utc = func.timezone(_sql_string("UTC"), time)
    full = func.to_char(utc, _sql_string('YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    return func.replace(full, _sql_string(".000000Z"), _sql_string("Z"))


def _task_json(columns):
    """A task's JSON text (TaskPublic's fields), from `columns`: the tasks table's or those of a
    CTE with its columns."""
    parts = []
    for number, name in enumerate(TaskPublic.model_fields):
        value = columns[name]
        if isinstance(Task.__table__.c[name].type, UTCTimestamp):
            value = _utc_text(value)
        member = ("{" if number == 0 else ",") + json.dumps(name) + ":"
        parts += [
            _sql_string(member),
            func.coalesce(cast(func.to_json(value), Text), _sql_string("null")),
        ]
    return func.concat(*parts, _sql_string("}"))


# What a single-task statement returns: the id and version (the ETag), and on PostgreSQL the
# task's JSON text; on SQLite every column, rendered by Store._answer.
# user_id only joins an Idempotency-Key's record to the written task (`_recording`).
TASK_ANSWER = (Task.id, Task.version, _task_json(Task.__table__.c).label("body"), Task.user_id)


@functools.cache
def _list_json_statement(status: str, sort: str, descending: bool, position: str | None):
    """The list of one shape as one row (PostgreSQL): `body`, the JSON array of the first
    `page_size` tasks; `versions`, the MD5 of their "id-version" list (Page.versions);
    `found`, how many of up to `limit` (page_size + 1) there were; and the last shown task's
    cursor position `last_value` (sort value as text) and `last_id`, with the parameters of
    `_list_statement` and `page_size`."""
    _, _, cursor_column = SORT_KEYS[sort]
    value = cursor_column
    if isinstance(cursor_column.type, UTCTimestamp):
        value = _utc_text(cursor_column)
    rows = (
        _list_statement(status, sort, descending, position)
        .with_only_columns(
            Task.id,
            value.label("sort_value"),
            _task_json(Task.__table__.c).label("body"),
            func.concat(Task.id, _sql_string("-"), Task.version).label("version"),
            func.row_number().over(order_by=_order(sort, descending)).label("n"),
        )
        .subquery("page")
    )
    page_size = bindparam("page_size", type_=Integer())
    shown, last = rows.c.n <= page_size, rows.c.n == page_size
    tasks = func.string_agg(rows.c.body, aggregate_order_by(_sql_string(","), rows.c.n))
    versions = func.string_agg(rows.c.version, aggregate_order_by(_sql_string(","), rows.c.n))
    return select(
        func.concat(_sql_string("["), tasks.filter(shown), _sql_string("]")).label("body"),
        func.md5(func.coalesce(versions.filter(shown), _sql_string(""))).label("versions"),
        func.count().label("found"),
        func.max(rows.c.sort_value).filter(last).label("last_value"),
        func.max(rows.c.id).filter(last).label("last_id"),
    )


class Fetched(NamedTuple):
    """What a statement run by `_run` gave: its rows (tuples, or SQLAlchemy Rows) and how
    many rows it matched."""

    rows: list
    rowcount: int

    def first(self):
        return self.rows[0] if self.rows else None


def _run(connection: Connection, statement, params: dict) -> Fetched:
    """Execute `statement` with `params`. On PostgreSQL a statement that needs no type
    processing (`_precompiled`) is compiled once and sent on the pooled psycopg2 connection's
    own cursor: `Connection.execute` repeats on every call, even for a statement compiled
    already, its cache key, an execution context and result metadata (a 20-task list took
    0.22-0.25 ms of CPU in process through it, 0.19 ms this way, the bare driver 0.075 ms; the
    rest is the `Connection` and the pool). Errors are wrapped and a dead connection
    invalidated as SQLAlchemy does it (`exc.DBAPIError`), so callers see no difference; no
    `before_cursor_execute` event fires for these. Everything else, and SQLite (whose times
    are text that SQLAlchemy converts), goes through `Connection.execute`. `statement` must be
    one of the statements built once per shape here: its compiled form is kept for good."""
    precompiled = _precompiled(statement, connection.dialect)
    if precompiled is None:
        result = connection.execute(statement, params)
        return Fetched(result.all() if result.returns_rows else [], result.rowcount)
    sql, constants = precompiled
    params = {**constants, **params}
    dbapi_connection = connection.connection.dbapi_connection
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(sql, params)
            return Fetched(cursor.fetchall() if cursor.description else [], cursor.rowcount)
    except connection.dialect.loaded_dbapi.Error as error:
        # As SQLAlchemy's own handling does (with `_renew_sessions_of_a_moved_server`): a lost
        # connection or a session of no further use renews the whole pool.
        gone = (
            connection.dialect.is_disconnect(error, dbapi_connection, None)
            or getattr(error, "pgcode", None) in RENEW_SESSIONS
        )
        if gone:
            connection.invalidate(error)
            connection.engine.dispose()
        raise exc.DBAPIError.instance(
            sql, params, error, connection.dialect.loaded_dbapi.Error, connection_invalidated=gone
        ) from error


@functools.cache
def _precompiled(statement, dialect) -> tuple[str, dict] | None:
    """SQL text of `statement` for `dialect` (PostgreSQL only) and the values of its constant
    parameters (such as the 1 of `version + 1`), or None when running it needs SQLAlchemy's
    processing: an expanding IN, or a type that converts a parameter or a result."""
    if dialect.name != "postgresql":
        return None
    compiled = statement.compile(dialect=dialect)
    binds = compiled.binds.values()
    if any(bind.expanding or _converts(bind.type, dialect, "bind") for bind in binds):
        return None
    if any(_converts(column.type, dialect, "result") for column in statement.exported_columns):
        return None
    constants = {compiled.bind_names[bind]: bind.value for bind in binds if not bind.required}
    return compiled.string, constants


def _converts(type_, dialect, direction: str) -> bool:
    impl = type_.dialect_impl(dialect)
    if direction == "bind":
        return impl.bind_processor(dialect) is not None
    return impl.result_processor(dialect, None) is not None
