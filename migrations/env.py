"""Alembic's migration environment: which database, and how a migration run is kept safe.

- The database is DATABASE_URL, as for the app (default `sqlite:///./todo.db`, relative to the
  working directory); a Neon `-pooler` host is replaced by its direct host, because a session
  lock means nothing through a transaction-mode pooler (Neon: "Connection pooling").
- One run at a time: on PostgreSQL a session advisory lock is held for the whole run (a second
  run polls for it); on SQLite
  the whole run is one `BEGIN IMMEDIATE` transaction (the file's write lock). A second run
  waits, then finds the schema at head and does nothing.
- On PostgreSQL there is no `statement_timeout` (an index build on a big table takes as long as
  it takes) but a `lock_timeout`: a DDL statement waiting for a lock behind a long transaction
  gives up after LOCK_TIMEOUT, instead of making every query of the app queue behind it; the
  run is then retried, LOCK_ATTEMPTS times in all (every revision is safe to retry).
- A database created before the migrations existed (it has `tasks` but no `alembic_version`)
  is stamped at the first revision, whose tables every earlier version created; the revisions
  after it look at what is there and bring any of those schemas to head.
"""

import logging
import os
import time
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

import migrations
import tables
from engine import SQLITE_DEFAULT

ADVISORY_LOCK = 7_303_016_911  # pg_advisory_lock key of a migration run (any bigint, fixed)
LOCK_TIMEOUT = "2s"
LOCK_ATTEMPTS = 5
LOCK_POLL_SECONDS = 0.5  # how often a waiting run tries the advisory lock
SQLITE_WAIT_SECONDS = 600  # how long a run waits for another run's write lock on SQLite
FIRST_REVISION = "0001"

config = context.config
if config.config_file_name and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
log = logging.getLogger("alembic.env")


def database_url() -> str:
    url = config.attributes.get("database_url") or os.getenv("DATABASE_URL") or SQLITE_DEFAULT
    return migrations.direct_url(url)


def configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=tables.metadata,
        include_object=migrations.include_object(connection.dialect.name),
        transaction_per_migration=True,
    )


def stamp_if_legacy(connection: Connection) -> None:
    migration = context.get_context()
    if not migration.get_current_heads() and "tasks" in inspect(connection).get_table_names():
        migration.stamp(context.script, FIRST_REVISION)
        log.info("tables created before migrations existed: stamped %s", FIRST_REVISION)


def run_sqlite(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": SQLITE_WAIT_SECONDS})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # no implicit BEGIN: ours, below
        dbapi_connection.execute("PRAGMA journal_mode=WAL")  # the app's mode, kept by the file

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, held to the end

    with engine.connect() as connection, connection.begin():
        configure(connection)  # inside our transaction: Alembic opens none of its own
        stamp_if_legacy(connection)
        context.run_migrations()


def wait_for_advisory_lock(connection: Connection) -> None:
    """Take the run's advisory lock, polling outside any transaction: a run blocked inside
    pg_advisory_lock() would hold a snapshot that the other run's CREATE INDEX CONCURRENTLY
    waits for, a deadlock (PostgreSQL documentation: CREATE INDEX, Building Indexes
    Concurrently)."""
    waited = False
    while True:
        taken = connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({ADVISORY_LOCK})").scalar()
        connection.commit()
        if taken:
            return
        if not waited:
            log.info("another migration run holds the lock: waiting for it to finish")
            waited = True
        time.sleep(LOCK_POLL_SECONDS)


def run_postgresql(url: str) -> None:
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={"connect_timeout": 10, "application_name": "todo-api migrations"},
    )
    with engine.connect() as connection:
        connection.exec_driver_sql("SET statement_timeout = 0")
        connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        connection.commit()
        wait_for_advisory_lock(connection)
        for attempt in range(1, LOCK_ATTEMPTS + 1):  # the lock goes with the connection
            try:
                configure(connection)
                with connection.begin():
                    stamp_if_legacy(connection)
                context.run_migrations()
                return
            except OperationalError as error:
                if getattr(error.orig, "pgcode", None) != "55P03" or attempt == LOCK_ATTEMPTS:
                    raise  # 55P03 lock_not_available: the lock_timeout
                connection.rollback()
                log.warning(
                    "a lock was not granted within %s (attempt %d of %d): %s",
                    LOCK_TIMEOUT,
                    attempt,
                    LOCK_ATTEMPTS,
                    str(error.orig).splitlines()[0],
                )
                time.sleep(attempt)


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: the revisions look at the database")
database = database_url()
if database.startswith("sqlite"):
    run_sqlite(database)
else:
    run_postgresql(database)
