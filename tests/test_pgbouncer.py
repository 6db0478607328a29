"""The app behind PgBouncer in transaction pooling mode, as behind Neon's `-pooler` host: the
app's pooled connections share a few server connections, one autocommit statement at a time."""

import psycopg2
import pytest

from tests.helpers import Api, bouncer_for, check_task_flow, in_parallel, in_process, server_env
from tests.servers import PostgresDatabase
from tests.users import new_user

SERVER_CONNECTIONS = 3  # PgBouncer's pool: far fewer than the app's 20 connections
PARALLEL = 30


@pytest.fixture(scope="module")
def database(postgres_admin_url):
    """A fresh database, so the app creates its tables through PgBouncer too."""
    database = PostgresDatabase(postgres_admin_url)
    yield database
    database.drop()


@pytest.fixture(scope="module")
def pooled(database):
    """The app (in process) on the database through PgBouncer."""
    bouncer = bouncer_for(database, SERVER_CONNECTIONS)
    try:
        with in_process(server_env(bouncer.url())) as client:
            yield client
    finally:
        bouncer.stop()


def query(database: PostgresDatabase, sql: str, *params) -> list[tuple]:
    """Rows of `sql` on the database itself, not through PgBouncer."""
    with psycopg2.connect(database.url) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    connection.close()
    return rows


def test_task_flow_through_pgbouncer(pooled, family):
    check_task_flow(Api(pooled, new_user(), family))


def test_concurrent_requests_share_the_few_server_connections(pooled, database):
    user = new_user()

    def create(http, n):
        return Api(http, user, "AB"[n % 2]).create({"title": f"task {n}"})

    responses = in_parallel(pooled, PARALLEL, create)
    assert [r.status_code for r in responses] == [201] * PARALLEL, [r.text for r in responses]
    listed = Api(pooled, user, "B").list(sort="title").json()
    assert sorted(t["title"] for t in listed) == sorted(f"task {n}" for n in range(PARALLEL))
    server_connections = query(
        database,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'todo-api'",
    )
    assert 1 <= server_connections[0][0] <= SERVER_CONNECTIONS


def test_concurrent_first_requests_of_a_new_user(pooled, database):
    user = new_user()

    def first_call(http, n):
        if n % 2:
            return http.get("/api/tasks", headers=user.headers)
        return http.post("/api/tasks", json={"title": f"t{n}"}, headers=user.headers)

    responses = in_parallel(pooled, PARALLEL, first_call)
    assert sorted({r.status_code for r in responses}) == [200, 201], [r.text for r in responses]
    assert query(database, "SELECT count(*) FROM users WHERE id = %s", user.id) == [(1,)]
    tasks = query(database, "SELECT count(*) FROM tasks WHERE user_id = %s", user.id)
    assert tasks == [(PARALLEL // 2,)]


def test_a_session_setting_belongs_to_the_server_connection_not_the_client(database):
    """Why engine.py's per-connection `SET statement_timeout` is not reliable behind the pooler:
    the SET runs on whichever server connection serves it, then that connection serves other
    clients (they inherit it) while this client's next statements may run on another one
    (without it). Sending it as the `options` startup parameter instead is silently dropped.
    A role or database default (`ALTER ROLE todo SET statement_timeout = '10s'`) holds on every
    server connection."""
    bouncer = bouncer_for(database, pool_size=1)  # one server connection for every client
    connections = []
    try:
        for options in ("", "", "-c statement_timeout=1234"):
            connections.append(psycopg2.connect(bouncer.url(), options=options))
            connections[-1].autocommit = True
        setter, other, with_options = connections
        setter.cursor().execute("SET statement_timeout = '4321ms'")
        for connection in (other, with_options):
            with connection.cursor() as cursor:
                cursor.execute("SHOW statement_timeout")
                assert cursor.fetchone() == ("4321ms",)
    finally:
        for connection in connections:
            connection.close()
        bouncer.stop()
