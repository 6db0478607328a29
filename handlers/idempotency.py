"""Idempotent retries with the `Idempotency-Key` header (IETF draft-ietf-httpapi-idempotency-
key-header).

The first request with a key claims it, runs, and stores its response; a retry with the same
key and the same request replays that response (`Idempotent-Replayed: true`) instead of doing
the work again. The same key with a different request is 422; a retry while the first request is
still running is 409. Keys are per user and kept 24 hours (store.IDEMPOTENCY_TTL).
"""

import hashlib
import re
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from handlers.errors import ProblemError
from handlers.responses import task_location, task_response
from schemas.problem import Problem
from store import DatabaseUnavailable, Recording, Store

MAX_KEY_LENGTH = 255
KEY_PATTERN = r"^[!-~]([ -~]{0,253}[!-~])?$"  # printable ASCII, no outer spaces, 1-255

BAD_KEY = Problem.of(400, f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters")
KEY_IN_USE = Problem.of(409, "a request with this Idempotency-Key is still in progress")
KEY_REUSED = Problem.of(422, "this Idempotency-Key was used for a different request")


def _key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not re.fullmatch(KEY_PATTERN, key):
        raise ProblemError(BAD_KEY)
    return key


async def idempotent(
    request: Request,
    payload: str,
    perform: Callable[[Recording | None], Awaitable[Response]],
    status: int = 200,
) -> Response:
    """`await perform(record)`, made idempotent when the request has an Idempotency-Key.

    `perform` gets the claimed key as a store.Recording with `status`, the status of the
    response it gives on success (None without the header), and must have the store record its
    task under it; a replay answers with that status. `payload` is the request's validated body
    in canonical form; with the method and path it is the fingerprint that tells a true retry
    from another request reusing the key.
    """
    key = _key(request)
    if key is None:
        return await perform(None)
    store: Store = request.app.state.store
    caller = request.state.user
    request_line = f"{request.method} {request.url.path}\n{payload}".encode()
    fingerprint = hashlib.sha256(request_line).hexdigest()
    stored = await run_in_threadpool(store.claim_key, caller, key, fingerprint)
    if stored is not None:
        return _replay(request, stored, fingerprint)
    try:
        return await perform(Recording(key, status))
    except BaseException:
        try:
            await run_in_threadpool(store.release_key, caller, key)
        except DatabaseUnavailable:
            pass  # the claim is retaken once abandoned (store.IDEMPOTENCY_ABANDONED)
        raise


def _replay(request: Request, stored: dict, fingerprint: str) -> Response:
    if stored["fingerprint"] != fingerprint:
        raise ProblemError(KEY_REUSED)
    if stored["status"] is None:
        raise ProblemError(KEY_IN_USE, headers={"Retry-After": "1"})
    task = stored["response"]
    headers = {"Idempotent-Replayed": "true"}
    if stored["status"] == 201:
        headers["Location"] = task_location(request, task["id"])
    return task_response(task, stored["status"], **headers)
