"""Problem-details responses for every failure a handler can meet (RFC 9457).

Each fixed problem is a named constant, defined once beside the rule it reports and used alike
by the code that answers it and by the OpenAPI document's examples (handlers/openapi.py).
"""

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from handlers.responses import task_etag
from schemas.problem import PROBLEM_JSON, FieldError, Problem
from store import DatabaseUnavailable, InvalidData, VersionMismatch

log = logging.getLogger("todo.errors")
DATABASE_RETRY_AFTER_SECONDS = 5
CLIENT_CLOSED_REQUEST = 499  # nginx's status, for the log line of a request nobody waits for

TITLE_RULE = "title must be 1-200 characters (after trimming spaces)"
NOT_JSON = Problem.of(400, "request body is not valid JSON")
NOT_AN_OBJECT = Problem.of(400, "request body must be a JSON object")
UNSTORABLE = Problem.of(400, "the request holds a value that cannot be stored")
NO_SUCH_RESOURCE = Problem.of(404, "no such resource")
TASK_CHANGED = Problem.of(412, "the task has changed since you read it")  # + the task
DATABASE_UNAVAILABLE = Problem.of(503, "the database is unavailable, try again shortly")


class ProblemError(Exception):
    """Raised by a handler to answer with `problem` (its status and body) and `headers`."""

    def __init__(self, problem: Problem, headers: dict[str, str] | None = None) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.headers = headers


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> Response:
    """`problem` as an `application/problem+json` response."""
    return Response(problem.body(), problem.status, headers, PROBLEM_JSON)


def _message(field: str, error: ErrorDetails) -> str:
    kind = error["type"]
    if field == "title" and kind in ("string_too_short", "string_too_long"):
        return TITLE_RULE
    if field == "description" and kind == "string_too_long":
        return "description must be at most 1000 characters"
    if kind == "missing":
        return f"{field} is required"
    context = error.get("ctx", {})
    if kind == "value_error":
        return f"{field} {context['error']}"
    if kind == "string_type":
        return f"{field} must be a string"
    if kind == "bool_type":
        return f"{field} must be true or false"
    if kind == "literal_error":
        return f"{field} must be {context['expected']}"
    return f"{field}: {error['msg']}"


def invalid_input(error: ValidationError) -> ProblemError:
    """A 400 ProblemError for a Pydantic ValidationError of a request body or query string:
    NOT_JSON, NOT_AN_OBJECT (a body only), else a problem listing each invalid field in
    `errors` (docs/api.md: Errors)."""
    for item in error.errors():
        if item["type"] == "json_invalid":
            return ProblemError(NOT_JSON)
        if item["type"] in ("model_type", "model_attributes_type"):
            return ProblemError(NOT_AN_OBJECT)
    errors = [
        FieldError(field=str(item["loc"][0]), message=_message(str(item["loc"][0]), item))
        for item in error.errors()
    ]
    return ProblemError(Problem.of(400, "; ".join(e.message for e in errors), errors=errors))


async def on_problem(request: Request, error: ProblemError) -> Response:
    return problem_response(error.problem, error.headers)


async def on_http_exception(request: Request, error: HTTPException) -> Response:
    """Starlette's own 404 (no route) and 405 (with `Allow`: one route per path, so it names
    every method of the path, RFC 9110 section 10.2.1) as problem details."""
    problem = NO_SUCH_RESOURCE
    if error.status_code != 404:
        problem = Problem.of(error.status_code, error.detail)
    return problem_response(problem, error.headers)


async def on_database_unavailable(request: Request, error: DatabaseUnavailable) -> Response:
    """503 with Retry-After: the database is down, slow or the pool is exhausted."""
    log.warning("database unavailable: %s", error)
    headers = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
    return problem_response(DATABASE_UNAVAILABLE, headers)


async def on_version_mismatch(request: Request, error: VersionMismatch) -> Response:
    """412: If-Match named another version; the body carries the task as it is now."""
    current = error.current
    task = json.loads(current["body"])
    problem = TASK_CHANGED.model_copy(update={"task": task})
    return problem_response(problem, {"ETag": task_etag(current)})


async def on_invalid_data(request: Request, error: InvalidData) -> Response:
    """400: a value passed validation but the database refused it (defence in depth: the
    schemas reject NUL and lone surrogates first)."""
    log.warning("database refused a value: %r", error)
    return problem_response(UNSTORABLE)


async def on_client_disconnect(request: Request, error: ClientDisconnect) -> Response:
    """The client left while sending its body: nothing was stored and nobody reads the answer.
    Logged as 499, not as an unhandled error, so clients cannot fill the log with fake 500s."""
    return Response(status_code=CLIENT_CLOSED_REQUEST)


# Exception class -> handler, for Starlette(exception_handlers=...).
EXCEPTION_HANDLERS: dict[type[Exception], Callable[..., Awaitable[Response]]] = {
    ProblemError: on_problem,
    HTTPException: on_http_exception,
    DatabaseUnavailable: on_database_unavailable,
    VersionMismatch: on_version_mismatch,
    InvalidData: on_invalid_data,
    ClientDisconnect: on_client_disconnect,
}
