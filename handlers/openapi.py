"""The OpenAPI 3.1 document, built from the app's route table and the handlers' Pydantic models.

`document(routes)` walks the Starlette routes, so a path cannot be served without being
documented or documented without being served: the endpoint of every served method carries its
`Operation` (handlers/operations.py; else `UndocumentedRoute`), routes with
`include_in_schema=False` (the document and the docs page) are left out, and HEAD (Starlette's
implicit twin of GET) is not listed. What a route can answer follows from its path and its
operation (plus `Operation.errors`):

- every operation that needs a token (all of `/api`): 401 (with `WWW-Authenticate`), 500,
  503 (with `Retry-After`);
- `{user_id}` in the path (the user-in-path family): 403 when it is not the token's user;
- `{task_id}` in the path: 404 (no such task for this user, or not an id at all);
- a request body: 400, 413, 415; a query model: 400, 414.

Each problem's example is the named problem its code answers (handlers/errors.py), not a copy.

Shapes come from schemas/ through Pydantic's JSON Schema (`models_json_schema` with
`#/components/schemas/...` references), never a copy. Links from every operation that returns a
task to those that take a task id let tools (Schemathesis' stateful mode) chain real calls.

`GET /openapi.json` (`openapi_json`) serves the document of the running app's routes.
"""

import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from handlers import errors, idempotency, tasks
from handlers.errors import TITLE_RULE
from handlers.operations import TASK_LIST, Operation, operations_of
from middleware import auth, request_log
from schemas.health import Health, Ready
from schemas.problem import PROBLEM_JSON, FieldError, Problem
from schemas.tasks import TaskCreate, TaskPublic, TaskUpdate

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
REF = "#/components/schemas/{model}"
# The methods an HTTPEndpoint may serve (HEAD aside), in the order a path lists them.
_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS", "QUERY")


class UndocumentedRoute(LookupError):
    """A route serves a method for which its endpoint has no `Operation`."""


_DESCRIPTION = """\
A multi-user task API for apps whose users sign in with Better Auth. Send
`Authorization: Bearer <JWT>` (a Better Auth `jwt` plugin token, or an HS256 token signed with
`BETTER_AUTH_SECRET`) on every `/api` request; each user sees only their own tasks.

Two route families behave the same: `/api/tasks...` acts for the token's user, and
`/api/{user_id}/tasks...` does too once the path's `user_id` is the token's user (else 403).

Every error is RFC 9457 problem details (`application/problem+json`) with `detail`; every
response carries `X-Request-ID`. Times are UTC, ISO 8601 with offset."""

