"""Database faults under a real uvicorn process: a backend killed in the middle of a
request, every pooled connection busy, statements that run too long, PostgreSQL stopped and
started under load, SIGTERM with requests in flight, and conditions of the database (read-only,
out of connections, serialization failures); in process: a SQLite file made read-only. Each
ends in 503 problem details or in success, never in a 500 or a hang, and the service comes back
without a restart.

Killed idle connections and an unreachable database are in test_server.py."""

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg2
import pytest

import migrations
from engine import POOL_OVERFLOW, POOL_SIZE
from store import Store
from tests.filesystems import fill, remount, set_immutable, tmpfs
from tests.helpers import (
    FAULT_TIMEOUTS,
    Api,
    assert_one_clear_line,
    assert_problem,
    in_process,
    server_env,
)
from tests.pgcluster import PostgresCluster, unprivileged
from tests.servers import AppServer
from tests.users import new_user

POOL = POOL_SIZE + POOL_OVERFLOW  # connections per worker
# The servers here run with the store's short FAULT_TIMEOUTS, so waiting them out is quick.
POOL_TIMEOUT = FAULT_TIMEOUTS["pool_timeout"]
CONNECT_TIMEOUT = FAULT_TIMEOUTS["connect_timeout"]
STATEMENT_TIMEOUT = FAULT_TIMEOUTS["statement_timeout_ms"] / 1000


def fault_server(database_url: str) -> AppServer:
    """The app under uvicorn on `database_url`, its store with FAULT_TIMEOUTS (not started)."""
    return AppServer(
        server_env(database_url), app="tests.helpers:short_timeouts_app", args=["--factory"]
    )


def assert_unavailable(response: httpx.Response) -> None:
    """503 problem details with a Retry-After the client can act on."""
    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0


class RowLock:
    """A lock on one task row, held from outside the app so that the app's UPDATE of that task
    blocks, plus a second connection to watch (and terminate) the app's backends."""

    def __init__(self, database_url: str, task_id: int) -> None:
        self.holder = psycopg2.connect(database_url)
        with self.holder.cursor() as cursor:
            cursor.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
        self.monitor = psycopg2.connect(database_url)
        self.monitor.autocommit = True

    def blocked(self) -> list[int]:
        """Process ids of the app's connections waiting for this (or any) lock."""
        with self.monitor.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'todo-api' AND wait_event_type = 'Lock'"
            )
            return [pid for (pid,) in cursor.fetchall()]

    def terminate(self, pids: list[int]) -> None:
        with self.monitor.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", (pids,))

    def release(self) -> None:
        self.holder.rollback()

    def close(self) -> None:
        self.release()
        self.holder.close()
        self.monitor.close()


@contextmanager
def row_locked(database_url: str, task_id: int):
    lock = RowLock(database_url, task_id)
    try:
        yield lock
    finally:
        lock.close()


