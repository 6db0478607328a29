"""The throughput baseline: the least a Starlette app can do to serve `GET /api/tasks`.

It runs the app's own list query through the app's own engine (`store.Store`, so the same
SQLAlchemy engine settings, psycopg2, pool and checkout hook) in Starlette's thread pool, and
returns the JSON text PostgreSQL renders, as the app does. No token check, no validation, no
ETag, no logging (the benchmark starts it with `--no-access-log`). The SQL text and parameters
are the ones `Store.list_tasks` sends for `BENCH_USER_ID` with the default query
(`Store.list_sql`); every request replays them with `exec_driver_sql`. bench/bare.py is the
same endpoint without SQLAlchemy.

Run by the benchmark as `uvicorn bench.baseline:app` with DATABASE_URL and BENCH_USER_ID set.
With BENCH_LAYERS (comma-separated class names, e.g. `AuthMiddleware,RequestLogMiddleware`) it is
wrapped in those of our app's own middleware, configured as app.py configures them, so the cost
of each layer of the contract can be measured on its own (bench/throughput.py, the ladder).
"""

import os

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schemas.tasks import ListQuery
from store import Store

store = Store(os.environ["DATABASE_URL"])

SQL, PARAMETERS = store.list_sql(os.environ["BENCH_USER_ID"], ListQuery())


def _body() -> bytes:
    with store.engine.connect() as connection:
        return connection.exec_driver_sql(SQL, PARAMETERS).scalar().encode()


async def tasks(_request: Request) -> Response:
    return Response(await run_in_threadpool(_body), media_type="application/json")


async def health(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def _layers() -> list:
    """The middleware of app.py named in BENCH_LAYERS, in the app's order."""
    names = {name.strip() for name in os.getenv("BENCH_LAYERS", "").split(",") if name.strip()}
    if not names:
        return []
    from app import app as ours  # configures logging as the app does, too

    chosen = [entry for entry in ours.user_middleware if entry.cls.__name__ in names]
    if len(chosen) != len(names):
        raise SystemExit(f"BENCH_LAYERS: not all of {sorted(names)} are middleware of app.py")
    return chosen


app = Starlette(routes=[Route("/api/tasks", tasks), Route("/health", health)], middleware=_layers())
