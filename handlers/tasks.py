"""Task endpoints of both route families (SPEC.md: Endpoints).

Family A `/api/tasks...` acts for the token's user; family B `/api/{user_id}/tasks...` does the
same after checking the path's user is the token's user (else 403, before any query).
"""

import functools
import hashlib
from collections.abc import Callable

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from handlers.cursors import Cursors
from handlers.errors import ProblemError, invalid_input
from handlers.idempotency import idempotent, task_location, task_response
from schemas.problem import FieldError
from schemas.tasks import TASK_LIST_JSON, ListQuery, TaskCreate, TaskUpdate, task_etag
from store import Store, Versions

MAX_BODY_BYTES = 64 * 1024  # SPEC.md: bodies over 64 KiB are 413
MAX_QUERY_BYTES = 8 * 1024  # a list query string longer than this is 414, as behind nginx
MAX_TASK_ID = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER: ids a browser reads exactly


def _json(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content, status, headers, media_type="application/json")


def _task_id(request: Request) -> int:
    """The path's task id; anything but a positive integer in range is 404 (no oracle)."""
    raw = request.path_params["task_id"]
    if len(raw) <= 16 and raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_TASK_ID:
        return int(raw)
    raise ProblemError(404, "task not found")


async def _run(request: Request, query: Callable, *args):
    """Run `query(store, user_id, *args)` in the thread pool for the authenticated caller,
    whose user row it creates or refreshes (Store.acting_for)."""
    caller = request.state.user
    store: Store = request.app.state.store

    def work():
        with store.acting_for(caller.id, caller.email, caller.name):
            return query(store, caller.id, *args)

    return await run_in_threadpool(work)


def for_path_user(endpoint: Callable) -> Callable:
    """Family B: `endpoint` behind a check that the path's `user_id` is the caller, else 403
    before anything else is read or queried (SPEC.md: Endpoints)."""

    @functools.wraps(endpoint)
    async def checked(request: Request) -> Response:
        if request.path_params["user_id"] != request.state.user.id:
            raise ProblemError(403, "the user in the path is not the authenticated user")
        return await endpoint(request)

    return checked


async def _body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The request body validated as `model`: JSON only (415), at most 64 KiB (413), 400 else."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ProblemError(415, "send the body as JSON with Content-Type: application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 9 or int(declared) > MAX_BODY_BYTES):
        raise ProblemError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ProblemError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    if not body.strip():
        raise ProblemError(400, "request body is empty; send a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise invalid_input(error) from None


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _not_modified(request: Request, etag: str) -> bool:
    """If-None-Match matches `etag`, by weak comparison (RFC 9110 section 13.1.2)."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = _tags(header)
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


def _if_match(request: Request, task_id: int) -> Versions:
    """The task versions If-Match accepts (RFC 9110 section 13.1.1, strong comparison): None
    without the header, "*" for any, else the versions of this task's ETags it lists."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    tags = _tags(header)
    if "*" in tags:
        return "*"
    versions = []
    for tag in tags:
        task, _, version = tag.strip('"').partition("-")
        well_formed = tag.startswith('"') and tag.endswith('"') and version.isdigit()
        if well_formed and task == str(task_id) and len(version) < 10:
            versions.append(int(version))
    return versions


async def list_tasks(request: Request) -> Response:
    """GET .../tasks?status=&sort=&order=&limit=&cursor= -> 200, JSON array of tasks, with
    `Link: <...>; rel="next"` when more follow (RFC 8288) and an ETag of the page (304 for a
    matching If-None-Match)."""
    if len(request.scope["query_string"]) > MAX_QUERY_BYTES:
        raise ProblemError(414, f"query string is longer than {MAX_QUERY_BYTES} bytes")
    try:
        query = ListQuery.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise invalid_input(error, "query string") from None
    cursors: Cursors = request.app.state.cursors
    user_id = request.state.user.id
    after = None
    if query.cursor is not None:
        try:
            after = cursors.decode(query.cursor, user_id, query)
        except ValueError as error:
            errors = [FieldError(field="cursor", message=str(error))]
            raise ProblemError(400, str(error), errors=errors) from None
    rows = await _run(request, Store.list_tasks, query, after)
    page = rows[: query.limit]
    body = TASK_LIST_JSON.dump_json(page)
    headers = {"ETag": f'"{hashlib.sha256(body).hexdigest()[:32]}"'}
    if len(rows) > query.limit:
        next_page = request.url.include_query_params(cursor=cursors.encode(user_id, query, page[-1]))
        headers["Link"] = f'<{next_page}>; rel="next"'
    if _not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return _json(body, headers=headers)


async def create_task(request: Request) -> Response:
    """POST .../tasks -> 201, the task, with `Location` of the new task (idempotent with an
    Idempotency-Key)."""
    data = await _body(request, TaskCreate)

    async def perform(key: str | None) -> Response:
        task = await _run(request, Store.create_task, data, key)
        return task_response(task, 201, Location=task_location(request, task["id"]))

    return await idempotent(request, data.model_dump_json(), perform)


async def get_task(request: Request) -> Response:
    """GET .../tasks/{task_id} -> 200, the task (304 when If-None-Match has its ETag)."""
    task_id = _task_id(request)
    task = await _run(request, Store.get_task, task_id)
    if task is not None and _not_modified(request, task_etag(task)):
        return Response(status_code=304, headers={"ETag": task_etag(task)})
    return task_response(task)


async def update_task(request: Request) -> Response:
    """PUT or PATCH .../tasks/{task_id} -> 200, the task; only the fields sent change.
    With If-Match, only if the task still has that ETag (else 412); idempotent with an
    Idempotency-Key."""
    task_id = _task_id(request)
    data = await _body(request, TaskUpdate)
    versions = _if_match(request, task_id)

    async def perform(key: str | None) -> Response:
        changes = data.changes()
        task = await _run(request, Store.update_task, task_id, changes, versions, key)
        return task_response(task)

    return await idempotent(request, data.model_dump_json(exclude_unset=True), perform)


async def toggle_task(request: Request) -> Response:
    """PATCH .../tasks/{task_id}/complete -> 200, the task with `completed` flipped
    (idempotent with an Idempotency-Key: a retry does not flip it back)."""
    task_id = _task_id(request)
    versions = _if_match(request, task_id)

    async def perform(key: str | None) -> Response:
        return task_response(await _run(request, Store.toggle_task, task_id, versions, key))

    return await idempotent(request, "", perform)


async def delete_task(request: Request) -> Response:
    """DELETE .../tasks/{task_id} -> 204, empty body (412 when If-Match does not match)."""
    task_id = _task_id(request)
    if not await _run(request, Store.delete_task, task_id, _if_match(request, task_id)):
        raise ProblemError(404, "task not found")
    return Response(status_code=204)