def wait_until(condition, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached in {timeout} s")


@pytest.fixture(scope="module")
def postgres_server(postgres_database):
    """This module's server on the session's PostgreSQL database."""
    server = fault_server(postgres_database.url).start()
    yield server
    server.stop()


@pytest.fixture
def fault_api(postgres_server):
    with httpx.Client(base_url=postgres_server.url, timeout=30) as http:
        yield Api(http, new_user(), "A")


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_backend_killed_mid_request_is_503_then_service_continues(
    postgres_server, fault_api, postgres_database
):
    api = fault_api
    task = api.new_task()
    with row_locked(postgres_database.url, task["id"]) as lock:
        with (
            ThreadPoolExecutor(1) as pool,
            httpx.Client(base_url=postgres_server.url, timeout=30) as http,
        ):
            pending = pool.submit(Api(http, api.user, "A").toggle, task["id"])
            lock.terminate(wait_until(lock.blocked, what="a blocked UPDATE"))
            response = pending.result(timeout=20)
    assert_unavailable(response)
    assert api.get(task["id"]).json() == task  # the killed UPDATE did not commit
    toggled = api.toggle(task["id"])
    assert toggled.status_code == 200 and toggled.json()["completed"] is True
    for n in range(POOL):  # every later request succeeds, whichever pooled connection it gets
        assert api.update(task["id"], {"title": f"t{n}"}).status_code == 200
        assert api.list().status_code == 200
    assert "Traceback" not in postgres_server.logs()


def test_pool_exhausted_and_slow_statements_are_503_within_the_timeouts(
    postgres_server, fault_api, postgres_database
):
    """More requests than connections, each blocked on a row lock: the first POOL hold every
    connection until STATEMENT_TIMEOUT cancels their UPDATE, the rest wait POOL_TIMEOUT for a
    connection. All answer 503 in bounded time, nothing changes, and service resumes."""
    api = fault_api
    task = api.new_task()  # also stores the user, so each toggle needs one connection
    extra = 10
    with row_locked(postgres_database.url, task["id"]):
        limits = httpx.Limits(max_connections=POOL + extra)
        with httpx.Client(
            base_url=postgres_server.url, timeout=STATEMENT_TIMEOUT + 5, limits=limits
        ) as http:
            caller = Api(http, api.user, "A")
            with ThreadPoolExecutor(POOL + extra) as pool:
                results = list(
                    pool.map(
                        lambda _: timed(lambda: caller.toggle(task["id"])), range(POOL + extra)
                    )
                )
    for response, _ in results:
        assert_unavailable(response)
    durations = sorted(elapsed for _, elapsed in results)
    waited_for_pool, cancelled = durations[:extra], durations[extra:]
    assert all(POOL_TIMEOUT - 0.5 < d < POOL_TIMEOUT + 3 for d in waited_for_pool), durations
    assert all(STATEMENT_TIMEOUT - 0.5 < d < STATEMENT_TIMEOUT + 3 for d in cancelled), durations
    assert api.get(task["id"]).json() == task
    assert api.toggle(task["id"]).json()["completed"] is True
    assert "Traceback" not in postgres_server.logs()


@pytest.fixture(scope="module")
def cluster():
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


def test_postgres_stopped_and_started_under_load(cluster):
    """`pg_ctl stop -m fast`, an outage, a start: requests meanwhile are 503 and quick, then
    full service returns without restarting the app, and every acknowledged write is kept."""
    server = fault_server(cluster.url(sslmode="require")).start()
    user = new_user()
    log: list[tuple[float, float, str, int]] = []  # (started, elapsed, method, status)
    created: list[int] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            api = Api(http, user, "AB"[worker % 2])
            n = 0
            while not stop.is_set():
                n += 1
                method, call = [
                    ("POST", lambda: api.create({"title": f"w{worker}-{n}"})),
                    ("GET", api.list),
                ][n % 2]
                started = time.monotonic()
                response = call()
                log.append((started, time.monotonic() - started, method, response.status_code))
                if response.status_code == 201:
                    created.append(response.json()["id"])
                elif response.status_code != 200:
                    assert_unavailable(response)

    try:
        with ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(load, n) for n in range(4)]
            time.sleep(1)
            cluster.pause()
            stopped = time.monotonic()
            time.sleep(2)
            resuming = time.monotonic()
            cluster.resume()
            restarted = time.monotonic()
            time.sleep(4)
            stop.set()
            for worker in workers:
                worker.result()
        statuses = {status for *_, status in log}
        assert statuses <= {200, 201, 503}, statuses
        during = [s for started, _, _, s in log if stopped < started < resuming]
        assert during and set(during) == {503}, during  # the outage was real and answered 503
        assert max(elapsed for _, elapsed, _, _ in log) < CONNECT_TIMEOUT + 2
        after = [s for started, _, _, s in log if started > restarted + 2]
        assert after and set(after) <= {200, 201}, after  # full service, no restart
        assert httpx.get(f"{server.url}/ready").status_code == 200
        with httpx.Client(base_url=server.url, timeout=30) as http:
            stored = {t["id"] for t in all_tasks(Api(http, user, "A"))}
        assert set(created) <= stored  # no acknowledged write was lost
        assert server.process.poll() is None
        assert "Traceback" not in server.logs()
    finally:
        stop.set()
        server.stop()


def all_tasks(api: Api) -> list[dict]:
    """Every task of the user, following rel="next" (a busy run makes more than one page)."""
    response, tasks = api.list(), []
    while True:
        assert response.status_code == 200, response.text
        tasks += response.json()
        if "link" not in response.headers:
            return tasks
        response = api.request("GET", response.headers["link"].split(";")[0].strip("<>"))


def refuses_connections(server: AppServer) -> bool:
    try:
        httpx.get(f"{server.url}/health", timeout=2)
    except httpx.ConnectError:
        return True
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return False  # accepted just before the listener closed, then dropped or reset
    return False


