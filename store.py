"""The database: engine, tables and every query (SPEC.md: Data).

Every task query takes the caller's user id and is scoped by it, so no function here can reach
another user's rows. Statements run in autocommit mode: each is its own transaction, so a request
costs one round trip, with no BEGIN or COMMIT around it. Nothing here knows about HTTP or tokens.
"""

import functools
import json
import logging
import secrets
import select as select_module
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from threading import Lock, local

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
    not_,
    or_,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel, create_engine, delete, insert, select, update

from schemas.tasks import ListQuery, TaskCreate, as_utc

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


class UTCTimestamp(TypeDecorator):
    """A timestamp with time zone that reads back as an aware UTC datetime on both databases:
    SQLite keeps no zone (its values are UTC, naive) and PostgreSQL answers in the session's
    TimeZone, which a server or pooler may set to anything (SPEC.md: Data, times are UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

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
            "ix_tasks_user_completed", "user_id", column("completed_at").desc().nulls_last(),
            column("id").desc(),
        ).ddl_if(dialect="postgresql"),
        Index("ix_tasks_user_due", "user_id", "due_date", "id"),
        Index("ix_tasks_user_title", "user_id", text("lower(title)"), "id"),
        {"sqlite_autoincrement": True},
    )

    # 64-bit (SQLite's INTEGER PRIMARY KEY already is: the rowid, which AUTOINCREMENT needs
    # spelled INTEGER); the API hands out at most 2^53 - 1 (migrations/versions/0006).
    id: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True))
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


def make_engine(url: str, pool_timeout: float = POOL_TIMEOUT,
                connect_timeout: int = CONNECT_TIMEOUT,
                statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> Engine:
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
        return engine
    engine = create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_timeout=pool_timeout,
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
    return engine


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _postgres_on_connect(statement_timeout_ms: int, dbapi_connection, _record) -> None:
    # Once per new connection; SET rather than the `options` startup parameter, which
    # connection poolers such as PgBouncer reject.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")


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

    def __init__(self, url: str = SQLITE_DEFAULT, *, pool_timeout: float = POOL_TIMEOUT,
                 connect_timeout: int = CONNECT_TIMEOUT,
                 statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        self.engine = make_engine(url, pool_timeout, connect_timeout, statement_timeout_ms)
        self._known: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self._known_lock = Lock()
        self._pending = local()  # .user: claims to upsert with this thread's next statement
        # INSERT with ON CONFLICT, in the engine's dialect
        self._insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert

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
        statement = self._insert(AppSecret).values(
            name=name, value=secrets.token_urlsafe(32), created_at=_now()
        ).on_conflict_do_nothing(index_elements=[AppSecret.name])
        with self._connect() as connection:
            connection.execute(statement)
            return connection.execute(
                select(AppSecret.value).where(AppSecret.name == name)).scalar_one()

    def ping(self) -> None:
        """One trivial query; raises DatabaseUnavailable if the database does not answer."""
        with self._connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # users

    def ensure_user(self, user_id: str, email: str | None, name: str | None) -> None:
        """Create the user or refresh its email and name, race-free (INSERT ... ON CONFLICT).

        Skipped when this process already stored the same claims. If another user already holds
        `email` (unique), the user is stored without it rather than failing the request.
        """
        if not self._knows(user_id, email, name):
            with self._connect() as connection:
                self._store_user(connection, user_id, email, name)

    @contextmanager
    def acting_for(self, user_id: str, email: str | None, name: str | None) -> Iterator[None]:
        """A block of queries for this user, whose row must exist (SPEC.md: users are created on
        the first authenticated call). A user this process has not yet stored with these claims
        is upserted as `ensure_user` does; on PostgreSQL the upsert travels inside the block's
        first statement (a data-modifying CTE) instead of costing a round trip of its own."""
        if self.engine.dialect.name != "postgresql":
            self.ensure_user(user_id, email, name)
            yield
            return
        if not self._knows(user_id, email, name):
            self._pending.user = (user_id, email, name)
        try:
            yield
        finally:
            self._pending.user = None

    def _execute(self, connection: Connection, statement, params: dict | None = None):
        """`connection.execute(statement, params)`, carrying the upsert `acting_for` left pending.

        If the combined statement breaks a constraint (another user holds the email), none of it
        happened: the user is stored as `ensure_user` stores it, then the statement runs alone.
        """
        claims = getattr(self._pending, "user", None)
        if claims is None:
            return connection.execute(statement, params)
        self._pending.user = None
        upsert = self._user_upsert(*claims, with_email=True).cte("caller_user")
        try:
            result = connection.execute(statement.add_cte(upsert), params)
        except exc.IntegrityError:
            self._store_user(connection, *claims)
            return connection.execute(statement, params)
        self._remember(*claims)
        return result

    def _store_user(self, connection: Connection, user_id: str, email: str | None,
                    name: str | None) -> None:
        try:
            connection.execute(self._user_upsert(user_id, email, name, with_email=True))
        except exc.IntegrityError:
            log.warning("email of user %s is held by another user; stored without it", user_id)
            connection.execute(self._user_upsert(user_id, email, name, with_email=False))
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

    def _user_upsert(self, user_id: str, email: str | None, name: str | None, with_email: bool):
        statement = self._insert(User).values(
            id=user_id, email=email if with_email else None, name=name, created_at=_now()
        )
        fresh = statement.excluded
        changed = User.name.is_distinct_from(fresh.name)
        refresh = {"name": fresh.name}
        if with_email:
            changed |= User.email.is_distinct_from(fresh.email)
            refresh["email"] = fresh.email
        return statement.on_conflict_do_update(
            index_elements=[User.id], set_=refresh, where=changed
        )

    # idempotency keys

    def claim_key(self, user_id: str, key: str, fingerprint: str) -> dict | None:
        """Claim `key` for a first request: None when claimed (new, expired, or abandoned by a
        request that never finished), else the stored row {fingerprint, status, response}
        (`status` None: the first request is still running; `response` the task row as JSON)."""
        now = _now()
        claim = self._insert(IdempotencyKey).values(
            user_id=user_id, key=key, fingerprint=fingerprint, created_at=now
        )
        retake = or_(
            IdempotencyKey.created_at < now - IDEMPOTENCY_TTL,
            and_(IdempotencyKey.status.is_(None),
                 IdempotencyKey.created_at < now - IDEMPOTENCY_ABANDONED),
        )
        fresh = claim.excluded
        claim = claim.on_conflict_do_update(
            index_elements=[IdempotencyKey.user_id, IdempotencyKey.key],
            set_={"fingerprint": fresh.fingerprint, "created_at": fresh.created_at,
                  "status": None, "response": None},
            where=retake,
        ).returning(IdempotencyKey.key)
        stored = select(
            IdempotencyKey.fingerprint, IdempotencyKey.status, IdempotencyKey.response
        ).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        with self._connect() as connection:
            if connection.execute(claim).first() is not None:
                return None
            row = connection.execute(stored).mappings().first()
        return dict(row) if row else None

    def release_key(self, user_id: str, key: str) -> None:
        """Forget an unfinished claim (its request failed), so a retry can run again."""
        statement = delete(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key,
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
    ) -> list[dict]:
        """Up to `query.limit + 1` of the user's tasks, filtered by `query.status` and ordered by
        `query.sort` then id (both in the same direction, no-value rows last); with `after`
        (sort value, id) of the previous page's last task, only the tasks after it (keyset
        pagination: no task is skipped or repeated when others are added or deleted)."""
        position = None if after is None else "tail" if after[0] is None else "value"
        statement = _list_statement(query.status, query.sort, query.descending, position)
        params = {"user_id": user_id, "limit": query.limit + 1}
        if after is not None:
            params["after_value"], params["after_id"] = after
        with self._connect() as connection:
            return [dict(row) for row in self._execute(connection, statement, params).mappings()]

    def get_task(self, user_id: str, task_id: int) -> dict | None:
        """The user's task `task_id`, or None if it does not exist or belongs to someone else."""
        params = _owned(user_id, task_id, None)
        with self._connect() as connection:
            row = self._execute(connection, _select_statement(False), params).mappings().first()
        return dict(row) if row else None

    def create_task(self, user_id: str, data: TaskCreate, key: str | None = None) -> dict:
        """Insert a task for the user and return it (INSERT ... RETURNING); with `key`, a
        claimed Idempotency-Key, the task is also stored as the key's response."""
        now = _now()
        values = {"user_id": user_id, "completed_at": now if data.completed else None,
                  **data.model_dump()}
        params = {"now": now, **{f"new_{name}": value for name, value in values.items()}}
        return self._write(user_id, _insert_statement(), params, key, 201)

    def update_task(
        self,
        user_id: str,
        task_id: int,
        changes: dict[str, object],
        versions: Versions = None,
        key: str | None = None,
    ) -> dict | None:
        """Apply `changes` ({column: value}) to the user's task; None if it is not theirs.

        `completed_at` follows `completed`: set when the task becomes completed, kept while it
        stays so, cleared when it is reopened. An empty `changes` changes nothing, not even
        `updated_at`. For `versions` and `key`, see `_apply`.
        """
        params = _owned(user_id, task_id, versions)
        if not changes:
            statement = _select_statement("versions" in params)
            return self._apply(user_id, task_id, statement, params, key)
        params["now"] = _now()
        params.update({f"new_{name}": value for name, value in changes.items()})
        statement = _update_statement(
            frozenset(changes), changes.get("completed"), "versions" in params
        )
        return self._apply(user_id, task_id, statement, params, key)

    def toggle_task(
        self, user_id: str, task_id: int, versions: Versions = None, key: str | None = None
    ) -> dict | None:
        """Flip `completed` atomically in the database, so concurrent toggles all count."""
        params = {**_owned(user_id, task_id, versions), "now": _now()}
        statement = _toggle_statement("versions" in params)
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

    def _write(self, user_id: str, statement, params: dict, key: str | None, status: int
               ) -> dict | None:
        """Run a task INSERT or UPDATE ... RETURNING; with `key`, also record the row it
        returns as that Idempotency-Key's response: on PostgreSQL in the same statement
        (a data-modifying CTE, so still one round trip), on SQLite right after it."""
        with self._connect() as connection:
            if key is None or self.engine.dialect.name != "postgresql":
                row = self._execute(connection, statement, params).mappings().first()
                if row and key is not None:
                    connection.execute(_record_response(user_id, key, status, _row_json(row)))
            else:
                written = statement.cte("written")
                as_json = cast(func.row_to_json(written.table_valued()), Text)
                # Joined on the user (the row is the key's user's), not a cross product with
                # the CTE, which SQLAlchemy warns of.
                record = (
                    _record_response(user_id, key, status, as_json)
                    .where(IdempotencyKey.user_id == written.c.user_id)
                    .returning(*written.c)
                )
                row = self._execute(connection, record, params).mappings().first()
        return dict(row) if row else None


