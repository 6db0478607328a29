"""The store: every query of the API, as the methods of Store (docs/api.md: Data).

Every task and Idempotency-Key method takes the Caller first and is scoped by the caller's id, so
no method can reach another user's rows. A task method also stores the caller's user row when
this process has not yet stored it with these claims (docs/api.md: Users): on PostgreSQL inside
the method's own statement, so a request still costs one round trip (`Store._execute`). Nothing
here knows about HTTP or tokens.

The engine and its connection policy are in engine.py, the tables in tables.py, the SQL of each
statement in statements.py.
"""

import hashlib
import json
import logging
import secrets
from datetime import datetime, timedelta, timezone
from threading import Lock
from typing import Any, NamedTuple, Protocol

from cachetools import LRUCache
from sqlalchemy import and_, delete, exc, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

import statements
from engine import (
    CONNECT_TIMEOUT,
    POOL_TIMEOUT,
    SQLITE_DEFAULT,
    STATEMENT_TIMEOUT_MS,
    DatabaseUnavailable as DatabaseUnavailable,
    Fetched,
    InvalidData as InvalidData,
    connect,
    foreign_key_violation,
    make_engine,
    precompiled,
    run,
)
from schemas.tasks import TASK_JSON, TASK_LIST_JSON, ListQuery, TaskCreate, TaskPublic
from tables import APP_SECRETS, IDEMPOTENCY_KEYS, UTCTimestamp

log = logging.getLogger("todo.store")

KNOWN_USERS_MAX = 10_000  # users remembered per process, so the upsert is not repeated
IDEMPOTENCY_TTL = timedelta(hours=24)  # how long a key is remembered
IDEMPOTENCY_ABANDONED = timedelta(minutes=1)  # an unfinished claim older than this is retaken
PURGE_BATCH = 1000  # expired keys deleted per statement: well inside STATEMENT_TIMEOUT_MS


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Caller(Protocol):
    """Who a query acts for (middleware.tokens.Caller is one): the user's `id` and the claims
    its row holds, `email` and `name`; `issued_at`, the claims' `iat` (seconds since the epoch),
    orders them: claims older than the stored ones never overwrite them."""

    @property
    def id(self) -> str: ...

    @property
    def email(self) -> str | None: ...

    @property
    def name(self) -> str | None: ...

    @property
    def issued_at(self) -> float | None: ...


class Recording(NamedTuple):
    """The Idempotency-Key (claimed with `Store.claim_key`) a write's answer is stored under,
    with the `status` to store beside it and give back on a replay."""

    key: str
    status: int


class VersionMismatch(Exception):
    """The task exists but not at an expected version; `current` is the task as it is now."""

    def __init__(self, current: dict) -> None:
        super().__init__("version mismatch")
        self.current = current


class Page(NamedTuple):
    """A page of a list: `body` its JSON array; `versions` a digest of its tasks' ids and
    versions in order (the same tasks at the same versions are the same bytes: an ETag that
    costs nothing per byte of the body, where hashing a 1,000-task body costs ~0.3 ms); `last`
    the (sort value, id) of its last task when more tasks follow (the next page's cursor; a
    time as a datetime or as ISO 8601 text), else None."""

    body: bytes
    versions: str
    last: tuple[object, int] | None


