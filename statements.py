"""The SQL of every task and user statement of the store, each shape built once.

Statements are built once per shape, with bound parameters, and kept (`functools.cache`):
building one costs more than a round trip to a near database, and a kept statement is also
compiled only once (`engine.precompiled`). Store (store.py) fills in the parameters; the
parameter names each builder expects are in its docstring.

On PostgreSQL the task answers are rendered as JSON by the statement itself ("Task answers
rendered by PostgreSQL" below); on SQLite the statements return rows, rendered by Store.
"""

import functools
import json
from typing import Any, NamedTuple

from sqlalchemy import (
    Column,
    ColumnElement,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal_column,
    not_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from schemas.tasks import TaskPublic
from tables import IDEMPOTENCY_KEYS, TASKS, USERS, UTCTimestamp, utc_wall_time

TASK_COLUMNS = tuple(TASKS.c)
NOW = bindparam("now", type_=UTCTimestamp())


def _where_owned(conditional: bool) -> list:
    """Task `task_id` of user `owner_id`, and if `conditional` at one of `versions` (If-Match)."""
    conditions = [TASKS.c.id == bindparam("task_id"), TASKS.c.user_id == bindparam("owner_id")]
    if conditional:
        conditions.append(TASKS.c.version.in_(bindparam("versions", expanding=True)))
    return conditions


def new(name: str):
    """The bound parameter of a value written to column `name`, `new_<name>` (SET and VALUES
    reserve the bare column names for SQLAlchemy's own parameters)."""
    return bindparam(f"new_{name}", type_=TASKS.c[name].type)


# Task reads and writes. Parameters: `task_id` and `owner_id`, `versions` when `conditional`
# (_where_owned); `now` and `new_<column>` for the values written.


@functools.cache
def select_task(conditional: bool, columns: tuple):
    """SELECT of one task, returning `columns`."""
    return select(*columns).where(*_where_owned(conditional))


@functools.cache
def delete_task(conditional: bool):
    """DELETE of one task."""
    return delete(TASKS).where(*_where_owned(conditional))


@functools.cache
def insert_task(columns: tuple):
    """INSERT of a new task (`user_id` and the rest as `new_<column>`), returning `columns`."""
    written = ("user_id", "title", "description", "due_date", "completed", "completed_at")
    values = {name: new(name) for name in written}
    return (
        insert(TASKS)
        .values(**values, created_at=NOW, updated_at=NOW, version=1)
        .returning(*columns)
    )


@functools.cache
def update_task(sent: frozenset, completing: bool | None, conditional: bool, columns: tuple):
    """UPDATE of the columns a client `sent`, `updated_at` to `now` and `version` + 1,
    returning `columns`. `completed_at` follows `completing` (the `completed` sent): set when
    the task becomes completed, kept while it stays so, cleared when it is reopened."""
    values: dict[str, Any] = {name: new(name) for name in sent}
    if completing is not None:
        kept = case((TASKS.c.completed, TASKS.c.completed_at), else_=NOW)
        values["completed_at"] = kept if completing else None
    return _changing(values, conditional, columns)


@functools.cache
def toggle_task(conditional: bool, columns: tuple):
    """UPDATE flipping `completed` in the database, so concurrent toggles all count."""
    values = {
        "completed": not_(TASKS.c.completed),
        "completed_at": case((TASKS.c.completed, None), else_=NOW),
    }
    return _changing(values, conditional, columns)


def _changing(values: dict, conditional: bool, columns: tuple):
    return (
        update(TASKS)
        .where(*_where_owned(conditional))
        .values({**values, "updated_at": NOW, "version": TASKS.c.version + 1})
        .returning(*columns)
    )


# Lists. Parameters: `user_id`, `limit`, and after a cursor `after_id` (position "tail": the
# previous page ended among NULL keys) or also `after_value` (position "value").


class Sort(NamedTuple):
    """How a list sort orders: by `key`, rows without one last when `nullable`; `column` is
    the value of a task a cursor holds (Page.last)."""

    key: ColumnElement[Any]
    nullable: bool
    column: Column[Any]


SORTS = {  # the `sort` of ListQuery (docs/api.md: Endpoints)
    "created": Sort(TASKS.c.created_at, False, TASKS.c.created_at),
    "updated": Sort(TASKS.c.updated_at, False, TASKS.c.updated_at),
    "completed": Sort(TASKS.c.completed_at, True, TASKS.c.completed_at),
    "title": Sort(func.lower(TASKS.c.title), False, TASKS.c.title),
    "due_date": Sort(TASKS.c.due_date, True, TASKS.c.due_date),
}


@functools.cache
def list_page(status: str, sort: str, descending: bool, position: str | None):
    """The list query of one shape: the tasks (every column), `limit` of them."""
    statement = select(*TASK_COLUMNS).where(TASKS.c.user_id == bindparam("user_id"))
    if status != "all":
        statement = statement.where(TASKS.c.completed == (status == "completed"))
    if position is not None:
        statement = statement.where(_after(sort, descending, position == "tail"))
    return statement.order_by(*_order(sort, descending)).limit(bindparam("limit"))


def _order(sort: str, descending: bool) -> tuple:
    """ORDER BY of a list: the sort key, rows without one last, then id, in one direction."""
    key, nullable, _ = SORTS[sort]
    direction = (lambda c: c.desc()) if descending else (lambda c: c.asc())
    first = direction(key).nulls_last() if nullable else direction(key)
    return first, direction(TASKS.c.id)


def _after(sort: str, descending: bool, in_tail: bool):
    """Rows after (:after_value, :after_id) in the order (key, id), both descending or both
    ascending, rows whose key is NULL last; `in_tail`: the previous row's key was NULL."""
    key, nullable, _ = SORTS[sort]
    later = (lambda a, b: a < b) if descending else (lambda a, b: a > b)
    last_id = bindparam("after_id", type_=Integer())
    if in_tail:  # already in the NULL tail, ordered by id alone
        return and_(key.is_(None), later(TASKS.c.id, last_id))
    bound: ColumnElement[Any]
    if sort == "title":  # compare lower() on both sides, as the ORDER BY does
        bound = func.lower(bindparam("after_value", type_=String()))
    else:
        bound = bindparam("after_value", type_=UTCTimestamp())
    after = later(tuple_(key, TASKS.c.id), tuple_(bound, last_id))
    return or_(after, key.is_(None)) if nullable else after


# The user upsert, built once per shape with bound parameters, as the task statements are.
# Built per request, with the values in it, a user's first request in a process cost 1.3-1.9 ms
# of CPU in process against 0.2-0.3 ms for a known user's (an empty list): the statement, its
# cache key and its compilation were new every time. Now 0.25-0.45 ms.


@functools.cache
def user_upsert(insert, with_email: bool):
    """INSERT ... ON CONFLICT of the caller's user row (`insert`: the dialect's insert), which
    refreshes `name`, and `email` if `with_email`, only when they changed and the claims are not
    older than the stored ones (a token without `iat` only refreshes a row stored without one:
    NULL compares as unknown). Parameters: `caller_id`, `caller_email`, `caller_name`,
    `caller_since` (now), `caller_issued_at` (the claims' `iat`, seconds)."""
    issued_at = USERS.c.claims_issued_at
    statement = insert(USERS).values(
        id=bindparam("caller_id"),
        email=bindparam("caller_email"),
        name=bindparam("caller_name"),
        created_at=bindparam("caller_since", type_=UTCTimestamp()),
        claims_issued_at=bindparam("caller_issued_at", type_=issued_at.type),
    )
    fresh = statement.excluded
    changed = USERS.c.name.is_distinct_from(fresh.name)
    refresh = {"name": fresh.name, "claims_issued_at": fresh.claims_issued_at}
    if with_email:
        changed |= USERS.c.email.is_distinct_from(fresh.email)
        refresh["email"] = fresh.email
    not_older = or_(issued_at.is_(None), fresh.claims_issued_at >= issued_at)
    return statement.on_conflict_do_update(
        index_elements=[USERS.c.id], set_=refresh, where=and_(changed, not_older)
    )


@functools.cache
def with_user_upsert(statement, insert):
    """`statement` with the caller's user upsert (with its email) as a data-modifying CTE: one
    round trip for both (Store._execute). Parameters: `statement`'s and `user_upsert`'s."""
    return statement.add_cte(user_upsert(insert, True).cte("caller_user"))


# Task answers rendered by PostgreSQL. A list of 1,000 tasks read as rows costs ~10 us of Python
# per task (SQLAlchemy rows, mappings, the UTC type on four columns, then the JSON encoder);
# asked for as one JSON text it costs well under 1 us (docs/performance.md). The text is the
# very bytes the Python path (TASK_JSON, used on SQLite) writes: TaskPublic's fields in order,
# compact, times in UTC as `...Z` with microseconds only when not zero, strings escaped as
# PostgreSQL's to_json and pydantic-core (serde_json) both escape them (", \, control characters
# as \b \f \n \r \t or \u00XX, everything else as UTF-8); tests/test_rendering.py proves it.


def _sql_string(value: str):
    """A constant string written into the SQL text (not a bound parameter)."""
    return literal_column("'" + value.replace("'", "''") + "'", Text)


def _utc_text(time):
    """`time` (timestamptz) as ISO 8601 text in UTC with `Z`, whatever the session TimeZone
    (the UTC wall time of `utc_wall_time`, as every time read as a value); fractional seconds
    only when not zero, all six digits then (as pydantic writes datetimes)."""
    full = func.to_char(utc_wall_time(time), _sql_string('YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    return func.replace(full, _sql_string(".000000Z"), _sql_string("Z"))


def _task_json(columns):
    """A task's JSON text (TaskPublic's fields), from `columns`: the tasks table's or those of a
    CTE with its columns."""
    parts = []
    for number, name in enumerate(TaskPublic.model_fields):
        value = columns[name]
        if isinstance(TASKS.c[name].type, UTCTimestamp):
            value = _utc_text(value)
        member = ("{" if number == 0 else ",") + json.dumps(name) + ":"
        parts += [
            _sql_string(member),
            func.coalesce(cast(func.to_json(value), Text), _sql_string("null")),
        ]
    return func.concat(*parts, _sql_string("}"))


# What a single-task statement returns on PostgreSQL: the id and version (the ETag) and the
# task's JSON text; user_id only joins an Idempotency-Key's record to the written task
# (`recording`). On SQLite: TASK_COLUMNS, rendered by Store.
TASK_ANSWER = (TASKS.c.id, TASKS.c.version, _task_json(TASKS.c).label("body"), TASKS.c.user_id)


@functools.cache
def list_page_json(status: str, sort: str, descending: bool, position: str | None):
    """The list of one shape as one row (PostgreSQL): `body`, the JSON array of the first
    `page_size` tasks; `versions`, the MD5 of their "id-version" list (Page.versions);
    `found`, how many of up to `limit` (page_size + 1) there were; and the last shown task's
    cursor position `last_value` (sort value as text) and `last_id`, with the parameters of
    `list_page` and `page_size`."""
    cursor_column = SORTS[sort].column
    value: ColumnElement[Any] = cursor_column
    if isinstance(cursor_column.type, UTCTimestamp):
        value = _utc_text(cursor_column)
    rows = (
        list_page(status, sort, descending, position)
        .with_only_columns(
            TASKS.c.id,
            value.label("sort_value"),
            _task_json(TASKS.c).label("body"),
            func.concat(TASKS.c.id, _sql_string("-"), TASKS.c.version).label("version"),
            func.row_number().over(order_by=_order(sort, descending)).label("n"),
        )
        .subquery("page")
    )
    page_size = bindparam("page_size", type_=Integer())
    shown, last = rows.c.n <= page_size, rows.c.n == page_size
    tasks = func.string_agg(rows.c.body, aggregate_order_by(_sql_string(","), rows.c.n))
    versions = func.string_agg(rows.c.version, aggregate_order_by(_sql_string(","), rows.c.n))
    columns: list[Any] = [
        func.concat(_sql_string("["), tasks.filter(shown), _sql_string("]")).label("body"),
        func.md5(func.coalesce(versions.filter(shown), _sql_string(""))).label("versions"),
        func.count().label("found"),
        func.max(rows.c.sort_value).filter(last).label("last_value"),
        func.max(rows.c.id).filter(last).label("last_id"),
    ]
    return select(*columns)


# Idempotency-Key records. Parameters: `key_owner`, `idempotency_key`, `key_status`.


def record_answer(response):
    """UPDATE storing `response` and status `key_status` as the answer of the Idempotency-Key
    `idempotency_key` of user `key_owner`."""
    return (
        update(IDEMPOTENCY_KEYS)
        .where(
            IDEMPOTENCY_KEYS.c.user_id == bindparam("key_owner"),
            IDEMPOTENCY_KEYS.c.key == bindparam("idempotency_key"),
        )
        .values(status=bindparam("key_status"), response=response)
    )


@functools.cache
def recording(statement):
    """`statement` (a task write returning TASK_ANSWER) as a data-modifying CTE whose answer
    the UPDATE of `record_answer` stores and returns: one round trip for both."""
    written = statement.cte("written")
    answer = (written.c.id, written.c.version, written.c.body)
    as_json = func.json_build_object("id", answer[0], "version", answer[1], "body", answer[2])
    # Joined on the key's user (the written task is that user's), not a cross product with the
    # CTE, which SQLAlchemy warns of.
    return (
        record_answer(cast(as_json, Text))
        .where(IDEMPOTENCY_KEYS.c.user_id == written.c.user_id)
        .returning(*answer)
    )
