"""Task endpoints of both route families (docs/api.md: Endpoints).

`/api/tasks...` acts for the token's user; `/api/{user_id}/tasks...` does the same after checking
that the path's user is the token's user (else 403, before anything is read or queried). Each
task path is one route to an HTTPEndpoint (`Tasks`, `Task`, `TaskCompletion`) whose methods are
the endpoint functions below, so Starlette's 405 lists every method of the path in `Allow`
(RFC 9110 section 10.2.1).
"""

import asyncio
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

import anyio
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response

from handlers.cursors import Cursors
from handlers.errors import ProblemError, invalid_input
from handlers.idempotency import idempotent
from handlers.operations import TASK_LIST, Operation
from handlers.responses import task_etag, task_location, task_response
from schemas.problem import FieldError, Problem
from schemas.tasks import ListQuery, TaskCreate, TaskPublic, TaskUpdate
from store import Recording, Store

MAX_BODY_BYTES = 64 * 1024  # docs/api.md: Validation, bodies over 64 KiB are 413
BODY_TIMEOUT_SECONDS = 10  # a declared body must arrive within this (408), however slowly sent
MAX_QUERY_BYTES = 8 * 1024  # a list query string longer than this is 414, as behind nginx
MAX_TASK_ID = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER: ids a browser reads exactly
DEFAULT_QUERY = ListQuery.model_validate({})  # an empty query string (ListQuery is frozen)

