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
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from handlers.errors import ProblemError
from schemas.tasks import task_etag
from store import DatabaseUnavailable, Recording, Store

MAX_KEY_LENGTH = 255


KEY_PATTERN = r"^[!-~]([ -~]{0,253}[!-~])?$"  # printable ASCII, no outer spaces, 1-255


def _key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not re.fullmatch(KEY_PATTERN, key):
        raise ProblemError(
            400, f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters"
        )
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


def task_location(request: Request, task_id: int) -> str:
    """`Location` of a task created at this collection path. Percent-encoded: family B's path
    holds the user id, which may be any text (non-Latin-1, control characters) that a header
    cannot carry as is."""
    return f"{quote(request.scope['path'].rstrip('/'))}/{task_id}"


def task_response(task: dict | None, status: int = 200, **headers: str) -> Response:
    """A task answer of the store ({id, version, body}) as the JSON response, with its ETag;
    None is 404."""
    if task is None:
        raise ProblemError(404, "task not found")
    return Response(task["body"], status, {"ETag": task_etag(task), **headers}, "application/json")


def _replay(request: Request, stored: dict, fingerprint: str) -> Response:
    if stored["fingerprint"] != fingerprint:
        raise ProblemError(422, "this Idempotency-Key was used for a different request")
    if stored["status"] is None:
        raise ProblemError(
            409,
            "a request with this Idempotency-Key is still in progress",
            headers={"Retry-After": "1"},
        )
    task = stored["response"]
    headers = {"Idempotent-Replayed": "true"}
    if stored["status"] == 201:
        headers["Location"] = task_location(request, task["id"])
    return task_response(task, stored["status"], **headers)
