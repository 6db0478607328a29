"""The task indexes docs/performance.md recommends for store.py (not applied there by the bench).

Each list sort orders by (sort key, id) within one user; an index on (user_id, key, id) in the
same direction, with the same NULL placement, lets PostgreSQL read a page of 50 straight from the
index (no sort of all the user's tasks) and continue after a cursor. They replace the
single-column indexes on user_id (a prefix of each) and completed (a boolean, never selective
within one user).
"""

import inspect

from sqlalchemy import Index, MetaData, Table, column, func
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex

from store import Task


def recommended() -> tuple[Index, ...]:
    """Entries for `Task.__table_args__` (before its `{"sqlite_autoincrement": True}`)."""
    return (
        Index("ix_tasks_user_created", "user_id", "created_at", "id"),
        Index("ix_tasks_user_updated", "user_id", "updated_at", "id"),
        # sort=completed is newest first with never-completed tasks last: DESC NULLS LAST, which
        # a backward scan of an ascending index cannot give, and SQLite cannot index
        Index("ix_tasks_user_completed", "user_id", column("completed_at").desc().nulls_last(),
              column("id").desc()).ddl_if(dialect="postgresql"),
        Index("ix_tasks_user_title", "user_id", func.lower(column("title")), "id"),
        Index("ix_tasks_user_due_date", "user_id", "due_date", "id"),
    )


def source() -> str:
    """`Task.__table_args__` for store.py with the recommended indexes, taken from the source of
    `recommended` (its entries are indented as class attributes already)."""
    entries = inspect.getsource(recommended).split("return (\n", 1)[1].rsplit("\n    )", 1)[0]
    return (
        "from sqlalchemy import Index, column, func\n\n\n"
        "class Task(SQLModel, table=True):\n"
        f"    __tablename__ = \"tasks\"\n"
        f"    __table_args__ = (\n{entries}\n"
        "        {\"sqlite_autoincrement\": True},\n"
        "    )\n"
        "    # and drop index=True from user_id and completed\n"
    )


def attached() -> tuple[Index, ...]:
    """The recommended indexes, attached to a copy of the tasks table (for DDL and creation)."""
    indexes = recommended()
    table = Task.__table__.to_metadata(MetaData())
    Table(table.name, table.metadata, *indexes, extend_existing=True)
    return indexes


def ddl(dialect) -> list[str]:
    """CREATE INDEX statements of the recommended indexes for `dialect`."""
    return [str(CreateIndex(index).compile(dialect=dialect)) for index in attached()]


def create(connection: Connection) -> None:
    """Create the recommended indexes (the benchmark's own database only)."""
    for index in attached():
        index.create(connection, checkfirst=True)
