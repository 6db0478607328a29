"""Interop with the real Better Auth: JWKS-verified tokens of the `jwt` plugin for
every key type, key rotation, JWKS outages, jose-signed HS256 tokens, and confused or forged
tokens."""

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.better_auth import BetterAuthServer, bearer, jose_hs256, require_node_harness
from tests.helpers import rows, server_env
from tests.servers import AppServer, PostgresDatabase
from tests.users import SECRET

ALGORITHMS = ["EdDSA", "ES256", "ES512", "RS256", "PS256"]


class Stack:
    """A Better Auth server and our API sharing one PostgreSQL database and secret; the API
    knows Better Auth only through BETTER_AUTH_URL."""

    def __init__(self, admin_url: str, alg: str, **auth_env: str) -> None:
        self.database = PostgresDatabase(admin_url)
        self.auth = BetterAuthServer(self.database.url, SECRET, alg, **auth_env)
        env = server_env(self.database.url, BETTER_AUTH_URL=self.auth.url)
        # Both start at once: the API fetches the JWKS only when a token needs it.
        self.api = AppServer(env).start(wait=False)
        self.auth.start()
        self.api.wait_ready()
        self.http = httpx.Client(base_url=self.api.url, timeout=30)

    def call(self, method: str, path: str, token: str, **kwargs) -> httpx.Response:
        return self.http.request(method, path, headers=bearer(token), **kwargs)

    def close(self) -> None:
        self.http.close()
        self.api.stop()
        self.auth.close()
        self.database.drop()


def running_stack(admin_url: str, alg: str):
    """Yield a started Stack for `alg`, closing it afterwards (body of the stack fixtures)."""
    require_node_harness()
    built = Stack(admin_url, alg)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="module", params=ALGORITHMS)
def stack(request, postgres_admin_url):
    yield from running_stack(postgres_admin_url, request.param)


@pytest.fixture(scope="module")
def eddsa(postgres_admin_url):
    yield from running_stack(postgres_admin_url, "EdDSA")


def header_of(token: str) -> dict:
    return jwt.get_unverified_header(token)


def task_flow(stack: Stack, token: str, prefix: str = "/api") -> dict:
    """Create, list, get, update, toggle and delete one task; returns the created task."""
    created = stack.call("POST", f"{prefix}/tasks", token, json={"title": "from Better Auth"})
    assert created.status_code == 201, created.text
    task = created.json()
    path = f"{prefix}/tasks/{task['id']}"
    assert [t["id"] for t in stack.call("GET", f"{prefix}/tasks", token).json()] == [task["id"]]
    assert stack.call("GET", path, token).json() == task
    assert stack.call("PUT", path, token, json={"title": "renamed"}).json()["title"] == "renamed"
    assert stack.call("PATCH", f"{path}/complete", token).json()["completed"] is True
    assert stack.call("DELETE", path, token).status_code == 204
    assert stack.call("GET", path, token).status_code == 404
    return task


def test_jwt_plugin_tokens_run_the_whole_flow(stack):
    alice, bob = stack.auth.sign_up("Alice"), stack.auth.sign_up("Bob")
    for account in (alice, bob):
        for token in (stack.auth.token(account), stack.auth.header_token(account)):
            assert header_of(token)["alg"] == stack.auth.env["JWT_ALG"]
            task_flow(stack, token)
            task_flow(stack, token, prefix=f"/api/{account.id}")
    users = rows_of(
        stack,
        "SELECT id, email, name FROM users WHERE id IN (:a, :b) ORDER BY name",
        a=alice.id,
        b=bob.id,
    )
    assert users == [
        {"id": alice.id, "email": alice.email, "name": "Alice"},
        {"id": bob.id, "email": bob.email, "name": "Bob"},
    ]


def test_better_auth_users_are_isolated(stack):
    alice, bob = stack.auth.sign_up("Alice"), stack.auth.sign_up("Bob")
    alice_token, bob_token = stack.auth.token(alice), stack.auth.token(bob)
    task = stack.call("POST", "/api/tasks", alice_token, json={"title": "private"}).json()
    path = f"/api/tasks/{task['id']}"
    assert stack.call("GET", "/api/tasks", bob_token).json() == []
    for method in ("GET", "DELETE"):
        assert stack.call(method, path, bob_token).status_code == 404
    assert stack.call("PATCH", f"{path}/complete", bob_token).status_code == 404
    assert stack.call("PUT", path, bob_token, json={"title": "x"}).status_code == 404
    assert stack.call("GET", f"/api/{alice.id}/tasks", bob_token).status_code == 403
    assert stack.call("GET", path, alice_token).json() == task


