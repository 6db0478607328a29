"""What a route cannot tell the OpenAPI document about its endpoint, written on the endpoint.

An endpoint function is decorated with one `Operation` per HTTP method it serves:

    @Operation("GET", "getTask", "Get a task", "One of your tasks.", 200, TaskPublic)
    async def get_task(request): ...

and handlers/openapi.py reads them back with `operations_of(endpoint)` when it walks the routes,
so an endpoint's contract sits next to its code.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

TASK_LIST = "TaskList"  # a success body that is a JSON array of TaskPublic
_ATTRIBUTE = "operations"  # on the endpoint function: {method: Operation}

Endpoint = TypeVar("Endpoint", bound=Callable)


@dataclass(frozen=True)
class Operation:
    """One method of one endpoint, as an OpenAPI operation. The errors that follow from the
    route (its path parameters, `body`, `query`, `headers`, `authenticated`) are derived by
    handlers/openapi.py; `errors` lists only the others."""

    method: str  # GET, POST, PUT, PATCH or DELETE
    operation_id: str
    summary: str
    description: str
    status: int  # the success status
    response: type[BaseModel] | str | None  # body of the success: a model, TASK_LIST or none
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    authenticated: bool = True
    errors: tuple[int, ...] = ()
    headers: tuple[str, ...] = ()  # request headers it honours: If-Match, If-None-Match, ...

    def __call__(self, endpoint: Endpoint) -> Endpoint:
        """Decorate `endpoint` with this operation; returns `endpoint` itself."""
        vars(endpoint).setdefault(_ATTRIBUTE, {})[self.method] = self
        return endpoint


def operations_of(endpoint: Callable) -> dict[str, Operation]:
    """`{method: Operation}` of the operations `endpoint` was decorated with (maybe none)."""
    return getattr(endpoint, _ATTRIBUTE, {})