_HEADERS = {
    "X-Request-ID": {
        "description": "The request's id (the client's own, if it sent a sane one); it is in "
        "the server's log line for the request.",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    "WWW-Authenticate": {
        "description": '`Bearer` without a token; `Bearer error="invalid_token"` for an '
        "invalid, forged or expired one (RFC 6750).",
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Location": {
        "description": "Path of the new task.",
        "required": True,
        "schema": {"type": "string", "format": "uri-reference"},
    },
    "ETag": {
        "description": "Strong entity tag of the task (or of the page): send it back in "
        "If-Match to change the task only if nobody else did, or in If-None-Match for a 304.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'With more tasks to come: `<path?query of the next page>; rel="next"` '
        "(RFC 8288), a relative reference to resolve against the API's URL; absent on the "
        "last page.",
        "required": False,
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response of an earlier request with "
        "the same Idempotency-Key.",
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    },
}

# Request headers an operation may honour (Operation.headers), as header parameters.
_REQUEST_HEADERS = {
    "If-Match": {
        "description": "Apply the change only if the task's ETag is one of these (or `*`); "
        "else 412 with the current task (RFC 9110 section 13.1.1).",
        "schema": {"type": "string"},
    },
    "If-None-Match": {
        "description": "An ETag from an earlier response: 304 Not Modified if it still matches.",
        "schema": {"type": "string"},
    },
    "Idempotency-Key": {
        "description": "A unique key (1-255 printable ASCII characters, e.g. a UUID): a retry "
        "with the same key and request replays the stored response instead of repeating the "
        "work (kept 24 hours).",
        "schema": {"type": "string", "pattern": idempotency.KEY_PATTERN},
    },
}

# A changed task, as the 412 example carries it.
_TASK_NOW = {
    "id": 1,
    "title": "Buy oat milk",
    "description": None,
    "completed": False,
    "due_date": None,
    "completed_at": None,
    "created_at": "2030-01-01T09:00:00Z",
    "updated_at": "2030-01-01T09:05:00Z",
}

# Status -> (description, examples, headers) of each problem details response. The examples are
# the named problems the code answers (handlers/errors.py), not copies of their text.
_PROBLEMS: dict[int, tuple[str, dict[str, Problem], tuple[str, ...]]] = {
    400: (
        "Invalid input; `errors` lists each invalid field.",
        {
            "invalid field": Problem.of(
                400, TITLE_RULE, errors=[FieldError(field="title", message=TITLE_RULE)]
            ),
            "not JSON": errors.NOT_JSON,
        },
        (),
    ),
    401: (
        "No bearer token, or an invalid, forged or expired one.",
        {"no token": auth.MISSING_TOKEN, "bad token": auth.INVALID_TOKEN},
        ("WWW-Authenticate",),
    ),
    403: (
        "The path's `user_id` is not the token's user.",
        {"another user": tasks.OTHER_USER},
        (),
    ),
    404: (
        "No such task for you: another user's task, a missing one and an id that is not an "
        "integer from 1 to 2^53 - 1 all look the same.",
        {"not found": tasks.TASK_NOT_FOUND},
        (),
    ),
    409: (
        "A request with the same Idempotency-Key is still in progress.",
        {"in progress": idempotency.KEY_IN_USE},
        ("Retry-After",),
    ),
    412: (
        "If-Match did not match: the task changed since it was read. `task` is the task as "
        "it is now (and `ETag` its tag).",
        {"changed": errors.TASK_CHANGED.model_copy(update={"task": _TASK_NOW})},
        ("ETag",),
    ),
    413: (
        f"The body is larger than {tasks.MAX_BODY_BYTES // 1024} KiB.",
        {"too large": tasks.BODY_TOO_LARGE},
        (),
    ),
    414: (
        f"The query string is longer than {tasks.MAX_QUERY_BYTES // 1024} KiB.",
        {"too long": tasks.QUERY_TOO_LONG},
        (),
    ),
    415: (
        "The body was not sent as `Content-Type: application/json`.",
        {"not JSON": tasks.NOT_JSON_MEDIA},
        (),
    ),
    422: (
        "The Idempotency-Key was used before for a different request.",
        {"reused key": idempotency.KEY_REUSED},
        (),
    ),
    500: (
        "A bug; `request_id` finds the traceback in the server's log.",
        {
            "bug": request_log.INTERNAL_ERROR.model_copy(
                update={"request_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
            ),
        },
        (),
    ),
    503: (
        "The database, or Better Auth's JWKS for a new signing key, is unreachable, too slow "
        "or busy; retry after `Retry-After` seconds.",
        {"database": errors.DATABASE_UNAVAILABLE},
        ("Retry-After",),
    ),
}


def _headers(*names: str) -> dict:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Request-ID", *names)}


def _ref(model: type[BaseModel] | str) -> dict:
    return {"$ref": REF.format(model=model if isinstance(model, str) else model.__name__)}


def _problem(status: int) -> dict:
    description, examples, headers = _PROBLEMS[status]
    values = {
        name: {"value": problem.model_dump(mode="json", exclude_none=True)}
        for name, problem in examples.items()
    }
    return {
        "description": description,
        "headers": _headers(*headers),
        "content": {PROBLEM_JSON: {"schema": _ref(Problem), "examples": values}},
    }


def _components() -> dict:
    """`components`: the models' JSON Schemas, the shared headers, the bearer scheme."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (TaskCreate, "validation"),
        (TaskUpdate, "validation"),
        (TaskPublic, "serialization"),
        (Problem, "serialization"),
        (Health, "serialization"),
        (Ready, "serialization"),
    ]
    _, definitions = models_json_schema(models, ref_template=REF)
    schemas = definitions["$defs"]
    schemas[TASK_LIST] = {"type": "array", "items": _ref(TaskPublic), "title": TASK_LIST}
    return {
        "schemas": schemas,
        "headers": _HEADERS,
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A Better Auth `jwt` plugin token (EdDSA, ES256, ES512, RS256, "
                "PS256; checked against the JWKS) or an HS256 token signed with "
                "BETTER_AUTH_SECRET.",
            }
        },
    }


def _query_parameters(model: type[BaseModel]) -> list[dict]:
    """Each field of `model` as an optional query parameter; a query string cannot say null, so
    an optional field is documented by its non-null schema."""
    parameters = []
    for name, schema in model.model_json_schema()["properties"].items():
        schema = dict(schema)
        description = schema.pop("description", None)
        schema.pop("title", None)
        if "anyOf" in schema:
            branches = [b for b in schema.pop("anyOf") if b != {"type": "null"}]
            schema = (
                {**branches[0], **schema} if len(branches) == 1 else {"anyOf": branches, **schema}
            )
            if schema.get("default", ...) is None:
                del schema["default"]
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": description,
                "schema": schema,
            }
        )
    return parameters


_PATH_PARAMETERS = {
    "user_id": {
        "description": "Your own user id (the token's `sub`); any other is 403.",
        "schema": {"type": "string", "minLength": 1},
    },
    "task_id": {
        "description": "The task's `id`: a 64-bit integer, at most 2^53 - 1 (exact in JavaScript).",
        "schema": {
            "type": "integer",
            "format": "int64",
            "minimum": 1,
            "maximum": tasks.MAX_TASK_ID,
        },
    },
}


@dataclass(frozen=True)
class _Served:
    """One documented method of one route."""

    route: Route
    operation: Operation

    @property
    def method(self) -> str:
        return self.operation.method

    @property
    def user_in_path(self) -> bool:  # the /api/{user_id} family
        return "user_id" in self.route.param_convertors

    @property
    def on_task(self) -> bool:
        return "task_id" in self.route.param_convertors

    @property
    def operation_id(self) -> str:
        return self.operation.operation_id + ("ForUser" if self.user_in_path else "")

    def errors(self) -> list[int]:
        """The error statuses this operation can answer (see the module docstring)."""
        operation = self.operation
        statuses = list(operation.errors)
        if not operation.authenticated:
            return statuses
        statuses += [401, 500, 503]
        if operation.body is not None or operation.query is not None:
            statuses.append(400)
        if operation.query is not None:
            statuses.append(414)
        if self.user_in_path:
            statuses.append(403)
        if self.on_task:
            statuses.append(404)
        if operation.body is not None:
            statuses += [413, 415]
        if "If-Match" in operation.headers:
            statuses.append(412)
        if "Idempotency-Key" in operation.headers:
            statuses += [400, 409, 422]
        return sorted(set(statuses))

    def links(self, served: list["_Served"]) -> dict:
        """Links from a response holding a task to each operation of the family on its id."""
        parameters = {"task_id": "$response.body#/id"}
        if self.user_in_path:
            parameters["user_id"] = "$request.path.user_id"
        return {
            other.operation.operation_id[0].upper() + other.operation.operation_id[1:]: {
                "operationId": other.operation_id,
                "parameters": parameters,
                "description": f"{other.operation.summary}: the task this response holds.",
            }
            for other in served
            if other.on_task and other.user_in_path == self.user_in_path
        }

    def describe(self, served: list["_Served"]) -> dict:
        """The OpenAPI operation object."""
        operation = self.operation
        result: dict[str, Any] = {
            "operationId": self.operation_id,
            "summary": operation.summary,
            "description": operation.description,
            "tags": ["health"]
            if not operation.authenticated
            else ["tasks (user in path)"]
            if self.user_in_path
            else ["tasks"],
            "parameters": [
                {"name": name, "in": "path", "required": True, **_PATH_PARAMETERS[name]}
                for name in self.route.param_convertors
            ]
            + (_query_parameters(operation.query) if operation.query else [])
            + [
                {"name": name, "in": "header", "required": False, **_REQUEST_HEADERS[name]}
                for name in operation.headers
            ],
        }
        if not operation.authenticated:
            result["security"] = []
        if operation.body is not None:
            result["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(operation.body)}},
            }
        headers = ["Location"] if operation.status == 201 else []
        if operation.response in (TaskPublic, TASK_LIST):
            headers.append("ETag")
        if operation.response == TASK_LIST:
            headers.append("Link")
        if "Idempotency-Key" in operation.headers:
            headers.append("Idempotent-Replayed")
        success: dict = {"description": operation.summary, "headers": _headers(*headers)}
        if operation.response is not None:
            success["content"] = {"application/json": {"schema": _ref(operation.response)}}
        if operation.response is TaskPublic:
            success["links"] = self.links(served)
        result["responses"] = {str(operation.status): success}
        if "If-None-Match" in operation.headers:
            result["responses"]["304"] = {
                "description": "Not Modified: If-None-Match matched the current ETag.",
                "headers": _headers("ETag"),
            }
        result["responses"].update({str(status): _problem(status) for status in self.errors()})
        return result


def _endpoints(route: Route) -> list[tuple[str, Callable]]:
    """(method, endpoint function) of each method `route` serves, but HEAD (GET's twin)."""
    endpoint = route.endpoint
    if inspect.isclass(endpoint):  # an HTTPEndpoint: a function per method
        served = [method for method in _METHODS if hasattr(endpoint, method.lower())]
        return [(method, getattr(endpoint, method.lower())) for method in served]
    return [(method, endpoint) for method in sorted((route.methods or {"GET"}) - {"HEAD"})]


def _served(routes: Iterable[BaseRoute]) -> list[_Served]:
    found = []
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        for method, endpoint in _endpoints(route):
            operations = operations_of(endpoint)
            if method not in operations:
                raise UndocumentedRoute(
                    f"{method} {route.path}: decorate its endpoint with an Operation "
                    "(handlers/operations.py)"
                )
            found.append(_Served(route, operations[method]))
    return found


def document(routes: Iterable[BaseRoute]) -> dict:
    """The OpenAPI 3.1 document of `routes` (a Starlette route table). Raises UndocumentedRoute."""
    served = _served(routes)
    paths: dict[str, dict] = {}
    for one in served:
        paths.setdefault(one.route.path_format, {})[one.method.lower()] = one.describe(served)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Todo API", "version": API_VERSION, "description": _DESCRIPTION},
        "tags": [
            {"name": "tasks", "description": "Your tasks; the user is the token's."},
            {
                "name": "tasks (user in path)",
                "description": "The same, with your user id in the path (another id is 403).",
            },
            {"name": "health", "description": "Probes for load balancers; no token."},
        ],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": _components(),
    }


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json -> the document of the running app's route table (built once)."""
    state = request.app.state
    body = getattr(state, "openapi_json", None)
    if body is None:
        body = state.openapi_json = json.dumps(document(request.app.routes)).encode()
    return Response(body, media_type="application/json")