def rows_of(stack: Stack, sql: str, **params) -> list[dict]:
    from sqlalchemy import create_engine

    engine = create_engine(stack.database.url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        return rows(engine, sql, **params)
    finally:
        engine.dispose()


def test_rotated_key_is_accepted_without_restart(eddsa):
    account = eddsa.auth.sign_up()
    before = eddsa.auth.token(account)
    assert eddsa.call("GET", "/api/tasks", before).status_code == 200  # caches the key set
    new_kid = eddsa.auth.rotate()
    after = eddsa.auth.token(account)
    assert header_of(after)["kid"] == new_kid != header_of(before)["kid"]
    assert eddsa.call("GET", "/api/tasks", after).status_code == 200
    assert eddsa.call("GET", "/api/tasks", before).status_code == 200  # old key still published


@pytest.mark.parametrize("claim", ["sub", "user_id", "userId", "id"])
def test_jose_hs256_tokens_in_real_claim_shapes(eddsa, claim):
    user_id = f"jose-{claim}-{time.time_ns()}"
    token = jose_hs256(SECRET, {claim: user_id, "email": f"{user_id}@example.com", "name": "J"})
    assert header_of(token) == {"alg": "HS256"}
    task_flow(eddsa, token)
    task_flow(eddsa, token, prefix=f"/api/{user_id}")


def test_jose_hs256_expired_and_wrong_secret_are_401(eddsa):
    expired = jose_hs256(SECRET, {"sub": "late"}, lifetime=-120)
    wrong = jose_hs256("w" * 48, {"sub": "forger"})
    for token in (expired, wrong):
        response = eddsa.call("GET", "/api/tasks", token)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("secret", ["-" + "s" * 47, "--" + "x" * 46, "-" * 48])
def test_jose_signs_with_secrets_that_look_like_options(secret):
    """A random secret starts with `-` about one time in 64 (token_urlsafe's alphabet); Node's
    parseArgs must still read it as the value of --secret."""
    require_node_harness()
    token = jose_hs256(secret, {"sub": "dash", "claims": "--claims"})
    claims = jwt.decode(token, secret.encode(), algorithms=["HS256"])
    assert claims["sub"] == "dash" and claims["claims"] == "--claims"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_key(key: bytes, header: dict, claims: dict) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def forged_claims(stack: Stack, user_id: str) -> dict:
    now = int(time.time())
    return {
        "sub": user_id,
        "iss": stack.auth.url,
        "aud": stack.auth.url,
        "iat": now,
        "exp": now + 600,
    }


@pytest.fixture(scope="module")
def rs256(postgres_admin_url):
    yield from running_stack(postgres_admin_url, "RS256")


def test_hs256_signed_with_the_public_key_is_401(rs256):
    account = rs256.auth.sign_up()
    assert rs256.call("GET", "/api/tasks", rs256.auth.token(account)).status_code == 200
    jwk = rs256.auth.jwks()["keys"][0]
    public_key = jwt.PyJWK(jwk).key
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = forged_claims(rs256, account.id)
    for key in (pem, json.dumps(jwk).encode(), pem.strip()):
        for header in ({"alg": "HS256"}, {"alg": "HS256", "kid": jwk["kid"]}):
            token = hs256_with_key(key, header, claims)
            assert rs256.call("GET", "/api/tasks", token).status_code == 401


def test_rs256_with_a_forged_key_is_401(rs256):
    account = rs256.auth.sign_up()
    real_kid = header_of(rs256.auth.token(account))["kid"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = forged_claims(rs256, account.id)
    for kid in (real_kid, "attacker-kid"):
        token = jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": kid})
        response = rs256.call("GET", "/api/tasks", token)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    no_kid = jwt.encode(claims, attacker, algorithm="RS256")
    assert rs256.call("GET", "/api/tasks", no_kid).status_code == 401


def test_token_of_another_better_auth_is_401(eddsa, rs256):
    foreign = rs256.auth.token(rs256.auth.sign_up())
    assert eddsa.call("GET", "/api/tasks", foreign).status_code == 401


@pytest.mark.parametrize("strategy", ["jwt", "jwks"])
def test_session_cookie_jwt_replayed_as_bearer_is_401(postgres_admin_url, strategy):
    require_node_harness()
    built = Stack(postgres_admin_url, "ES256", COOKIE_CACHE=strategy)
    try:
        account = built.auth.sign_up()
        cookie = account.cookies["better-auth.session_data"]
        assert cookie.count(".") == 2  # a JWT
        response = built.call("GET", "/api/tasks", cookie)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        session = built.call("GET", "/api/tasks", account.session)  # opaque, not a JWT
        assert session.status_code == 401
        assert built.call("GET", "/api/tasks", built.auth.token(account)).status_code == 200
    finally:
        built.close()


def test_jwks_down_keeps_cached_keys_and_unknown_kid_is_503(postgres_admin_url):
    require_node_harness()
    built = Stack(postgres_admin_url, "EdDSA")
    try:
        account = built.auth.sign_up()
        known = built.auth.token(account)
        assert built.call("GET", "/api/tasks", known).status_code == 200
        built.auth.rotate()
        unknown = built.auth.token(account)  # signed with a key the API has not fetched
        built.auth.stop()
        assert built.call("GET", "/api/tasks", known).status_code == 200
        started = time.monotonic()
        response = built.call("GET", "/api/tasks", unknown, timeout=30)
        assert response.status_code == 503
        assert time.monotonic() - started < 10
        assert int(response.headers["retry-after"]) > 0
        assert response.headers["content-type"] == "application/problem+json"
        assert built.call("GET", "/api/tasks", known).status_code == 200
        built.auth.start()  # same port and database: the JWKS is back
        assert built.call("GET", "/api/tasks", unknown).status_code == 200
    finally:
        built.close()


def test_jwks_only_deployment(postgres_admin_url):
    """No BETTER_AUTH_SECRET, BETTER_AUTH_JWKS_URL set: JWKS tokens work, HS256 tokens do not."""
    require_node_harness()
    database = PostgresDatabase(postgres_admin_url)
    auth = BetterAuthServer(database.url, SECRET, "EdDSA")
    env = server_env(
        database.url,
        BETTER_AUTH_URL=auth.url,
        BETTER_AUTH_JWKS_URL=f"{auth.url}/api/auth/jwks",
        BETTER_AUTH_SECRET="",
    )
    api = AppServer(env).start(wait=False)
    auth.start()
    api.wait_ready()
    try:
        token = auth.token(auth.sign_up())
        headers = bearer(token)
        assert httpx.get(f"{api.url}/api/tasks", headers=headers).status_code == 200
        hs256 = jose_hs256(SECRET, {"sub": "someone"})
        assert httpx.get(f"{api.url}/api/tasks", headers=bearer(hs256)).status_code == 401
    finally:
        api.stop()
        auth.close()
        database.drop()