EMPTY_BODY = Problem.of(400, "request body is empty; send a JSON object")
OTHER_USER = Problem.of(403, "the user in the path is not the authenticated user")
TASK_NOT_FOUND = Problem.of(404, "task not found")
BODY_TIMEOUT = Problem.of(408, f"the request body did not arrive within {BODY_TIMEOUT_SECONDS} s")
BODY_TOO_LARGE = Problem.of(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
QUERY_TOO_LONG = Problem.of(414, f"query string is longer than {MAX_QUERY_BYTES} bytes")
NOT_JSON_MEDIA = Problem.of(415, "send the body as JSON with Content-Type: application/json")
ENCODED_BODY = Problem.of(415, "send the body without Content-Encoding")


def _json(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content, status, headers, media_type="application/json")


def _decimal(text: str, max_digits: int) -> int | None:
    """`text` as a number if it is 1 to `max_digits` ASCII digits, else None. `str.isdigit()`
    alone also accepts digits `int()` refuses (superscripts such as "²") or reads (other
    scripts' digits), so client text is checked as ASCII first."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def _task_id(request: Request) -> int:
    """The path's task id; anything but a positive integer in range is 404 (no oracle)."""
    task_id = _decimal(request.path_params["task_id"], 16)
    if task_id is not None and 0 < task_id <= MAX_TASK_ID:
        return task_id
    raise ProblemError(TASK_NOT_FOUND)


def _found(task: dict | None) -> dict:
    """The store's answer for one of the caller's tasks; None (no such task for this user,
    docs/api.md: Errors) is 404."""
    if task is None:
        raise ProblemError(TASK_NOT_FOUND)
    return task


async def _run(request: Request, query: Callable, *args):
    """Run the write `query(store, caller, *args)` in a worker thread for the authenticated
    caller, whose user row the query's statement creates or refreshes (store.Caller). The
    request waits for the thread even if it is cancelled (Starlette's run_in_threadpool), so
    a write's outcome is known before anything follows it, such as releasing its
    Idempotency-Key."""
    store: Store = request.app.state.store
    return await run_in_threadpool(query, store, request.state.user, *args)


async def _read(request: Request, query: Callable, *args):
    """Run the read `query(store, caller, *args)` as `_run` does, on the event loop's own
    executor (`asyncio.to_thread`, sized by the app's lifespan): a read has no outcome to wait
    for if the request is cancelled, and this hop costs a third less CPU than anyio's (about
    50 against 75 us per call, docs/performance.md), on every list and get."""
    store: Store = request.app.state.store
    return await asyncio.to_thread(query, store, request.state.user, *args)


Body = TypeVar("Body", bound=BaseModel)


async def _body(request: Request, model: type[Body]) -> Body:
    """The request body validated as `model`: JSON only, without Content-Encoding (415), at
    most 64 KiB (413), complete within BODY_TIMEOUT_SECONDS (408), 400 else."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ProblemError(NOT_JSON_MEDIA)
    if request.headers.get("content-encoding", "identity").strip().lower() != "identity":
        # Not decompressed (no bound on what a small gzip body expands to): RFC 9110 15.5.16.
        raise ProblemError(ENCODED_BODY, headers={"Accept-Encoding": "identity"})
    declared = _decimal(request.headers.get("content-length", ""), 20)
    if declared is not None and declared > MAX_BODY_BYTES:
        raise ProblemError(BODY_TOO_LARGE)
    body = bytearray()
    try:
        with anyio.fail_after(BODY_TIMEOUT_SECONDS):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise ProblemError(BODY_TOO_LARGE)
    except TimeoutError:
        # RFC 9110 section 15.5.9; the unread rest of the body makes the connection unusable.
        raise ProblemError(BODY_TIMEOUT, headers={"Connection": "close"}) from None
    if not body.strip():
        raise ProblemError(EMPTY_BODY)
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


def _if_match(request: Request, task_id: int) -> list[int] | None:
    """The task versions If-Match accepts (RFC 9110 section 13.1.1, strong comparison): the
    versions of this task's ETags it lists; None for no condition, without the header or with
    "*" (any version: the task must exist, which a write of a missing task answers with 404)."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    tags = _tags(header)
    if "*" in tags:
        return None
    versions = []
    for tag in tags:
        task, _, digits = tag.strip('"').partition("-")
        version = _decimal(digits, 9)
        if (
            tag.startswith('"')
            and tag.endswith('"')
            and task == str(task_id)
            and version is not None
        ):
            versions.append(version)
    return versions


@Operation(
    "GET",
    "listTasks",
    "List tasks",
    "Your tasks, filtered by `status` and ordered by `sort` and `order`; ties break on `id` "
    "in the same direction. Unknown query parameters are ignored.",
    200,
    TASK_LIST,
    query=ListQuery,
    headers=("If-None-Match",),
)
async def list_tasks(request: Request) -> Response:
    """GET .../tasks?status=&sort=&order=&limit=&cursor= -> 200, JSON array of tasks, with
    `Link: <...>; rel="next"` when more follow (RFC 8288) and an ETag of the page (304 for a
    matching If-None-Match)."""
    query_string = request.scope["query_string"]
    if len(query_string) > MAX_QUERY_BYTES:
        raise ProblemError(QUERY_TOO_LONG)
    try:
        # The common request, a first page with no options, skips parsing and validation.
        query = (
            DEFAULT_QUERY
            if not query_string
            else ListQuery.model_validate(dict(request.query_params))
        )
    except ValidationError as error:
        raise invalid_input(error) from None
    cursors: Cursors = request.app.state.cursors
    user_id = request.state.user.id
    after = None
    if query.cursor is not None:
        try:
            after = cursors.decode(query.cursor, user_id, query)
        except ValueError as error:
            errors = [FieldError(field="cursor", message=str(error))]
            raise ProblemError(Problem.of(400, str(error), errors=errors)) from None
    page = await _read(request, Store.list_tasks, query, after)
    headers = {"ETag": f'"{page.versions}"'}
    if page.last is not None:
        # A relative reference (RFC 8288 section 3.1): nothing the client sends (Host) or a
        # proxy changes (the scheme) goes into it.
        cursor = cursors.encode(user_id, query, *page.last)
        next_page = request.url.include_query_params(cursor=cursor)
        headers["Link"] = f'<{quote(request.scope["path"])}?{next_page.query}>; rel="next"'
    if _not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return _json(page.body, headers=headers)


@Operation(
    "POST",
    "createTask",
    "Create a task",
    "Creates a task; `Location` names it. Unknown members, and `id`, `user_id`, "
    "`created_at`, `updated_at`, are ignored.",
    201,
    TaskPublic,
    body=TaskCreate,
    headers=("Idempotency-Key",),
)
async def create_task(request: Request) -> Response:
    """POST .../tasks -> 201, the task, with `Location` of the new task (idempotent with an
    Idempotency-Key)."""
    data = await _body(request, TaskCreate)

    async def perform(record: Recording | None) -> Response:
        task = await _run(request, Store.create_task, data, record)
        return task_response(task, 201, Location=task_location(request, task["id"]))

    return await idempotent(request, data.model_dump_json(), perform, status=201)


@Operation(
    "GET",
    "getTask",
    "Get a task",
    "One of your tasks.",
    200,
    TaskPublic,
    headers=("If-None-Match",),
)
async def get_task(request: Request) -> Response:
    """GET .../tasks/{task_id} -> 200, the task (304 when If-None-Match has its ETag)."""
    task_id = _task_id(request)
    task = _found(await _read(request, Store.get_task, task_id))
    if _not_modified(request, task_etag(task)):
        return Response(status_code=304, headers={"ETag": task_etag(task)})
    return task_response(task)


@Operation(
    "PUT",
    "updateTask",
    "Update a task (partial)",
    "Changes only the members sent (PUT and PATCH are the same partial update); "
    "`description: null` and `due_date: null` clear them; `{}` changes nothing.",
    200,
    TaskPublic,
    body=TaskUpdate,
    headers=("If-Match", "Idempotency-Key"),
)
@Operation(
    "PATCH",
    "patchTask",
    "Update a task (partial)",
    "Same as PUT: changes only the members sent.",
    200,
    TaskPublic,
    body=TaskUpdate,
    headers=("If-Match", "Idempotency-Key"),
)
async def update_task(request: Request) -> Response:
    """PUT or PATCH .../tasks/{task_id} -> 200, the task; only the fields sent change.
    With If-Match, only if the task still has that ETag (else 412); idempotent with an
    Idempotency-Key."""
    task_id = _task_id(request)
    data = await _body(request, TaskUpdate)
    versions = _if_match(request, task_id)

    async def perform(record: Recording | None) -> Response:
        changes = data.changes()
        task = await _run(request, Store.update_task, task_id, changes, versions, record)
        return task_response(_found(task))

    return await idempotent(request, data.model_dump_json(exclude_unset=True), perform)


@Operation(
    "PATCH",
    "toggleTask",
    "Toggle completed",
    "Flips `completed` atomically, so concurrent toggles are never lost.",
    200,
    TaskPublic,
    headers=("If-Match", "Idempotency-Key"),
)
async def toggle_task(request: Request) -> Response:
    """PATCH .../tasks/{task_id}/complete -> 200, the task with `completed` flipped
    (idempotent with an Idempotency-Key: a retry does not flip it back)."""
    task_id = _task_id(request)
    versions = _if_match(request, task_id)

    async def perform(record: Recording | None) -> Response:
        task = await _run(request, Store.toggle_task, task_id, versions, record)
        return task_response(_found(task))

    return await idempotent(request, "", perform)


@Operation(
    "DELETE",
    "deleteTask",
    "Delete a task",
    "Deletes one of your tasks.",
    204,
    None,
    headers=("If-Match",),
)
async def delete_task(request: Request) -> Response:
    """DELETE .../tasks/{task_id} -> 204, empty body (412 when If-Match does not match)."""
    task_id = _task_id(request)
    if not await _run(request, Store.delete_task, task_id, _if_match(request, task_id)):
        raise ProblemError(TASK_NOT_FOUND)
    return Response(status_code=204)


class _TaskPath(HTTPEndpoint):
    """A task path of either family. Under `/api/{user_id}` it serves only the token's user:
    another user id is 403 before the endpoint reads or queries anything."""

    async def dispatch(self) -> None:
        path_user = self.scope["path_params"].get("user_id")
        caller = self.scope.get("state", {}).get("user")  # none only on OPTIONS, here a 405
        if path_user is not None and caller is not None and path_user != caller.id:
            raise ProblemError(OTHER_USER)
        await super().dispatch()


class Tasks(_TaskPath):
    """.../tasks: the caller's tasks."""

    get = staticmethod(list_tasks)
    post = staticmethod(create_task)


class Task(_TaskPath):
    """.../tasks/{task_id}: one of the caller's tasks."""

    get = staticmethod(get_task)
    put = patch = staticmethod(update_task)
    delete = staticmethod(delete_task)


class TaskCompletion(_TaskPath):
    """.../tasks/{task_id}/complete: its `completed` flag."""

    patch = staticmethod(toggle_task)
