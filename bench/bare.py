"""The honest baseline: the least a Starlette app needs to answer `GET /api/tasks` with the
app's very bytes, and the driver's own query rate, both without SQLAlchemy.

`uvicorn bench.bare:app`: one Starlette route over a psycopg2 `ThreadedConnectionPool` of the
app's size (store.POOL_SIZE), run in Starlette's thread pool. The caller is found by looking the
bearer token up in BENCH_TOKENS (a JSON file `{token: user id}`): no signature check, no
validation, no ETag, no logging. The SQL is the app's own list query (`Store.list_sql`, the
default query: up to 1,000 tasks), taken once at start-up, so the body is byte for byte the
app's for the same user.

`python -m bench.bare SECONDS THREADS`: psycopg2 alone, the same query (execute + fetch) for
the users of BENCH_TOKENS in turn, from THREADS threads with a connection each; prints
`{"queries", "seconds", "cpu_seconds"}` as JSON. The limit any endpoint in Python can reach.
"""

import json
import os
import sys
import threading
import time
from itertools import cycle

import psycopg2
from psycopg2.pool import ThreadedConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import POOL_SIZE
from schemas.tasks import ListQuery
from store import Store


def _list_sql(database_url: str) -> tuple[str, dict]:
    """The app's list SQL and parameters (`user_id` to fill in), without keeping its engine."""
    store = Store(database_url)
    try:
        return store.list_sql("", ListQuery())
    finally:
        store.dispose()


DATABASE_URL = os.environ["DATABASE_URL"]
SQL, PARAMETERS = _list_sql(DATABASE_URL)
with open(os.environ["BENCH_TOKENS"]) as tokens_file:
    USERS: dict[str, str] = json.load(tokens_file)  # bearer token -> user id


# psycopg2's pools raise when all connections are out rather than wait: the semaphore waits.
_free = threading.BoundedSemaphore(POOL_SIZE)


def _body(pool: ThreadedConnectionPool, user_id: str) -> bytes:
    with _free:
        connection = pool.getconn()
        try:
            with connection.cursor() as cursor:
                cursor.execute(SQL, {**PARAMETERS, "user_id": user_id})
                return cursor.fetchone()[0].encode()
        finally:
            pool.putconn(connection)


_pool: ThreadedConnectionPool | None = None


def _open_pool() -> ThreadedConnectionPool:
    # minconn = maxconn: psycopg2 closes a returned connection when minconn are idle already
    pool = ThreadedConnectionPool(POOL_SIZE, POOL_SIZE, DATABASE_URL)
    for connection in [pool.getconn() for _ in range(POOL_SIZE)]:
        connection.autocommit = True
        pool.putconn(connection)
    return pool


async def tasks(request: Request) -> Response:
    global _pool
    user_id = USERS.get(request.headers.get("authorization", "").removeprefix("Bearer "))
    if user_id is None:
        return Response(status_code=401)
    _pool = _pool or _open_pool()
    return Response(await run_in_threadpool(_body, _pool, user_id), media_type="application/json")


async def health(_request: Request) -> Response:  # what the benchmark waits for at start
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(routes=[Route("/api/tasks", tasks), Route("/health", health)])


def _loop(seconds: float, threads: int) -> dict:
    counts = [0] * threads
    users = list(USERS.values())
    deadline = time.monotonic() + seconds

    def work(number: int) -> None:
        connection = psycopg2.connect(DATABASE_URL)
        connection.autocommit = True
        with connection.cursor() as cursor:
            for user_id in cycle(users[number:] + users[:number]):
                cursor.execute(SQL, {**PARAMETERS, "user_id": user_id})
                cursor.fetchone()
                counts[number] += 1
                if time.monotonic() > deadline:
                    break
        connection.close()

    started, cpu = time.monotonic(), time.process_time()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {
        "queries": sum(counts),
        "seconds": time.monotonic() - started,
        "cpu_seconds": time.process_time() - cpu,
    }


if __name__ == "__main__":
    print(json.dumps(_loop(float(sys.argv[1]), int(sys.argv[2]))))