def test_sigterm_lets_in_flight_requests_finish(postgres_database):
    # The deployed timeouts: the requests stay blocked until the test lets them finish.
    server = AppServer(server_env(postgres_database.url)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            api = Api(http, new_user(), "A")
            task = api.new_task()
            in_flight = 3
            with row_locked(postgres_database.url, task["id"]) as lock:
                with ThreadPoolExecutor(in_flight) as pool:
                    pending = [pool.submit(api.toggle, task["id"]) for _ in range(in_flight)]
                    wait_until(
                        lambda: len(lock.blocked()) == in_flight, what="all requests in flight"
                    )
                    server.process.send_signal(signal.SIGTERM)
                    wait_until(lambda: refuses_connections(server), what="new connections refused")
                    assert server.process.poll() is None  # still waiting for the requests
                    lock.release()  # the requests complete
                    responses = [future.result(timeout=20) for future in pending]
        assert [r.status_code for r in responses] == [200] * in_flight
        assert sorted(r.json()["completed"] for r in responses) == [False, True, True]
        server.process.wait(20)
        assert "Finished server process" in server.logs()
        assert "Traceback" not in server.logs()
    finally:
        server.stop()


def terminate_role_connections(cluster: PostgresCluster) -> None:
    """End the app's sessions, so that the role settings changed meanwhile apply to the new
    ones (a failover or a DBA's ALTER ROLE does the same to a running service)."""
    cluster.admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
        PostgresCluster.USER,
    )


@contextmanager
def role_setting(cluster: PostgresCluster, sql: str, reset: str):
    cluster.admin(sql)
    terminate_role_connections(cluster)
    try:
        yield
    finally:
        cluster.admin(reset)


def assert_recovers(api: Api, task: dict) -> None:
    """Without a restart, /ready (of the app `api.client` calls) turns 200 and then every write
    succeeds, whichever pooled connection it gets."""
    wait_until(lambda: api.client.get("/ready").status_code == 200, what="/ready 200")
    for n in range(POOL + 2):
        assert api.update(task["id"], {"title": f"back {n}"}).status_code == 200
    assert api.create({"title": "new"}).status_code == 201
    assert Api(api.client, new_user(), "A").list().status_code == 200


@pytest.fixture
def on_cluster(cluster):
    """The app on the private cluster, a user of it and one of the user's tasks; no traceback
    may reach the log."""
    server = AppServer(server_env(cluster.url(sslmode="require"))).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            api = Api(http, new_user(), "A")
            yield server, api, api.new_task()
        assert "Traceback" not in server.logs()
    finally:
        server.stop()


def test_read_only_database_is_503_and_not_ready_then_recovers(cluster, on_cluster):
    """A failover to a replica, or `default_transaction_read_only`: every write and a new
    user's first request (its row cannot be stored) are 503 with Retry-After, /ready is 503,
    reads of known users still work; once writable, full service returns without a restart."""
    server, api, task = on_cluster
    with role_setting(
        cluster,
        "ALTER ROLE todo SET default_transaction_read_only = on",
        "ALTER ROLE todo RESET default_transaction_read_only",
    ):
        for response in (
            api.create({"title": "t"}),
            api.update(task["id"], {"title": "u"}),
            api.update(task["id"], {"title": "u"}, method="PATCH"),
            api.toggle(task["id"]),
            api.delete(task["id"]),
            Api(api.client, new_user(), "A").list(),
            api.create({"title": "t"}, headers={"Idempotency-Key": "read-only"}),
            httpx.get(f"{server.url}/ready"),
        ):
            assert_unavailable(response)
        assert api.get(task["id"]).json() == task
        assert api.list().status_code == 200
    terminate_role_connections(cluster)  # the replica's sessions end with the failover
    assert_recovers(api, task)


def test_read_only_sessions_left_in_the_pool_recover_without_a_restart(cluster, on_cluster):
    """The database turns writable again while the pool still holds read-only sessions (no
    failover closed them): the first write on one is 503 and renews the pool, /ready too."""
    server, api, task = on_cluster
    with role_setting(
        cluster,
        "ALTER ROLE todo SET default_transaction_read_only = on",
        "ALTER ROLE todo RESET default_transaction_read_only",
    ):
        assert_unavailable(api.toggle(task["id"]))
    assert_recovers(api, task)


def test_connection_limit_is_503_then_recovers(cluster, on_cluster):
    """No connection allowed (`too many connections for role`, SQLSTATE 53300, as when a
    plan's connection limit is reached): 503 with Retry-After and /ready 503, then recovery."""
    server, api, task = on_cluster
    with role_setting(
        cluster, "ALTER ROLE todo CONNECTION LIMIT 0", "ALTER ROLE todo CONNECTION LIMIT -1"
    ):
        for response in (api.list(), api.toggle(task["id"]), httpx.get(f"{server.url}/ready")):
            assert_unavailable(response)
    assert_recovers(api, task)


