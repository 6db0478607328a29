"""The database: engine, tables and every query (SPEC.md: Data).

Every task query takes the caller's user id and is scoped by it, so no function here can reach
another user's rows. Statements run in autocommit mode: each is its own transaction, so a request
costs one round trip, with no BEGIN or COMMIT around it. Nothing here knows about HTTP or tokens.
"""

import logging
import select as select_module
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from threading import Lock

from sqlalchemy import Column, DateTime, event, exc, func, not_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, SQLModel, create_engine, delete, insert, select, update

from schemas.tasks import ListQuery, TaskCreate

log = logging.getLogger("todo.store")

SQLITE_DEFAULT = "sqlite:///./todo.db"
POOL_SIZE = 10  # steady connections per worker
POOL_OVERFLOW = 10  # extra connections under bursts
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


def _timestamp(**kwargs) -> Column:
    return Column(DateTime(timezone=True), **kwargs)


class User(SQLModel, table=True):
    """A Better Auth user, created on the first authenticated call (id is the token's user id)."""

    __tablename__ = "users"

    id: str = Field(primary_key=True)
    email: str | None = Field(default=None, unique=True)
    name: str | None = None
    created_at: datetime = Field(sa_column=_timestamp(nullable=False))


class Task(SQLModel, table=True):
    """A task owned by one user."""

    __tablename__ = "tasks"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True)
    title: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    completed: bool = Field(default=False, index=True)
    due_date: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    created_at: datetime = Field(sa_column=_timestamp(nullable=False))
    updated_at: datetime = Field(sa_column=_timestamp(nullable=False))


TASK_COLUMNS = tuple(Task.__table__.c)


def normalize_url(url: str) -> str:
    """SQLAlchemy URL for `url`: `postgres://` and `postgresql://` select psycopg2.

    Query parameters such as `sslmode=require&channel_binding=require` pass through to libpq.
    """
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def make_engine(url: str) -> Engine:
    """An autocommit engine for `url` (SQLite file or PostgreSQL) with bounded waits."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            connect_args={"check_same_thread": False, "timeout": POOL_TIMEOUT},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    engine = create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_timeout=POOL_TIMEOUT,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": "todo-api",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )
    event.listen(engine, "connect", _postgres_on_connect)
    event.listen(engine, "checkout", _drop_dead_connection)
    return engine


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _postgres_on_connect(dbapi_connection, _record) -> None:
    # Once per new connection; SET rather than the `options` startup parameter, which
    # connection poolers such as PgBouncer reject.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")


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


class Store:
    """Every query of the API over one engine. Methods are blocking: call them off the event loop.

    Raises DatabaseUnavailable when the database cannot be reached, times out or the pool is
    exhausted for POOL_TIMEOUT seconds, and InvalidData when it refuses a value.
    """

    def __init__(self, url: str = SQLITE_DEFAULT) -> None:
        self.engine = make_engine(url)
        self._known: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self._known_lock = Lock()

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

    def create_tables(self) -> None:
        """Create missing tables and indexes (idempotent)."""
        with self._connect() as connection:
            SQLModel.metadata.create_all(connection)

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
        with self._known_lock:
            if self._known.get(user_id, ()) == (email, name):
                self._known.move_to_end(user_id)
                return
        try:
            self._upsert_user(user_id, email, name, with_email=True)
        except exc.IntegrityError:
            log.warning("email of user %s is held by another user; stored without it", user_id)
            self._upsert_user(user_id, email, name, with_email=False)
        with self._known_lock:
            self._known[user_id] = (email, name)
            self._known.move_to_end(user_id)
            if len(self._known) > KNOWN_USERS_MAX:
                self._known.popitem(last=False)

    def _upsert_user(self, user_id: str, email: str | None, name: str | None, with_email: bool):
        dialect_insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        statement = dialect_insert(User).values(
            id=user_id, email=email if with_email else None, name=name, created_at=_now()
        )
        fresh = statement.excluded
        changed = User.name.is_distinct_from(fresh.name)
        refresh = {"name": fresh.name}
        if with_email:
            changed |= User.email.is_distinct_from(fresh.email)
            refresh["email"] = fresh.email
        statement = statement.on_conflict_do_update(
            index_elements=[User.id], set_=refresh, where=changed
        )
        with self._connect() as connection:
            connection.execute(statement)

    # tasks

    def list_tasks(self, user_id: str, query: ListQuery) -> list[dict]:
        """The user's tasks filtered by `query.status`, ordered by `query.sort`, ties on id."""
        statement = select(*TASK_COLUMNS).where(Task.user_id == user_id)
        if query.status != "all":
            statement = statement.where(Task.completed == (query.status == "completed"))
        key = {"created": Task.created_at, "title": func.lower(Task.title), "due_date": Task.due_date}
        sort_key = key[query.sort]
        direction = (lambda column: column.desc()) if query.descending else (lambda c: c.asc())
        if query.sort == "due_date":
            statement = statement.order_by(direction(sort_key).nulls_last(), direction(Task.id))
        else:
            statement = statement.order_by(direction(sort_key), direction(Task.id))
        with self._connect() as connection:
            return [dict(row) for row in connection.execute(statement).mappings()]

    def get_task(self, user_id: str, task_id: int) -> dict | None:
        """The user's task `task_id`, or None if it does not exist or belongs to someone else."""
        statement = select(*TASK_COLUMNS).where(Task.id == task_id, Task.user_id == user_id)
        with self._connect() as connection:
            row = connection.execute(statement).mappings().first()
        return dict(row) if row else None

    def create_task(self, user_id: str, data: TaskCreate) -> dict:
        """Insert a task for the user and return it (INSERT ... RETURNING)."""
        now = _now()
        statement = (
            insert(Task)
            .values(user_id=user_id, created_at=now, updated_at=now, **data.model_dump())
            .returning(*TASK_COLUMNS)
        )
        with self._connect() as connection:
            return dict(connection.execute(statement).mappings().one())

    def update_task(self, user_id: str, task_id: int, changes: dict[str, object]) -> dict | None:
        """Apply `changes` ({column: value}) to the user's task; None if it is not theirs.

        An empty `changes` changes nothing, not even `updated_at`.
        """
        if not changes:
            return self.get_task(user_id, task_id)
        return self._update(user_id, task_id, {**changes, "updated_at": _now()})

    def toggle_task(self, user_id: str, task_id: int) -> dict | None:
        """Flip `completed` atomically in the database, so concurrent toggles all count."""
        return self._update(
            user_id, task_id, {"completed": not_(Task.completed), "updated_at": _now()}
        )

    def _update(self, user_id: str, task_id: int, values: dict) -> dict | None:
        statement = (
            update(Task)
            .where(Task.id == task_id, Task.user_id == user_id)
            .values(values)
            .returning(*TASK_COLUMNS)
        )
        with self._connect() as connection:
            row = connection.execute(statement).mappings().first()
        return dict(row) if row else None

    def delete_task(self, user_id: str, task_id: int) -> bool:
        """Delete the user's task; False if it does not exist or belongs to someone else."""
        statement = delete(Task).where(Task.id == task_id, Task.user_id == user_id)
        with self._connect() as connection:
            return connection.execute(statement).rowcount == 1
