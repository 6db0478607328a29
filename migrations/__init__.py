"""The schema's migrations (Alembic, alembic.ini at the repository root), and the check the app
runs at start-up instead of any DDL (docs/operations.md).

`alembic upgrade head` from the repository root is the release step; `upgrade(url)` runs the
same from Python. The migration environment is `migrations/env.py`, the revisions are in
`migrations/versions/`.
"""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from engine import normalize_url

INI = Path(__file__).resolve().parent.parent / "alembic.ini"
COMMAND = "alembic upgrade head"  # the release step, run from the repository root
VERSION_TABLE = "alembic_version"
HOW = f"run `{COMMAND}` (or `make migrate`) from the repository root"


class SchemaNotCurrent(Exception):
    """The database's schema is not the one this version of the app needs; the message is one
    line saying what to run."""


def config(url: str | None = None) -> Config:
    """Alembic's configuration for the database `url` (None: DATABASE_URL, or the app's
    default), for use from Python: Alembic's own logging set-up from alembic.ini is skipped."""
    alembic_config = Config(str(INI))
    alembic_config.attributes["database_url"] = url
    alembic_config.attributes["configure_logging"] = False
    return alembic_config


def direct_url(url: str) -> str:
    """The SQLAlchemy URL migrations use for the app's `url`: a Neon pooler host
    (`HOST-pooler.REGION...`) becomes the endpoint's direct host (`HOST.REGION...`), as a
    session-level advisory lock means nothing through a transaction-mode pooler (Neon's
    "Connection pooling" documentation); query parameters and credentials are kept."""
    parsed = make_url(normalize_url(url))
    if parsed.host and "-pooler." in parsed.host:
        parsed = parsed.set(host=parsed.host.replace("-pooler.", ".", 1))
    return parsed.render_as_string(hide_password=False)


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """`alembic upgrade <revision>` on `url`: safe to run from several processes at once."""
    command.upgrade(config(url), revision)


def head() -> str:
    """The revision this version of the app needs."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    if revision is None:  # only if migrations/versions/ lost its files
        raise LookupError("migrations/versions/ holds no revision")
    return revision


def check(connection: Connection) -> None:
    """Raise SchemaNotCurrent unless the database is at `head()`. Reads only: no DDL."""
    tables = inspect(connection).get_table_names()
    current = ()
    if VERSION_TABLE in tables:  # read directly: a MigrationContext would log at INFO
        found = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
        current = tuple(sorted(version for (version,) in found))
    needed = head()
    if current == (needed,):
        return
    if not current:
        if "tasks" in tables:
            raise SchemaNotCurrent(
                f"the database was created by an earlier version of the app: {HOW}; it is "
                "upgraded in place, data kept"
            )
        raise SchemaNotCurrent(f"the database has no tables yet: {HOW}")
    if not all(_known(found) for found in current):
        raise SchemaNotCurrent(
            f"the database schema is at revision {', '.join(current)}, which this version does "
            "not know (a newer release migrated it): run that release, or downgrade the schema "
            "with it first"
        )
    raise SchemaNotCurrent(
        f"the database schema is at revision {', '.join(current)}, this version needs "
        f"{needed}: {HOW}"
    )


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(config()).get_revision(revision) is not None
    except (CommandError, ResolutionError):
        return False


def include_object(dialect: str):
    """Autogenerate's object filter for `dialect` (env.py): an index declared for one dialect
    only (`ddl_if`, such as tables.py's DESC NULLS LAST index on PostgreSQL) is not compared on
    another."""

    def include(obj, _name, type_, _reflected, _compare_to) -> bool:
        only = getattr(obj, "_ddl_if", None) if type_ == "index" else None
        return only is None or only.dialect in (None, dialect)

    return include
