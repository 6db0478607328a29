"""Test users and their HS256 tokens, signed like a Next.js route signs them (shared by the
fixtures in conftest.py and by the benchmark in bench/)."""

import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

SECRET = secrets.token_urlsafe(48)


def make_token(claims: dict, secret: str = SECRET, lifetime: int = 600, **kwargs) -> str:
    """An HS256 token with `claims` plus `exp` (unless `claims` sets it), like a Next.js route's."""
    claims = {"exp": int(time.time()) + lifetime, "iat": int(time.time()), **claims}
    return jwt.encode(claims, secret, algorithm=kwargs.pop("algorithm", "HS256"), **kwargs)


@dataclass
class User:
    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_user(**claims) -> User:
    """A user never seen before, with a token carrying `sub`, `email` and `name` (overridable)."""
    user_id = f"user-{uuid.uuid4().hex}"
    claims = {"sub": user_id, "email": f"{user_id}@example.com", "name": "Test User", **claims}
    return User(user_id, make_token(claims))
