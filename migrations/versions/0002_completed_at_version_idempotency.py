"""Where missing: tasks.completed_at and tasks.version, idempotency_keys; completed_at backfilled.

The pagination, ETag and Idempotency-Key releases added these columns and the table; then
`completed_at` is backfilled for completed tasks that lack it. `idempotency_keys.etag`, which
the first Idempotency-Key releases stored and no later one reads (a replay rebuilds the task's
answer from the stored row), is dropped.

Databases of the first release that later versions upgraded got the columns, but nothing filled
`completed_at` for tasks completed before: their `updated_at` is the best value known. A
backfilled task's `version` (its ETag) grows by one, as its representation changed.

Locks on PostgreSQL: ADD COLUMN with a constant default changes the catalog only (no rewrite,
a brief ACCESS EXCLUSIVE lock); the backfill runs in committed batches of BACKFILL_BATCH ids, so
a row is locked only for its batch.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import text

from migrations import ddl

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BACKFILL_BATCH = 10_000  # ids per committed UPDATE on PostgreSQL


def upgrade() -> None:
    present = ddl.columns("tasks")
    if "completed_at" not in present:
        op.add_column("tasks", sa.Column("completed_at", sa.DateTime(timezone=True)))
    if "version" not in present:
        op.add_column(
            "tasks", sa.Column("version", sa.Integer(), nullable=False, server_default="1")
        )
    if "idempotency_keys" not in ddl.tables():
        op.create_table(
            "idempotency_keys",
            sa.Column("user_id", sa.String(), primary_key=True),
            sa.Column("key", sa.String(255), primary_key=True),
            sa.Column("fingerprint", sa.String(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("status", sa.Integer(), nullable=True),
            sa.Column("response", sa.String(), nullable=True),
        )
        op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    elif "etag" in ddl.columns("idempotency_keys"):
        with op.batch_alter_table("idempotency_keys") as keys:  # SQLite: a table rebuild
            keys.drop_column("etag")
    backfill_completed_at()


def backfill_completed_at() -> None:
    backfill = text(
        "UPDATE tasks SET completed_at = updated_at, version = version + 1"
        " WHERE id > :low AND id <= :high AND completed AND completed_at IS NULL"
    )
    if ddl.dialect() == "sqlite":  # one transaction holds the whole run (migrations/env.py)
        op.get_bind().execute(backfill, {"low": 0, "high": 2**63 - 1})
        return
    with op.get_context().autocommit_block():  # each batch commits on its own
        top = op.get_bind().execute(text("SELECT max(id) FROM tasks")).scalar() or 0
        for low in range(0, top, BACKFILL_BATCH):
            op.get_bind().execute(backfill, {"low": low, "high": low + BACKFILL_BATCH})


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("tasks") as tasks:  # SQLite before 3.35 cannot DROP COLUMN
        tasks.drop_column("version")
        tasks.drop_column("completed_at")
