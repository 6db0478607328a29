"""The real Better Auth (tests/betterauth/server.mjs, better-auth@1.7.7) as a test peer."""

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from tests.servers import ROOT, free_port, require_node_packages

HARNESS = ROOT / "tests" / "betterauth"


def require_node_harness() -> None:
    """Skip when Node or the harness's packages are missing; under CI that is a failure."""
    require_node_packages(HARNESS)


@dataclass
class Account:
    """A Better Auth user signed up through its HTTP API, with its bearer session token."""

    id: str
    email: str
    name: str
    session: str
    cookies: dict[str, str]


class BetterAuthServer:
    """`node server.mjs` on a free loopback port, storing users and keys in `database_url`."""

    def __init__(self, database_url: str, secret: str, alg: str = "EdDSA", **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "DATABASE_URL": database_url,
            "BETTER_AUTH_SECRET": secret,
            "BETTER_AUTH_URL": self.url,
            "JWT_ALG": alg,
            **env,
        }
        self.process: subprocess.Popen | None = None
        # One keep-alive client for every call, which keeps no cookie: Better Auth refuses
        # cookie-carrying POSTs with no Origin, and each call says who it is by its token.
        no_cookies = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        self.http = httpx.Client(base_url=self.url, cookies=no_cookies, timeout=30)

    def start(self) -> "BetterAuthServer":
        self.process = subprocess.Popen(
            ["node", "server.mjs"],
            cwd=HARNESS,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output = []
        for line in self.process.stdout:  # server.mjs prints READY <port> once listening
            output.append(line)
            if line.startswith("READY"):
                return self
        self.stop()  # it closed its output: reap it and close the pipe
        raise RuntimeError(f"Better Auth did not start:\n{''.join(output)}")

    def stop(self) -> None:
        """Stop the server; `start()` starts it again on the same port and database."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.process:
            self.process.stdout.close()

    def close(self) -> None:
        self.stop()
        self.http.close()

    def sign_up(self, name: str = "Ada Lovelace") -> Account:
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        response = self.http.post(
            "/api/auth/sign-up/email",
            json={"email": email, "password": "correct horse battery", "name": name},
        )
        response.raise_for_status()
        return Account(
            id=response.json()["user"]["id"],
            email=email,
            name=name,
            session=response.headers["set-auth-token"],
            cookies=dict(response.cookies),
        )

    def token(self, account: Account) -> str:
        """The JWT of GET /api/auth/token (what `authClient.token()` returns)."""
        response = self.http.get("/api/auth/token", headers=bearer(account.session))
        response.raise_for_status()
        return response.json()["token"]

    def header_token(self, account: Account) -> str:
        """The JWT of the `set-auth-jwt` header of GET /api/auth/get-session."""
        response = self.http.get("/api/auth/get-session", headers=bearer(account.session))
        response.raise_for_status()
        return response.headers["set-auth-jwt"]

    def jwks(self) -> dict:
        return self.http.get("/api/auth/jwks").raise_for_status().json()

    def rotate(self, drop_old: bool = False) -> str:
        """Make a new signing key (new kid); returns the kid."""
        query = "?drop_old=1" if drop_old else ""
        return self.http.post(f"/test/rotate{query}").raise_for_status().json()["kid"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jose_hs256(secret: str, claims: dict, lifetime: int = 900) -> str:
    """An HS256 token signed by the Node `jose` library, as a Next.js route would sign it."""
    result = subprocess.run(
        # `--name=value`: a value starting with `-` would otherwise be read as an option.
        [
            "node",
            "sign-hs256.mjs",
            f"--secret={secret}",
            f"--claims={json.dumps(claims)}",
            f"--exp-seconds={lifetime}",
        ],
        cwd=HARNESS,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()