def _record_response(user_id: str, key: str, status: int, response):
    return (
        update(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .values(status=status, response=response)
    )


def _row_json(row) -> str:
    return json.dumps(dict(row), default=lambda value: value.isoformat())


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
def _select_statement(conditional: bool):
    return select(*TASK_COLUMNS).where(*_where_owned(conditional))


@functools.cache
def _delete_statement(conditional: bool):
    return delete(Task).where(*_where_owned(conditional))


@functools.cache
def _insert_statement():
    """INSERT of a new task: parameters `now` and `new_<column>` (Store.create_task)."""
    written = ("user_id", "title", "description", "due_date", "completed", "completed_at")
    values = {name: _new(name) for name in written}
    return (
        insert(Task)
        .values(**values, created_at=_NOW, updated_at=_NOW, version=1)
        .returning(*TASK_COLUMNS)
    )


@functools.cache
def _update_statement(columns: frozenset, completing: bool | None, conditional: bool):
    """UPDATE of the `columns` a client sent (parameters `new_<column>`), `updated_at` to
    `now` and `version` + 1. `completed_at` follows `completing` (the `completed` sent): set
    when the task becomes completed, kept while it stays so, cleared when it is reopened."""
    values = {name: _new(name) for name in columns}
    if completing is not None:
        values["completed_at"] = (
            case((Task.completed, Task.completed_at), else_=_NOW) if completing else None
        )
    return _changing(values, conditional)


@functools.cache
def _toggle_statement(conditional: bool):
    """UPDATE flipping `completed` in the database, so concurrent toggles all count."""
    values = {"completed": not_(Task.completed),
              "completed_at": case((Task.completed, None), else_=_NOW)}
    return _changing(values, conditional)


def _changing(values: dict, conditional: bool):
    return (
        update(Task)
        .where(*_where_owned(conditional))
        .values({**values, "updated_at": _NOW, "version": Task.version + 1})
        .returning(*TASK_COLUMNS)
    )


SORT_KEYS = {  # sort name -> (column expression, may be NULL)
    "created": (Task.created_at, False),
    "updated": (Task.updated_at, False),
    "completed": (Task.completed_at, True),
    "title": (func.lower(Task.title), False),
    "due_date": (Task.due_date, True),
}


@functools.cache
def _list_statement(status: str, sort: str, descending: bool, position: str | None):
    """The list query of one shape, built once: parameters `user_id`, `limit`, and after a
    cursor `after_id` (position "tail": the previous page ended among NULL keys) or also
    `after_value` (position "value"). Building a statement costs more than running it."""
    statement = select(*TASK_COLUMNS).where(Task.user_id == bindparam("user_id"))
    if status != "all":
        statement = statement.where(Task.completed == (status == "completed"))
    key, nullable = SORT_KEYS[sort]
    if position is not None:
        statement = statement.where(_after(key, nullable, descending, position == "tail"))
    direction = (lambda c: c.desc()) if descending else (lambda c: c.asc())
    first = direction(key).nulls_last() if nullable else direction(key)
    return statement.order_by(first, direction(Task.id)).limit(bindparam("limit"))


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
