"""Task endpoints of both route families (docs/api.md: Endpoints).

Family A `/api/tasks...` acts for the token's user; family B `/api/{user_id}/tasks...` does the
same after checking the path's user is the token's user (else 403, before any query).
"""

import functools
from collections.abc import Callable
from urllib.parse import quote

import anyio
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from handlers.cursors import Cursors
from handlers.errors import ProblemError, invalid_input
from handlers.idempotency import idempotent, task_location, task_response
from schemas.problem import FieldError
from schemas.tasks import ListQuery, TaskCreate, TaskUpdate, task_etag
from store import Store, Versions

MAX_BODY_BYTES = 64 * 1024  # docs/api.md: Validation, bodies over 64 KiB are 413
BODY_TIMEOUT_SECONDS = 10  # a declared body must arrive within this (408), however slowly sent
MAX_QUERY_BYTES = 8 * 1024  # a list query string longer than this is 414, as behind nginx
MAX_TASK_ID = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER: ids a browser reads exactly
DEFAULT_QUERY = ListQuery.model_validate({})  # an empty query string (ListQuery is frozen)


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
    raise ProblemError(404, "task not found")


async def _run(request: Request, query: Callable, *args):
    """Run `query(store, user_id, *args)` in the thread pool for the authenticated caller,
    whose user row it creates or refreshes (Store.acting_for)."""
    caller = request.state.user
    store: Store = request.app.state.store

    def work():
        with store.acting_for(caller.id, caller.email, caller.name, caller.issued_at):
            return query(store, caller.id, *args)

    return await run_in_threadpool(work)


def for_path_user(endpoint: Callable) -> Callable:
    """Family B: `endpoint` behind a check that the path's `user_id` is the caller, else 403
    before anything else is read or queried (docs/api.md: Endpoints)."""

    @functools.wraps(endpoint)
    async def checked(request: Request) -> Response:
        if request.path_params["user_id"] != request.state.user.id:
            raise ProblemError(403, "the user in the path is not the authenticated user")
        return await endpoint(request)

    return checked


async def _body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The request body validated as `model`: JSON only, without Content-Encoding (415), at
    most 64 KiB (413), complete within BODY_TIMEOUT_SECONDS (408), 400 else."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ProblemError(415, "send the body as JSON with Content-Type: application/json")
    if request.headers.get("content-encoding", "identity").strip().lower() != "identity":
        # Not decompressed (no bound on what a small gzip body expands to): RFC 9110 15.5.16.
        raise ProblemError(
            415, "send the body without Content-Encoding", headers={"Accept-Encoding": "identity"}
        )
    declared = _decimal(request.headers.get("content-length", ""), 20)
    if declared is not None and declared > MAX_BODY_BYTES:
        raise ProblemError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    try:
        with anyio.fail_after(BODY_TIMEOUT_SECONDS):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise ProblemError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    except TimeoutError:
        # RFC 9110 section 15.5.9; the unread rest of the body makes the connection unusable.
        raise ProblemError(
            408,
            f"the request body did not arrive within {BODY_TIMEOUT_SECONDS} s",
            headers={"Connection": "close"},
        ) from None
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


async def list_tasks(request: Request) -> Response:
    """GET .../tasks?status=&sort=&order=&limit=&cursor= -> 200, JSON array of tasks, with
    `Link: <...>; rel="next"` when more follow (RFC 8288) and an ETag of the page (304 for a
    matching If-None-Match)."""
    query_string = request.scope["query_string"]
    if len(query_string) > MAX_QUERY_BYTES:
        raise ProblemError(414, f"query string is longer than {MAX_QUERY_BYTES} bytes")
    try:
        # The common request, a first page with no options, skips parsing and validation.
        query = (
            DEFAULT_QUERY
            if not query_string
            else ListQuery.model_validate(dict(request.query_params))
        )
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
    page = await _run(request, Store.list_tasks, query, after)
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