def test_serialization_failures_are_503_never_500(cluster, on_cluster):
    """A role whose transactions are SERIALIZABLE: concurrent toggles of one task fail with
    SQLSTATE 40001 (could not serialize access); each is 503 with Retry-After or succeeds, and
    the task's state is the one its successful toggles predict."""
    server, api, task = on_cluster
    with role_setting(
        cluster,
        "ALTER ROLE todo SET default_transaction_isolation = serializable",
        "ALTER ROLE todo RESET default_transaction_isolation",
    ):
        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(lambda _: api.toggle(task["id"]), range(40)))
        for response in responses:
            if response.status_code != 200:
                assert_unavailable(response)
        toggled = sum(r.status_code == 200 for r in responses)
        assert api.get(task["id"]).json()["completed"] is (toggled % 2 == 1)
    terminate_role_connections(cluster)
    assert_recovers(api, task)


@contextmanager
def tasks_in_tablespace(cluster: PostgresCluster, directory: Path):
    """The tasks table and its indexes moved to a new tablespace in `directory` while the block
    runs; then moved back and the tablespace dropped."""

    def move_to(tablespace: str) -> None:
        cluster.admin(
            f"""DO $$ DECLARE i regclass; BEGIN
                ALTER TABLE tasks SET TABLESPACE {tablespace};
                FOR i IN SELECT indexrelid FROM pg_index WHERE indrelid = 'tasks'::regclass LOOP
                    EXECUTE format('ALTER INDEX %s SET TABLESPACE {tablespace}', i);
                END LOOP; END $$""",
            dbname=cluster.DATABASE,
        )

    cluster.admin(f"CREATE TABLESPACE small_disk LOCATION '{directory}'")
    try:
        move_to("small_disk")
        yield
    finally:
        move_to("pg_default")
        cluster.admin("DROP TABLESPACE small_disk")


def test_disk_full_is_503_then_recovers(cluster, on_cluster):
    """The disk of the tasks table fills up (PostgreSQL cannot extend its files: SQLSTATE
    53100): a create that needs a new page is 503 with Retry-After, never a 500, and stores
    nothing; reads and /ready still answer 200 (the database answers and is not read-only);
    once space is freed, every write succeeds again without a restart."""
    server, api, task = on_cluster
    with tmpfs(64 * 1024, unprivileged()) as mount, tasks_in_tablespace(cluster, mount):
        filler = fill(mount)
        try:
            before = len(all_tasks(api))
            for n in range(2000):  # a page holds a few dozen tasks
                response = api.create({"title": f"while the disk is full {n}"})
                if response.status_code != 201:
                    break
            assert_unavailable(response)
            assert "DiskFull" in server.logs()  # psycopg2's class for SQLSTATE 53100
            assert len(all_tasks(api)) == before + n  # the refused create stored nothing
            assert api.get(task["id"]).json() == task
            assert api.client.get("/ready").status_code == 200
        finally:
            filler.unlink()
        assert_recovers(api, task)


def test_deadlock_is_503_never_500(cluster, on_cluster):
    """A request deadlocked with another client's transaction (SQLSTATE 40P01): the holder
    locks the user's row, the request's INSERT waits for it (its foreign key check) while
    holding its lock on the tasks table, which the holder then asks for. PostgreSQL cancels the
    request's statement, picked by a shorter deadlock_timeout: 503 with Retry-After, nothing
    stored, the holder goes on, and full service follows."""
    server, api, task = on_cluster
    with role_setting(
        cluster,
        "ALTER ROLE todo SET deadlock_timeout = '3s'",
        "ALTER ROLE todo RESET deadlock_timeout",
    ):
        holder = psycopg2.connect(
            host=str(cluster.dir), port=cluster.port, user="postgres", dbname=cluster.DATABASE
        )
        try:
            with holder.cursor() as cursor, ThreadPoolExecutor(1) as pool:
                cursor.execute("SET deadlock_timeout = '60s'")  # the request's check comes first
                cursor.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (api.user.id,))
                pending = pool.submit(api.create, {"title": "deadlocked"})
                wait_until(
                    lambda: cluster.admin(
                        "SELECT 1 FROM pg_stat_activity WHERE application_name = 'todo-api'"
                        " AND wait_event_type = 'Lock'"
                    ),
                    what="the request waiting for the user's row",
                )
                cursor.execute("LOCK TABLE tasks IN SHARE MODE")  # granted once the request ends
                response = pending.result(timeout=20)
            holder.rollback()
        finally:
            holder.close()
    assert_unavailable(response)
    assert "DeadlockDetected" in server.logs()  # psycopg2's class for SQLSTATE 40P01
    assert [t["id"] for t in all_tasks(api)] == [task["id"]]
    assert_recovers(api, task)


