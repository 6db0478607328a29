"""Pydantic shapes of requests, responses and errors; pure data, no I/O."""