class Store:
    """Every query of the API over one engine. Methods are blocking: call them off the event loop.

    Raises DatabaseUnavailable when the database cannot be reached, times out or the pool is
    exhausted for `pool_timeout` seconds, and InvalidData when it refuses a value. A task
    answer is {id, version, body: the task's JSON as bytes}.
    """

    def __init__(
        self,
        url: str = SQLITE_DEFAULT,
        json_by_database: bool = True,
        *,
        pool_timeout: float = POOL_TIMEOUT,
        connect_timeout: int = CONNECT_TIMEOUT,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    ) -> None:
        """A store over the database at `url`. Task JSON is rendered by PostgreSQL, in Python
        on SQLite, and also on PostgreSQL with `json_by_database=False` (tests compare the two:
        the same bytes). The timeouts are `make_engine`'s (seconds, and milliseconds for
        statements); the defaults are the deployed ones."""
        self.engine = make_engine(url, pool_timeout, connect_timeout, statement_timeout_ms)
        # user id -> (email, name) as stored; cachetools caches are not thread-safe
        self._known: LRUCache[str, tuple[str | None, str | None]] = LRUCache(KNOWN_USERS_MAX)
        self._known_lock = Lock()
        self._postgres = self.engine.dialect.name == "postgresql"
        # INSERT with ON CONFLICT, in the engine's dialect
        self._insert = pg_insert if self._postgres else sqlite_insert
        self._json_by_database = json_by_database and self._postgres
        # what single-task statements return: the rendered task, or its row
        self._columns = (
            statements.TASK_ANSWER if self._json_by_database else statements.TASK_COLUMNS
        )

    def shared_secret(self, name: str) -> str:
        """The secret `name` kept in the database (app_secrets): the first process to ask
        stores a new random one (32 bytes, URL-safe text), race-free (INSERT ... ON CONFLICT DO
        NOTHING); every worker, instance and restart then reads the same value."""
        statement = (
            self._insert(APP_SECRETS)
            .values(name=name, value=secrets.token_urlsafe(32), created_at=_now())
            .on_conflict_do_nothing(index_elements=[APP_SECRETS.c.name])
        )
        with connect(self.engine) as connection:
            connection.execute(statement)
            stored = select(APP_SECRETS.c.value).where(APP_SECRETS.c.name == name)
            return connection.execute(stored).scalar_one()

    def ping(self) -> None:
        """One trivial query; raises DatabaseUnavailable if the database does not answer or
        answers read-only (then every pooled session is renewed, as after a write refused for
        that reason: a PostgreSQL session keeps the read-only default it started with, a
        SQLite connection the read-only mode it was opened in)."""
        with connect(self.engine) as connection:
            if not self._postgres:
                # A write that changes nothing: a read, and even BEGIN IMMEDIATE (a read
                # transaction there), succeed on a connection SQLite opened read-only. It waits
                # its turn among the writers, as any write does.
                connection.exec_driver_sql("DELETE FROM app_secrets WHERE 0")
                return
            setting = "SELECT current_setting('transaction_read_only')"
            read_only = connection.exec_driver_sql(setting).scalar() == "on"
        if read_only:
            self.engine.dispose()
            raise DatabaseUnavailable("the database is read-only")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # users

    def ensure_user(self, caller: Caller) -> None:
        """Create the caller's user row or refresh its email and name, race-free (INSERT ... ON
        CONFLICT), as every task method does with its own statement (docs/api.md: Users).

        Skipped when this process already stored the same claims. If another user already holds
        the email (unique), the user is stored without it rather than failing the request, and
        each later request of the user tries the email again (the holder may have given it up).
        Email and name are only refreshed from claims issued (`issued_at`, the token's `iat`) at
        or after the stored ones, so an older token never rolls them back, on any worker.
        """
        if not self._knows(caller):
            with connect(self.engine) as connection:
                self._store_user(connection, caller)

    def _execute(self, connection: Connection, caller: Caller, statement, params: dict) -> Fetched:
        """`statement` with `params` (engine.run), for `caller`, whose user row it needs.

        A caller this process has not stored with these claims is stored as `ensure_user` does:
        on PostgreSQL by the upsert riding in `statement` as a data-modifying CTE (one round
        trip for both), on SQLite by a statement of its own first (no round trip there). If the
        statement breaks a constraint because of the caller's row (another user holds the email
        the combined upsert wrote, or the row was deleted in the database since this process
        stored it), none of it happened: the user is stored alone, then the statement runs
        again, alone.
        """
        if self._knows(caller):
            try:
                return run(connection, statement, params)
            except exc.IntegrityError as error:
                if not foreign_key_violation(error):
                    raise
        elif self._postgres:
            combined = statements.with_user_upsert(statement, self._insert)
            try:
                fetched = run(connection, combined, {**params, **_user_params(caller, True)})
            except exc.IntegrityError:
                pass  # the email is another user's, or the statement's own error: see below
            else:
                self._remember(caller, caller.email)
                return fetched
        self._store_user(connection, caller)
        return run(connection, statement, params)

    def _store_user(self, connection: Connection, caller: Caller) -> None:
        try:
            upsert = statements.user_upsert(self._insert, True)
            connection.execute(upsert, _user_params(caller, True))
            email = caller.email
        except exc.IntegrityError:
            log.warning("email of user %s is held by another user; stored without it", caller.id)
            upsert = statements.user_upsert(self._insert, False)
            connection.execute(upsert, _user_params(caller, False))
            email = None  # remembered as stored: the next request tries the email again
        self._remember(caller, email)

    def _knows(self, caller: Caller) -> bool:
        with self._known_lock:
            return self._known.get(caller.id) == (caller.email, caller.name)

    def _remember(self, caller: Caller, email: str | None) -> None:
        with self._known_lock:
            self._known[caller.id] = (email, caller.name)

    # idempotency keys

    def claim_key(self, caller: Caller, key: str, fingerprint: str) -> dict | None:
        """Claim `key` for a first request: None when claimed (new, expired, or abandoned by a
        request that never finished), else the stored row {fingerprint, status, response}
        (`status` None: the first request is still running; else the Recording's status, and
        `response` the task answer it gave)."""
        now = _now()
        keys = IDEMPOTENCY_KEYS.c
        new = self._insert(IDEMPOTENCY_KEYS).values(
            user_id=caller.id, key=key, fingerprint=fingerprint, created_at=now
        )
        retake = or_(
            keys.created_at < now - IDEMPOTENCY_TTL,
            and_(keys.status.is_(None), keys.created_at < now - IDEMPOTENCY_ABANDONED),
        )
        fresh = new.excluded
        claim = new.on_conflict_do_update(
            index_elements=[keys.user_id, keys.key],
            set_={
                "fingerprint": fresh.fingerprint,
                "created_at": fresh.created_at,
                "status": None,
                "response": None,
            },
            where=retake,
        ).returning(keys.key)
        stored = select(keys.fingerprint, keys.status, keys.response).where(
            keys.user_id == caller.id, keys.key == key
        )
        with connect(self.engine) as connection:
            if connection.execute(claim).first() is not None:
                return None
            row = connection.execute(stored).mappings().first()
        if row is None:
            return None
        response = row["response"] and _stored_answer(json.loads(row["response"]))
        return {**row, "response": response}

    def release_key(self, caller: Caller, key: str) -> None:
        """Forget an unfinished claim (its request failed), so a retry can run again."""
        keys = IDEMPOTENCY_KEYS.c
        statement = delete(IDEMPOTENCY_KEYS).where(
            keys.user_id == caller.id, keys.key == key, keys.status.is_(None)
        )
        with connect(self.engine) as connection:
            connection.execute(statement)

    def purge_keys(self, batch: int = PURGE_BATCH) -> int:
        """Delete up to `batch` keys older than IDEMPOTENCY_TTL; returns how many (fewer than
        `batch`: none is left). One short statement: call it again for the next batch. On
        PostgreSQL rows another worker's purge holds are skipped (SKIP LOCKED), not waited for."""
        keys = IDEMPOTENCY_KEYS.c
        expired = (
            select(keys.user_id, keys.key)
            .where(keys.created_at < _now() - IDEMPOTENCY_TTL)
            .limit(batch)
            .with_for_update(skip_locked=True)  # ignored by SQLite, whose writers take turns
        )
        statement = delete(IDEMPOTENCY_KEYS).where(tuple_(keys.user_id, keys.key).in_(expired))
        with connect(self.engine) as connection:
            return connection.execute(statement).rowcount

    # tasks

    def list_tasks(
        self, caller: Caller, query: ListQuery, after: tuple[object, int] | None = None
    ) -> Page:
        """Up to `query.limit` of the caller's tasks as a JSON array, filtered by `query.status`
        and ordered by `query.sort` then id (both in the same direction, no-value rows last);
        with `after` (sort value, id) of the previous page's last task (Page.last, a time also
        as ISO 8601 text), only the tasks after it (keyset pagination: no task is skipped or
        repeated when others are added or deleted)."""
        shape, params = _list_shape(caller.id, query, after)
        with connect(self.engine) as connection:
            if self._json_by_database:
                statement = statements.list_page_json(*shape)
                row = self._execute(connection, caller, statement, params).rows[0]
                body, versions, found, last_value, last_id = row
                more = found > query.limit
                return Page(body.encode(), versions, (last_value, last_id) if more else None)
            fetched = self._execute(connection, caller, statements.list_page(*shape), params)
        rows: list[Any] = [dict(row._mapping) for row in fetched.rows]
        page = rows[: query.limit]
        versions = ",".join(f"{row['id']}-{row['version']}" for row in page)
        cursor_column = statements.SORTS[query.sort].column.name
        last = (page[-1][cursor_column], page[-1]["id"]) if len(rows) > len(page) else None
        body = TASK_LIST_JSON.dump_json(page)
        return Page(body, hashlib.md5(versions.encode(), usedforsecurity=False).hexdigest(), last)

    def list_sql(self, user_id: str, query: ListQuery) -> tuple[str, dict]:
        """(SQL text, parameters) that `list_tasks` sends for this user and query on
        PostgreSQL, once the user's row exists: for EXPLAIN, and for the benchmark's
        bare-driver baseline, which must run exactly the app's query."""
        shape, params = _list_shape(user_id, query, None)
        compiled = precompiled(statements.list_page_json(*shape), self.engine.dialect)
        if compiled is None:
            raise ValueError("list_sql needs a PostgreSQL store")
        sql, constants = compiled
        return sql, {**constants, **params}

    def get_task(self, caller: Caller, task_id: int) -> dict | None:
        """The caller's task `task_id` as a task answer, or None if it does not exist or
        belongs to someone else."""
        statement = statements.select_task(False, self._columns)
        with connect(self.engine) as connection:
            fetched = self._execute(connection, caller, statement, _owned(caller, task_id))
        return self._answer(fetched.first())

    def create_task(
        self, caller: Caller, data: TaskCreate, record: Recording | None = None
    ) -> dict:
        """Insert a task for the caller and return its answer (INSERT ... RETURNING); with
        `record`, the answer is also stored as that Idempotency-Key's response."""
        now = _now()
        values = {"user_id": caller.id, "completed_at": now if data.completed else None}
        params = {"now": now, **_new_values({**values, **data.model_dump()})}
        statement = statements.insert_task(self._columns)
        with connect(self.engine) as connection:
            task = self._write(connection, caller, statement, params, record)
        assert task is not None  # INSERT ... RETURNING returns the row it inserted
        return task

    def update_task(
        self,
        caller: Caller,
        task_id: int,
        changes: dict[str, object],
        versions: list[int] | None = None,
        record: Recording | None = None,
    ) -> dict | None:
        """Apply `changes` ({column: value}) to the caller's task and return its answer; None
        if it is not theirs. `completed_at` follows `completed`: set when the task becomes
        completed, kept while it stays so, cleared when it is reopened. An empty `changes`
        changes nothing, not even `updated_at`.

        With `versions` (If-Match), only a task at one of them changes; one at another version
        raises VersionMismatch with the task as it is now. With `record`, the answer is also
        stored as that Idempotency-Key's response."""
        conditional = versions is not None
        params = _owned(caller, task_id, versions)
        if changes:
            params |= {"now": _now(), **_new_values(changes)}
            completing = changes.get("completed")
            statement = statements.update_task(
                frozenset(changes), completing, conditional, self._columns
            )
        else:  # the task as it is
            statement = statements.select_task(conditional, self._columns)
        with connect(self.engine) as connection:
            task = self._write(connection, caller, statement, params, record)
            if task is None and versions is not None:
                return self._unless_changed(connection, caller, task_id, versions)
        return task

    def toggle_task(
        self,
        caller: Caller,
        task_id: int,
        versions: list[int] | None = None,
        record: Recording | None = None,
    ) -> dict | None:
        """Flip `completed` atomically in the database, so concurrent toggles all count, and
        return the task's answer; `completed_at` and the rest as for `update_task`."""
        params = {**_owned(caller, task_id, versions), "now": _now()}
        statement = statements.toggle_task(versions is not None, self._columns)
        with connect(self.engine) as connection:
            task = self._write(connection, caller, statement, params, record)
            if task is None and versions is not None:
                return self._unless_changed(connection, caller, task_id, versions)
        return task

    def delete_task(self, caller: Caller, task_id: int, versions: list[int] | None = None) -> bool:
        """Delete the caller's task; False if it does not exist or belongs to someone else.
        `versions` as for `update_task`."""
        statement = statements.delete_task(versions is not None)
        with connect(self.engine) as connection:
            deleted = self._execute(
                connection, caller, statement, _owned(caller, task_id, versions)
            )
            if deleted.rowcount == 1:
                return True
            if versions is None:
                return False
            return self._unless_changed(connection, caller, task_id, versions) is not None

    def _write(
        self,
        connection: Connection,
        caller: Caller,
        statement,
        params: dict,
        record: Recording | None,
    ) -> dict | None:
        """The answer of a task write returning its row (`statement`), None for no row; with
        `record`, also store the answer as that Idempotency-Key's response: on PostgreSQL in
        the same statement (a data-modifying CTE, so still one round trip), else right after."""
        if record is None:
            return self._answer(self._execute(connection, caller, statement, params).first())
        recording = {
            "key_owner": caller.id,
            "idempotency_key": record.key,
            "key_status": record.status,
        }
        if self._json_by_database:  # the statement stores its answer {id, version, body}
            combined = statements.recording(statement)
            fetched = self._execute(connection, caller, combined, {**params, **recording})
            return self._answer(fetched.first())
        task = self._answer(self._execute(connection, caller, statement, params).first())
        if task is not None:
            stored = json.dumps({**task, "body": task["body"].decode()})
            connection.execute(statements.record_answer(stored), recording)
        return task

    def _unless_changed(
        self, connection: Connection, caller: Caller, task_id: int, versions: list[int]
    ) -> dict | None:
        """Why a write of task `task_id` under If-Match matched no row, read in a second
        statement: None when the task is missing; VersionMismatch when it is at none of
        `versions`; else (another write brought it to one of them since) its answer."""
        statement = statements.select_task(False, self._columns)
        task = self._answer(run(connection, statement, _owned(caller, task_id)).first())
        if task is not None and task["version"] not in versions:
            raise VersionMismatch(task)
        return task

    def _answer(self, row) -> dict | None:
        """A task answer from a row of a single-task statement (`self._columns`: rendered
        already, or every column, which TASK_JSON renders); None for no row."""
        if row is None:
            return None
        if self._json_by_database:
            task_id, version, body = row[:3]
            return {"id": task_id, "version": version, "body": body.encode()}
        task: Any = dict(row._mapping)
        return {"id": task["id"], "version": task["version"], "body": TASK_JSON.dump_json(task)}


