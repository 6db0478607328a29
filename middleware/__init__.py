"""Pure ASGI middleware: bearer-token authentication and per-request logging."""
