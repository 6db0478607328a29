"""Task endpoints of both route families (SPEC.md: Endpoints).

Family A `/api/tasks...` acts for the token's user; family B `/api/{user_id}/tasks...` does the
same after checking the path's user is the token's user (else 403, before any query).
"""

import functools
from collections.abc import Callable
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from handlers.errors import ProblemError, invalid_input
from schemas.tasks import ListQuery, TaskCreate, TaskPublic, TaskUpdate
from store import Store

MAX_BODY_BYTES = 64 * 1024  # SPEC.md: bodies over 64 KiB are 413
MAX_QUERY_BYTES = 8 * 1024  # a list query string longer than this is 414, as behind nginx
MAX_TASK_ID = 2**31 - 1  # PostgreSQL integer
_TASK_LIST = TypeAdapter(list[TaskPublic])


def _json(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content, status, headers, media_type="application/json")


def _task_response(task: dict | None, status: int = 200, **headers: str) -> Response:
    if task is None:
        raise ProblemError(404, "task not found")
    return _json(TaskPublic.model_validate(task).model_dump_json().encode(), status, headers)


def _task_id(request: Request) -> int:
    """The path's task id; anything but a positive integer in range is 404 (no oracle)."""
    raw = request.path_params["task_id"]
    if len(raw) <= 10 and raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_TASK_ID:
        return int(raw)
    raise ProblemError(404, "task not found")


async def _run(request: Request, query: Callable, *args):
    """Run `query(store, user_id, *args)` in the thread pool for the authenticated caller,
    after creating or refreshing the caller's user row (SPEC.md: users are created on the
    first authenticated call)."""
    caller = request.state.user
    store: Store = request.app.state.store

    def work():
        store.ensure_user(caller.id, caller.email, caller.name)
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
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
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


async def list_tasks(request: Request) -> Response:
    """GET .../tasks?status=&sort=&order= -> 200, JSON array of tasks."""
    if len(request.scope["query_string"]) > MAX_QUERY_BYTES:
        raise ProblemError(414, f"query string is longer than {MAX_QUERY_BYTES} bytes")
    try:
        query = ListQuery.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise invalid_input(error, "query string") from None
    tasks = await _run(request, Store.list_tasks, query)
    return _json(_TASK_LIST.dump_json(_TASK_LIST.validate_python(tasks)))


async def create_task(request: Request) -> Response:
    """POST .../tasks -> 201, the task, with `Location` of the new task."""
    data = await _body(request, TaskCreate)
    task = await _run(request, Store.create_task, data)
    # Percent-encoded: family B's path holds the user id, which may be any text (non-Latin-1,
    # control characters) that a header cannot carry as is.
    collection = quote(request.scope["path"].rstrip("/"))
    return _task_response(task, 201, Location=f"{collection}/{task['id']}")


async def get_task(request: Request) -> Response:
    """GET .../tasks/{task_id} -> 200, the task."""
    task_id = _task_id(request)
    return _task_response(await _run(request, Store.get_task, task_id))


async def update_task(request: Request) -> Response:
    """PUT or PATCH .../tasks/{task_id} -> 200, the task; only the fields sent change."""
    task_id = _task_id(request)
    changes = (await _body(request, TaskUpdate)).changes()
    return _task_response(await _run(request, Store.update_task, task_id, changes))


async def toggle_task(request: Request) -> Response:
    """PATCH .../tasks/{task_id}/complete -> 200, the task with `completed` flipped."""
    task_id = _task_id(request)
    return _task_response(await _run(request, Store.toggle_task, task_id))


async def delete_task(request: Request) -> Response:
    """DELETE .../tasks/{task_id} -> 204, empty body."""
    task_id = _task_id(request)
    if not await _run(request, Store.delete_task, task_id):
        raise ProblemError(404, "task not found")
    return Response(status_code=204)
