"""The app with its connection pool matched to its thread pool: a what-if for the throughput run.

store.py keeps POOL_SIZE (10) connections plus up to POOL_OVERFLOW (10) more, while Starlette
runs blocking calls on anyio's default of 40 threads. Under more than 10 concurrent requests the
pool opens overflow connections and closes each again when it is returned to a full pool, so
busy periods churn connections (each a TCP + TLS + auth handshake against Neon). This variant
keeps POOL_SIZE + POOL_OVERFLOW connections open with no overflow, and caps the thread pool at
the same number, so no request waits for a connection and none is ever closed. Nothing of the
app changes but those two numbers, set before the app is imported.

Run by the benchmark as `uvicorn bench.pool_variant:app`.
"""

import anyio.to_thread

import store

CONNECTIONS = store.POOL_SIZE + store.POOL_OVERFLOW
store.POOL_SIZE, store.POOL_OVERFLOW = CONNECTIONS, 0

from app import app as _app  # noqa: E402  (after the pool numbers are set)


async def app(scope, receive, send) -> None:
    """The app, with the thread pool capped at CONNECTIONS (set once, at lifespan start)."""
    if scope["type"] == "lifespan":
        anyio.to_thread.current_default_thread_limiter().total_tokens = CONNECTIONS
    await _app(scope, receive, send)
