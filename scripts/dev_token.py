"""Print a development bearer token for a user: `python scripts/dev_token.py alice`.

Signs HS256 with BETTER_AUTH_SECRET (from the environment, else from .env), valid one hour,
with the claims a Next.js route typically sets: sub, email, name, iat, exp.
"""

import os
import sys
import time
from pathlib import Path

import jwt
from dotenv import load_dotenv

LIFETIME_SECONDS = 3600


def dev_token(user_id: str, secret: str) -> str:
    """An HS256 JWT for `user_id`, valid LIFETIME_SECONDS from now."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "email": f"{user_id}@example.com",
        "name": user_id.capitalize(),
        "iat": now,
        "exp": now + LIFETIME_SECONDS,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def main() -> None:
    load_dotenv(Path(__file__).resolve().parent.parent / ".env")
    secret = os.getenv("BETTER_AUTH_SECRET")
    if not secret:
        sys.exit("BETTER_AUTH_SECRET is not set (run `make run` once to create .env)")
    user_id = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else "alice"
    print(dev_token(user_id, secret))


if __name__ == "__main__":
    main()
