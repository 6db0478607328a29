"""The tables (docs/api.md: Data) and the timestamp type every time column uses.

Alembic compares `metadata` with the database (migrations/env.py); a change here needs a
migration (docs/operations.md: Writing a new migration). Statements use the Core tables (`TASKS`
and its neighbours), whose columns type as SQL expressions; the model classes' attributes type
as the values a row holds.
"""

from datetime import datetime, timezone

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, column, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from schemas.tasks import as_utc


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


metadata = SQLModel.metadata
USERS = metadata.tables["users"]
TASKS = metadata.tables["tasks"]
IDEMPOTENCY_KEYS = metadata.tables["idempotency_keys"]
APP_SECRETS = metadata.tables["app_secrets"]
