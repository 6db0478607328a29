"""tasks.id becomes 64-bit (bigint) on PostgreSQL; ids stay at most 2^53 - 1. Rewrites tasks.

On SQLite it already is: an INTEGER PRIMARY KEY is the table's 64-bit rowid. The id sequence stops at 2^53 - 1, the largest
integer JavaScript represents exactly, so no id the API hands out is rounded by a browser.

REWRITES THE TABLE on PostgreSQL: ALTER COLUMN ... TYPE bigint copies every row and rebuilds
every index of `tasks` under an ACCESS EXCLUSIVE lock, so reads and writes of tasks wait until
it is done. Measured at 1,000,000 tasks on 2 cores, PostgreSQL 15, with the app's six indexes:
about 4 s (test_migrations.py::test_million_task_upgrade_while_writing prints it). It grows with
the table's size: plan a quiet moment for a big table (docs/operations.md, README "Upgrading").

Downgrade: possible while every id and the sequence are below 2^31.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
from sqlalchemy import text

from migrations import ddl

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MAX_SAFE_ID = 2**53 - 1  # Number.MAX_SAFE_INTEGER
MAX_INT32 = 2**31 - 1


def _sequence() -> str:
    return op.get_bind().execute(text("SELECT pg_get_serial_sequence('tasks', 'id')")).scalar()


def upgrade() -> None:
    if ddl.dialect() != "postgresql":
        return
    op.execute("ALTER TABLE tasks ALTER COLUMN id TYPE bigint")
    op.execute(f"ALTER SEQUENCE {_sequence()} AS bigint MAXVALUE {MAX_SAFE_ID}")


def downgrade() -> None:
    if ddl.dialect() != "postgresql":
        return
    sequence = _sequence()
    op.execute(f"ALTER SEQUENCE {sequence} AS integer MAXVALUE {MAX_INT32}")
    op.execute("ALTER TABLE tasks ALTER COLUMN id TYPE integer")