def test_role_with_a_1_ms_statement_timeout(cluster):
    """A role whose statement_timeout is 1 ms. Each session of the server sets its own limit
    (engine.STATEMENT_TIMEOUT_MS) first, but that SET itself runs under the 1 ms limit, which a
    busy machine exceeds now and then: so either the server starts and serves, or it refuses to
    start with one line naming the host and the setting to raise; never a traceback."""
    migrations.upgrade(cluster.url(sslmode="require"))  # the release step, before the change
    with role_setting(
        cluster,
        "ALTER ROLE todo SET statement_timeout = 1",
        "ALTER ROLE todo RESET statement_timeout",
    ):
        server = AppServer(server_env(cluster.url(sslmode="require")), migrate=False)
        server.start(wait=False)
        try:
            try:
                server.wait_ready()
            except RuntimeError:
                assert_one_clear_line(
                    server.logs(),
                    f"localhost:{cluster.port}/todo",
                    "ALTER ROLE todo SET statement_timeout",
                )
                return
            with httpx.Client(base_url=server.url, timeout=30) as http:
                api = Api(http, new_user(), "A")
                task = api.new_task()
                for response in (api.toggle(task["id"]), api.list()):
                    if response.status_code != 200:
                        assert_unavailable(response)
            assert "Traceback" not in server.logs()
        finally:
            server.stop()


@contextmanager
def made_read_only(way: str, mount: Path, database: Path):
    """The SQLite `database` on the tmpfs at `mount` made read-only for everyone, root too,
    while the block runs: the file or its directory immutable, or the file system remounted
    read-only. Linux refuses the remount while a file on it is open for writing."""
    target = {"file": database, "directory": database.parent}.get(way)
    if target is None:
        remount(mount, read_only=True)
    else:
        set_immutable(target, True)
    try:
        yield
    finally:
        if target is None:
            remount(mount, read_only=False)
        else:
            set_immutable(target, False)


@pytest.mark.parametrize("way", ["file", "directory", "file system"])
def test_read_only_sqlite_is_503_and_not_ready_then_recovers(way):
    """The SQLite file made read-only (its permissions or its directory's changed, the volume
    remounted read-only by a failing disk or mounted read-only): /ready and every write are 503
    with Retry-After, never a 500 and never /ready 200; once writable again, full service
    returns without a restart, though the connections opened meanwhile were opened read-only
    (SQLite keeps a connection so)."""
    with tmpfs(8192) as mount:
        database = mount / "data" / "todo.db"
        database.parent.mkdir()
        url = f"sqlite:///{database}"
        store = Store(url, **FAULT_TIMEOUTS)
        try:
            with in_process(server_env(url), store) as client:
                api = Api(client, new_user(), "A")
                task = api.new_task()
                # The connections of before would keep writing: none may be out when the pool
                # is emptied (the lifespan's first Idempotency-Key purge holds one for a moment).
                deadline = time.monotonic() + 10
                while store.engine.pool.checkedout():
                    assert time.monotonic() < deadline, "a pooled connection stayed out for 10 s"
                    time.sleep(0.01)
                store.dispose()
                with made_read_only(way, mount, database):
                    for response in (
                        client.get("/ready"),
                        api.create({"title": "t"}),
                        api.update(task["id"], {"title": "u"}),
                        api.update(task["id"], {"title": "u"}, method="PATCH"),
                        api.toggle(task["id"]),
                        api.delete(task["id"]),
                        Api(client, new_user(), "A").list(),
                        api.create({"title": "t"}, headers={"Idempotency-Key": "read-only"}),
                        client.get("/ready"),
                    ):
                        assert_unavailable(response)
                    read = api.get(task["id"])  # reads may still work, or be 503 too
                    if read.status_code != 200:
                        assert_unavailable(read)
                assert_recovers(api, task)
        finally:
            store.dispose()  # nothing open: the tmpfs unmounts
