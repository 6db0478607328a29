"""The list's indexes where missing (CONCURRENTLY on PostgreSQL); unused indexes dropped.

One index per list sort, led by `user_id` (docs/performance.md). Indexes no query uses any
more are dropped: `ix_tasks_user_id` (every list index starts with `user_id`) and
`ix_tasks_user_completed_at` (sort=completed reads `completed_at DESC NULLS LAST`, which only
`ix_tasks_user_completed` serves; SQLite cannot index that order).

On PostgreSQL every index is built with CREATE INDEX CONCURRENTLY and dropped with DROP INDEX
CONCURRENTLY: the app keeps reading and writing `tasks` meanwhile (docs/operations.md).

Revision ID: 0004
Revises: 0003
"""

from migrations import ddl

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LIST_INDEXES = {
    "ix_tasks_user_created": "user_id, created_at, id",
    "ix_tasks_user_updated": "user_id, updated_at, id",
    "ix_tasks_user_due": "user_id, due_date, id",
    "ix_tasks_user_title": "user_id, lower(title), id",
}
KEPT = {"ix_tasks_completed": "completed"}  # the first release's; gone with a rebuilt table
POSTGRESQL_ONLY = {"ix_tasks_user_completed": "user_id, completed_at DESC NULLS LAST, id DESC"}
UNUSED = ["ix_tasks_user_id", "ix_tasks_user_completed_at"]


def upgrade() -> None:
    wanted = {**LIST_INDEXES, **KEPT}
    if ddl.dialect() == "postgresql":
        wanted.update(POSTGRESQL_ONLY)
    ddl.create_indexes("tasks", wanted)
    ddl.drop_indexes("tasks", UNUSED)


def downgrade() -> None:
    ddl.create_indexes("tasks", {"ix_tasks_user_id": "user_id"})
    ddl.drop_indexes("tasks", [*LIST_INDEXES, *POSTGRESQL_ONLY])
