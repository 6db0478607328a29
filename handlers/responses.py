"""A stored task as an HTTP answer: its JSON body, its ETag, and the Location of a new one."""

from collections.abc import Mapping
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response


def task_etag(task: Mapping) -> str:
    """Strong ETag of a stored task (`{id, version, ...}`): its id and version, which grows on
    every change (RFC 9110 section 8.8.3)."""
    return f'"{task["id"]}-{task["version"]}"'


def task_location(request: Request, task_id: int) -> str:
    """`Location` of a task created at this collection path. Percent-encoded: the user-in-path
    family's path holds the user id, which may be any text (non-Latin-1, control characters)
    that a header cannot carry as is."""
    return f"{quote(request.scope['path'].rstrip('/'))}/{task_id}"


def task_response(task: Mapping, status: int = 200, **headers: str) -> Response:
    """A task answer of the store (`{id, version, body}`, `body` its JSON) as the JSON
    response, with its ETag and `headers`."""
    return Response(task["body"], status, {"ETag": task_etag(task), **headers}, "application/json")
