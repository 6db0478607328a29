"""Limits for slow clients at the connection level, below ASGI (docs/security.md: Slow clients).

uvicorn times out only a kept-alive connection that stays silent after a response
(`--timeout-keep-alive`). A connection that sends nothing after connecting, or its request line
and headers a byte at a time (slowloris), is held for ever, and enough of them use up the
process's file descriptors, so that normal requests are refused. `HeadTimeoutProtocol` is
uvicorn's own httptools protocol plus one timer: the request head must be complete within
HEAD_TIMEOUT_SECONDS of the connection opening or of the request's first byte, else the
connection is closed. Select it with `uvicorn --http middleware.slow_clients:HeadTimeoutProtocol`
(the Procfile does). A body that never arrives is the app's to time out (handlers/tasks.py, 408).

Importing this module also raises the soft limit on open files to the hard one, as the Go runtime
does at start-up: the soft default (often 1024) is far below what a server's hard limit allows.
"""

import resource

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT_SECONDS = 10


def raise_open_file_limit() -> int:
    """Set the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. macOS caps an infinite hard limit
            pass
    return soft


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request line and headers are
    not complete HEAD_TIMEOUT_SECONDS after it opened or after the request's first byte."""

    _head_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a kept-alive connection's next request
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


raise_open_file_limit()
