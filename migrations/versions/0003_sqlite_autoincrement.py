"""SQLite: tasks rebuilt with AUTOINCREMENT, ids kept (nothing to do on PostgreSQL).

The first release created `tasks` without it, so SQLite gave a deleted task's id, and with it
its ETag, to the next task. The table is copied into one declared `INTEGER PRIMARY KEY
AUTOINCREMENT` (the SQLite documentation's "12-step" table rebuild, inside the run's one
transaction); SQLite then records the largest id, which no later task gets again. Its indexes go
with the old table: the next revision creates the ones in use.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
from sqlalchemy import text

from migrations import ddl

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    "id, user_id, title, description, completed, due_date, completed_at, created_at,"
    " updated_at, version"
)


def upgrade() -> None:
    if ddl.dialect() != "sqlite":
        return
    bind = op.get_bind()
    created = bind.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'")
    ).scalar_one()
    if "AUTOINCREMENT" in created.upper():
        return
    op.execute("""CREATE TABLE tasks_rebuilt (
        id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        user_id VARCHAR NOT NULL,
        title VARCHAR(200) NOT NULL,
        description VARCHAR(1000),
        completed BOOLEAN NOT NULL,
        due_date DATETIME,
        completed_at DATETIME,
        created_at DATETIME NOT NULL,
        updated_at DATETIME NOT NULL,
        version INTEGER DEFAULT '1' NOT NULL,
        FOREIGN KEY(user_id) REFERENCES users (id)
    )""")
    op.execute(f"INSERT INTO tasks_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM tasks")
    op.execute("DROP TABLE tasks")
    op.execute("ALTER TABLE tasks_rebuilt RENAME TO tasks")


def downgrade() -> None:
    pass  # AUTOINCREMENT is what every later version expects too
