"""What the revisions share: a look at the schema that is there, and index DDL that does not
block the app's writes on PostgreSQL."""

from alembic import op
from sqlalchemy import inspect, text


def dialect() -> str:
    return op.get_bind().dialect.name


def tables() -> set[str]:
    return set(inspect(op.get_bind()).get_table_names())


def columns(table: str) -> set[str]:
    return {found["name"] for found in inspect(op.get_bind()).get_columns(table)}


def indexes(table: str) -> dict[str, bool]:
    """{index name: valid} of `table`'s indexes (invalid: a failed concurrent build's leftover),
    expression indexes included, primary key and unique constraints left out."""
    if dialect() == "sqlite":
        found = op.get_bind().execute(
            text(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :table"
                " AND sql IS NOT NULL"
            ),
            {"table": table},
        )
        return {name: True for (name,) in found}
    found = op.get_bind().execute(
        text(
            "SELECT c.relname, i.indisvalid FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
            " WHERE t.relname = :table AND t.relnamespace = current_schema()::regnamespace"
            " AND NOT i.indisprimary AND c.relname NOT IN (SELECT conname FROM pg_constraint)"
        ),
        {"table": table},
    )
    return dict(found.all())


def create_indexes(table: str, wanted: dict[str, str], unique: bool = False) -> None:
    """Create each index of `wanted` ({name: column list}) that `table` lacks. On PostgreSQL
    with CREATE INDEX CONCURRENTLY: the app's writes go on while it builds (it must run outside
    a transaction: Alembic's autocommit_block), after dropping an invalid index that an earlier,
    interrupted build left behind."""
    present = indexes(table)
    missing = {name: spec for name, spec in wanted.items() if not present.get(name)}
    create = "CREATE UNIQUE INDEX" if unique else "CREATE INDEX"
    if not missing:
        return
    if dialect() == "sqlite":
        for name, spec in missing.items():
            op.execute(f"{create} {name} ON {table} ({spec})")
        return
    with op.get_context().autocommit_block():
        for name, spec in missing.items():
            if name in present:
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"{create} CONCURRENTLY {name} ON {table} ({spec})")


def drop_indexes(table: str, names: list[str]) -> None:
    """Drop the indexes of `names` that `table` has; on PostgreSQL with DROP INDEX CONCURRENTLY,
    which waits for the queries using the index instead of blocking the table."""
    present = [name for name in names if name in indexes(table)]
    if not present:
        return
    if dialect() == "sqlite":
        for name in present:
            op.execute(f"DROP INDEX {name}")
        return
    with op.get_context().autocommit_block():
        for name in present:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
