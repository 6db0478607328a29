"""Request id, one log line per request, and the last-resort 500 (docs/api.md: Operations).

Pure ASGI, two layers: `RequestLogMiddleware` is the outermost one, so every request has its
line, CORS preflights that CORSMiddleware answers itself included; `InternalErrorMiddleware` sits
inside CORSMiddleware, so the 500 it makes of an unhandled exception still carries the CORS
headers a browser needs to let the frontend read it. The line carries method, path (never the
query string or headers, so never a token), status, duration in milliseconds and the request
id, which is also sent back in `X-Request-ID`. Log lines are escaped by `OneLineFormatter`.

The request id reaches every log line of its request, not only that one: the middleware sets
`REQUEST_ID` (a context variable, so it follows the request into the threads its store calls run
in) and `RequestIdFilter` puts it into each record, where `LOG_FORMAT` writes it
(docs/operations.md: Logging).
"""

import logging
import re
import secrets
import sys
import textwrap
import time
from contextvars import ContextVar
from typing import TextIO

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.problem import PROBLEM_JSON, Problem

log = logging.getLogger("todo.request")
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
INTERNAL_ERROR = Problem.of(500, "internal error")  # + the request id
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s request_id=%(request_id)s"

# The id of the request being served; None outside a request (start-up, background tasks).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.fullmatch(candidate):
                return candidate
    return secrets.token_hex(16)


def printable(text: str) -> str:
    """`text` with every character that is not printable (CR, LF, escape sequences, U+2028 ...)
    written as its Python escape, so the text stays on one line (CWE-117)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class OneLineFormatter(logging.Formatter):
    """A logging formatter under which no client can forge a log line (CWE-117): every value a
    client sent and that a message carries (a path, a claim, a database error quoting a value)
    is escaped by `printable`, and the lines of a traceback are indented, so only a record's
    own first line starts at the margin."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, exc_info) -> str:
        return textwrap.indent(super().formatException(exc_info), "    ", lambda line: True)

    def formatStack(self, stack_info: str) -> str:
        return textwrap.indent(stack_info, "    ", lambda line: True)


class RequestIdFilter(logging.Filter):
    """Sets `record.request_id` on every record: the id of the request it was logged in, or
    "-" outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


def log_handler(stream: TextIO | None = None) -> logging.Handler:
    """The app's log handler: one escaped line per record (OneLineFormatter) in LOG_FORMAT,
    with the request id, written to `stream` (standard error by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    return handler


class RequestLogMiddleware:
    """Gives each HTTP request an id (the client's `X-Request-ID` if it is 1-64 characters of
    `A-Za-z0-9._-`, else 32 random hex digits), sends it back in `X-Request-ID` and logs one
    INFO line when the request ends (status 0: no response was started). The id is
    `REQUEST_ID` while the request runs, so every line logged for it carries the id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        current = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            # The id ends the line as on every other (LOG_FORMAT).
            log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed_ms)
            REQUEST_ID.reset(current)


class InternalErrorMiddleware:
    """Turns an unhandled exception into a 500 problem response that names the request id
    (set by RequestLogMiddleware); the traceback goes to the log, never to the client. A
    response already started is cut short instead (the exception propagates)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if scope["type"] != "http":
                raise
            request_id = scope.get("state", {}).get("request_id")
            log.exception("unhandled error")
            if started:
                raise
            problem = INTERNAL_ERROR.model_copy(update={"request_id": request_id})
            await Response(problem.body(), 500, media_type=PROBLEM_JSON)(scope, receive, send)
