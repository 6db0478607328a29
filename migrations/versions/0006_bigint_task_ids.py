"""tasks.id becomes 64-bit (bigint) on PostgreSQL, online; ids stay at most 2^53 - 1.

On SQLite it already is: an INTEGER PRIMARY KEY is the table's 64-bit rowid. The id sequence
stops at 2^53 - 1, the largest integer JavaScript represents exactly, so no id the API hands out
is rounded by a browser.

On PostgreSQL `ALTER COLUMN id TYPE bigint` would rewrite the table and every index under an
ACCESS EXCLUSIVE lock: measured at 1,000,000 tasks on this project's 2-core test machine, 8 to
16 s during which every read and write of tasks waits, and the app's writes fail on their 10 s
statement timeout. So the column is replaced instead, without blocking the app:

1. a `id_bigint` column, kept equal to `id` by a trigger for rows written from now on;
2. existing rows copied in committed batches of COPY_BATCH ids;
3. NOT NULL proven by a CHECK constraint validated without blocking writes, then a unique
   index and the list indexes on the new column built CONCURRENTLY;
4. one short transaction (the only ACCESS EXCLUSIVE lock; it touches the catalog only): the
   sequence moves to the new column, the old column goes with its indexes, the new one is
   renamed `id` and becomes the primary key; the trigger goes.

This does not block reads or writes except for the final swap (milliseconds), but it copies
every row once, and that WAL competes with the app's commits. Measured at 1,000,000 tasks,
PostgreSQL 15 on 2 cores shared with other work, while a client wrote 40 times a second
(`UPGRADE_TASKS=1000000 pytest -s tests/test_migrations.py -k big_table` prints the figures):
at load average 7, 74 s in all and the slowest write 674 ms; at load average 13-14, 184-237 s
and the slowest write 2.4-3.6 s, with no lock held longer than one batch (the swap: under
0.1 s).
The table takes up to twice its space until autovacuum reuses the old row versions. `id`
becomes the table's last column (nothing in the app depends on column order).

Downgrade: `ALTER COLUMN id TYPE integer`, which does rewrite the table under a lock; possible
while every id and the sequence are below 2^31.

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
COPY_BATCH = 2_000  # ids copied per committed UPDATE: a row stays locked for one batch only
NEW = "id_bigint"
# Indexes ending in the id, each rebuilt on the new column (0004's, led by user_id).
WITH_ID = {
    "ix_tasks_user_created": "user_id, created_at, {id}",
    "ix_tasks_user_updated": "user_id, updated_at, {id}",
    "ix_tasks_user_due": "user_id, due_date, {id}",
    "ix_tasks_user_title": "user_id, lower(title), {id}",
    "ix_tasks_user_completed": "user_id, completed_at DESC NULLS LAST, {id} DESC",
}


def _sequence() -> str:
    return op.get_bind().execute(text("SELECT pg_get_serial_sequence('tasks', 'id')")).scalar_one()


def _id_type() -> str:
    return (
        op.get_bind()
        .execute(
            text(
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema()"
                " AND table_name = 'tasks' AND column_name = 'id'"
            )
        )
        .scalar_one()
    )


def upgrade() -> None:
    if ddl.dialect() != "postgresql" or _id_type() == "bigint":
        return
    # Every step below can run again after an interrupted run.
    op.execute(f"ALTER TABLE tasks ADD COLUMN IF NOT EXISTS {NEW} bigint")
    op.execute(f"""CREATE OR REPLACE FUNCTION tasks_copy_id() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN NEW.{NEW} := NEW.id; RETURN NEW; END $$""")
    op.execute("DROP TRIGGER IF EXISTS tasks_copy_id ON tasks")
    op.execute(
        "CREATE TRIGGER tasks_copy_id BEFORE INSERT OR UPDATE ON tasks"
        " FOR EACH ROW EXECUTE FUNCTION tasks_copy_id()"
    )
    with op.get_context().autocommit_block():  # from here on each statement commits
        bind = op.get_bind()
        top = bind.execute(text("SELECT max(id) FROM tasks")).scalar() or 0
        copy = text(
            f"UPDATE tasks SET {NEW} = id WHERE id > :low AND id <= :high AND {NEW} IS NULL"
        )
        for low in range(0, top, COPY_BATCH):
            bind.execute(copy, {"low": low, "high": low + COPY_BATCH})
        bind.execute(text("ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_id_bigint_set"))
        bind.execute(
            text(
                f"ALTER TABLE tasks ADD CONSTRAINT tasks_id_bigint_set"
                f" CHECK ({NEW} IS NOT NULL) NOT VALID"
            )
        )
        bind.execute(text("ALTER TABLE tasks VALIDATE CONSTRAINT tasks_id_bigint_set"))
    ddl.create_indexes("tasks", {"tasks_id_bigint_key": NEW}, unique=True)
    ddl.create_indexes(
        "tasks", {f"{name}_bigint": spec.format(id=NEW) for name, spec in WITH_ID.items()}
    )
    sequence = _sequence()
    # The swap: catalog changes only, in the revision's transaction. SET NOT NULL reads the
    # validated CHECK instead of the table (PostgreSQL 12+).
    op.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
    op.execute(f"ALTER TABLE tasks ALTER COLUMN {NEW} SET NOT NULL")
    op.execute("ALTER TABLE tasks DROP CONSTRAINT tasks_id_bigint_set")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY tasks.{NEW}")
    op.execute(f"ALTER SEQUENCE {sequence} AS bigint MAXVALUE {MAX_SAFE_ID}")
    op.execute(f"ALTER TABLE tasks ALTER COLUMN {NEW} SET DEFAULT nextval('{sequence}')")
    op.execute("DROP TRIGGER tasks_copy_id ON tasks")
    op.execute("DROP FUNCTION tasks_copy_id()")
    op.execute("ALTER TABLE tasks DROP COLUMN id")  # with tasks_pkey and the old list indexes
    op.execute(f"ALTER TABLE tasks RENAME COLUMN {NEW} TO id")
    op.execute(
        "ALTER TABLE tasks ADD CONSTRAINT tasks_pkey PRIMARY KEY USING INDEX tasks_id_bigint_key"
    )
    for name in WITH_ID:
        op.execute(f"ALTER INDEX {name}_bigint RENAME TO {name}")


def downgrade() -> None:
    if ddl.dialect() != "postgresql":
        return
    sequence = _sequence()
    op.execute(f"ALTER SEQUENCE {sequence} AS integer MAXVALUE {MAX_INT32}")
    op.execute("ALTER TABLE tasks ALTER COLUMN id TYPE integer")