def _user_params(caller: Caller, with_email: bool) -> dict:
    """Parameters of `statements.user_upsert`; without `with_email` the user is stored without
    an email."""
    return {
        "caller_id": caller.id,
        "caller_email": caller.email if with_email else None,
        "caller_name": caller.name,
        "caller_since": _now(),
        "caller_issued_at": caller.issued_at,
    }


def _owned(caller: Caller, task_id: int, versions: list[int] | None = None) -> dict:
    """Parameters of a statement of one task: the task, its owner, and the `versions`
    If-Match accepts when there is a condition."""
    params: dict = {"task_id": task_id, "owner_id": caller.id}
    if versions is not None:
        params["versions"] = versions
    return params


def _new_values(values: dict[str, object]) -> dict[str, object]:
    """`values` ({column: value}) as the parameters of `statements.new`."""
    return {f"new_{name}": value for name, value in values.items()}


def _list_shape(
    user_id: str, query: ListQuery, after: tuple[object, int] | None
) -> tuple[tuple, dict]:
    """(shape, parameters) of a list query (`statements.list_page`, `list_page_json`)."""
    position = None if after is None else "tail" if after[0] is None else "value"
    params: dict = {"user_id": user_id, "limit": query.limit + 1, "page_size": query.limit}
    if after is not None:
        value, params["after_id"] = after
        column = statements.SORTS[query.sort].column
        if isinstance(value, str) and isinstance(column.type, UTCTimestamp):
            value = datetime.fromisoformat(value)  # as a cursor carries it (Page.last)
        params["after_value"] = value
    return (query.status, query.sort, query.descending, position), params


def _stored_answer(stored: dict) -> dict:
    """The task answer an Idempotency-Key stored: {id, version, body} (body as text), or the
    task row itself as earlier versions stored it (times as ISO text, any offset)."""
    if "body" in stored:
        return {**stored, "body": stored["body"].encode()}
    task: Any = TaskPublic.model_validate(stored).model_dump()
    return {"id": stored["id"], "version": stored["version"], "body": TASK_JSON.dump_json(task)}
