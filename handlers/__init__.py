"""Endpoint functions: parse and validate with Pydantic, call the store, serialise the answer."""
