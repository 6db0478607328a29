"""Bearer tokens (docs/api.md: Authentication; RFC 6750, RFC 8725) and users created from claims."""

import base64
import json
import time

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from middleware.tokens import VERIFIED_MAX, SecretVerifier, make_verifier
from tests.helpers import (
    FRONTEND,
    FakeJWKS,
    assert_problem,
    in_process,
    rows,
    server_env,
    signed_payload,
)
from tests.servers import AppServer
from tests.users import SECRET, make_token, new_user

INVALID = 'Bearer error="invalid_token"'


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(claims: dict, alg: str = "none") -> str:
    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims)}."


def claims_for(user_id: str, **extra) -> dict:
    return {"sub": user_id, "exp": int(time.time()) + 600, **extra}


def call(client, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    return client.get("/api/tasks", headers=headers)


@pytest.mark.parametrize("authorization", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Token abc"])
def test_missing_token_is_401_bearer(client, authorization):
    response = call(client, authorization)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert call(client, f"Bearer {new_user().token}").status_code == 200


def numeric_date_tokens(user: str) -> dict[str, str]:
    """Signed tokens whose exp, nbf or iat is not a NumericDate (RFC 7519 section 2: a JSON
    number of seconds): strings, booleans, null, numbers no float holds, Infinity, NaN."""
    now, later = int(time.time()), int(time.time()) + 600
    tokens = {}
    for claim in ("exp", "nbf", "iat"):
        valid = later if claim == "exp" else now
        for name, value in {
            "400 digits": "9" * 400,
            "minus 400 digits": "-" + "9" * 400,
            "1e400": "1e400",
            "Infinity": "Infinity",
            "-Infinity": "-Infinity",
            "NaN": "NaN",
            "1e300": "1e300",
            "a string of digits": f'"{valid}"',
            "true": "true",
            "false": "false",
            "null": "null",
            "an array": f"[{valid}]",
            "past year 9999": "253402300800",
        }.items():
            claims = {"sub": json.dumps(user), "exp": str(later), claim: value}
            payload = "{" + ", ".join(f'"{k}": {v}' for k, v in claims.items()) + "}"
            tokens[f"{claim} {name}"] = signed_payload(payload)
    return tokens


def forged_tokens() -> dict[str, str]:
    user = "user-forged"
    good = make_token({"sub": user})
    header, payload, signature = good.split(".")
    other_payload = b64(claims_for("user-victim"))
    return {
        "garbage": "not-a-jwt",
        "two segments": f"{header}.{payload}",
        "four segments": f"{good}.extra",
        "non-json header": f"{base64.urlsafe_b64encode(b'nope').decode()}.{payload}.{signature}",
        "alg none": unsigned(claims_for(user)),
        "alg None": unsigned(claims_for(user), "None"),
        "wrong secret": make_token({"sub": user}, secret="x" * 48),
        "HS512 with the real secret": make_token({"sub": user}, algorithm="HS512"),
        "HS384 with the real secret": make_token({"sub": user}, algorithm="HS384"),
        "stripped signature": f"{header}.{payload}.",
        "edited payload": f"{header}.{other_payload}.{signature}",
        "expired": make_token({"sub": user}, lifetime=-120),
        "expired just past the leeway": make_token({"sub": user}, lifetime=-40),
        "no exp": jwt.encode({"sub": user}, SECRET, algorithm="HS256"),
        "exp not a number": jwt.encode({"sub": user, "exp": "tomorrow"}, SECRET, algorithm="HS256"),
        "iat in the future": make_token({"sub": user, "iat": int(time.time()) + 600}),
        **numeric_date_tokens(user),
        "nbf in the future": make_token({"sub": user, "nbf": int(time.time()) + 600}),
        "no user id": make_token({"email": "a@example.com"}),
        "empty sub": make_token({"sub": ""}),
        "numeric sub": make_token({"sub": 42}),
        "null sub": make_token({"sub": None, "user_id": "fallback"}),
        "sub with NUL": make_token({"sub": "a\u0000b"}),
        "sub with lone surrogate": make_token({"sub": "a\ud800"}),
        "sub too long": make_token({"sub": "u" * 256}),
        "crit header": make_token({"sub": user}, headers={"crit": ["exp"]}),
        "space inside": good[:10] + " " + good[10:],
        "non-ascii inside": good[:10] + "é" + good[10:],
    }


@pytest.mark.parametrize("name", list(forged_tokens()))
def test_invalid_tokens_are_401_invalid_token(client, name):
    token = forged_tokens()[name]
    response = client.get(
        "/api/tasks", headers={"Authorization": f"Bearer {token}".encode("utf-8")}
    )
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == INVALID
    user = new_user()
    assert client.get("/api/tasks", headers=user.headers).status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "a" * 100_000,
        make_token({"sub": "user-big"}) + "a" * 100_000,
    ],
    ids=["garbage", "valid token with a tail"],
)
def test_100_kb_authorization_header_is_401_from_the_app(client, token):
    """uvicorn's httptools parser (uvicorn[standard], as deployed) sets no header size limit, so
    the header reaches the app, which rejects it quickly like any invalid token (never a 500 or
    a hang; docs/security.md)."""
    started = time.monotonic()
    response = call(client, f"Bearer {token}")
    assert time.monotonic() - started < 5
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == INVALID
    assert call(client, f"Bearer {new_user().token}").status_code == 200


def test_two_authorization_headers_are_400(server):
    """Two `Authorization` headers (RFC 9110 section 5.3 allows one value only): which one a
    proxy in front used cannot be known, so neither is: 400, whatever their tokens."""
    mine, other = new_user(), new_user()
    for pair in ((mine.token, other.token), (mine.token, mine.token), (mine.token, "garbage")):
        headers = [("Authorization", f"Bearer {token}") for token in pair]
        with httpx.Client(base_url=server.url) as http:
            for method, path in (
                ("GET", "/api/tasks"),
                ("POST", "/api/tasks"),
                ("GET", f"/api/{mine.id}/tasks"),
            ):
                response = http.request(method, path, headers=headers, json={"title": "t"})
                assert_problem(response, 400)
    assert httpx.get(f"{server.url}/api/tasks", headers=mine.headers).json() == []


def test_expired_within_leeway_is_accepted(client):
    token = make_token({"sub": new_user().id}, lifetime=-10)
    assert call(client, f"Bearer {token}").status_code == 200


def test_lowercase_scheme_is_accepted(client):
    assert call(client, f"bearer {new_user().token}").status_code == 200


@pytest.mark.parametrize("claim", ["sub", "user_id", "userId", "id"])
def test_user_id_claim_variants(client, claim):
    user_id = f"claim-{claim}-{time.time_ns()}"
    token = make_token({claim: user_id})
    headers = {"Authorization": f"Bearer {token}"}
    created = client.post("/api/tasks", json={"title": "t"}, headers=headers)
    assert created.status_code == 201
    assert client.get(f"/api/{user_id}/tasks", headers=headers).json() == [created.json()]


def test_sub_wins_over_other_id_claims(client):
    user = new_user()
    token = make_token({"sub": user.id, "user_id": "someone-else", "id": "third"})
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/{user.id}/tasks", headers=headers).status_code == 200
    assert client.get("/api/someone-else/tasks", headers=headers).status_code == 403


def test_401_applies_to_every_api_path(client):
    for method, path in [
        ("GET", "/api/tasks/1"),
        ("POST", "/api/tasks"),
        ("DELETE", "/api/x/tasks/1"),
        ("PATCH", "/api/tasks/1/complete"),
        ("GET", "/api/unknown"),
    ]:
        response = client.request(method, path)
        assert_problem(response, 401)


def test_health_needs_no_token(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


def test_user_is_created_from_claims_and_refreshed(client, db):
    user = new_user(email="first@example.org", name="First")
    user.email = "first@example.org"
    headers = user.headers
    assert client.get("/api/tasks", headers=headers).status_code == 200
    stored = rows(db, "SELECT email, name, created_at FROM users WHERE id = :id", id=user.id)
    assert [(r["email"], r["name"]) for r in stored] == [("first@example.org", "First")]
    renamed = make_token({"sub": user.id, "email": "second@example.org", "name": "Second"})
    assert (
        client.get("/api/tasks", headers={"Authorization": f"Bearer {renamed}"}).status_code == 200
    )
    again = rows(db, "SELECT email, name, created_at FROM users WHERE id = :id", id=user.id)
    assert [(r["email"], r["name"]) for r in again] == [("second@example.org", "Second")]
    assert again[0]["created_at"] == stored[0]["created_at"]


def test_claims_of_255_characters_are_stored_longer_ones_are_not(client, db):
    """A name or email of at most 255 characters (middleware/tokens.py: MAX_CLAIM_LENGTH) is
    stored as sent; a longer one is stored as NULL, not cut."""
    for length, stored in ((255, "n" * 255), (256, None)):
        user_id = f"long-claims-{length}-{time.time_ns()}"
        token = make_token({"sub": user_id, "name": "n" * length, "email": "e" * length})
        assert call(client, f"Bearer {token}").status_code == 200
        found = rows(db, "SELECT email, name FROM users WHERE id = :id", id=user_id)
        assert found == [{"email": stored and "e" * length, "name": stored}]


def test_numeric_dates_end_with_the_last_second_of_9999(client):
    """exp may be 9999-12-31T23:59:59Z (253402300799, the last second a datetime holds); one
    second later is not a NumericDate the API reads (401)."""
    last = 253_402_300_799
    user_id = f"far-future-{time.time_ns()}"
    assert call(client, f"Bearer {make_token({'sub': user_id, 'exp': last})}").status_code == 200
    later = make_token({"sub": user_id, "exp": last + 1})
    assert_problem(call(client, f"Bearer {later}"), 401)


def test_token_without_email_creates_user_with_null_email(client, db):
    user_id = f"no-email-{time.time_ns()}"
    token = make_token({"sub": user_id})
    assert (
        client.post(
            "/api/tasks", json={"title": "t"}, headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 201
    )
    assert rows(db, "SELECT email, name FROM users WHERE id = :id", id=user_id) == [
        {"email": None, "name": None}
    ]


def test_email_held_by_another_user_is_not_a_500(client, db):
    shared = f"shared-{time.time_ns()}@example.com"
    first, second = new_user(email=shared), new_user(email=shared)
    assert client.get("/api/tasks", headers=first.headers).status_code == 200
    response = client.post("/api/tasks", json={"title": "t"}, headers=second.headers)
    assert response.status_code == 201
    emails = rows(
        db,
        "SELECT id, email FROM users WHERE id IN (:a, :b) ORDER BY email",
        a=first.id,
        b=second.id,
    )
    assert {r["id"]: r["email"] for r in emails} == {first.id: shared, second.id: None}


def test_email_given_up_by_its_holder_goes_to_the_user_whose_token_carries_it(client, db):
    """The holder of an email changes it (a new token with another email): the next request
    of the user whose token carries the old email stores it, whatever this process stored
    before."""
    shared = f"moved-{time.time_ns()}@example.com"
    holder, taker = new_user(email=shared), new_user(email=shared)
    for user in (holder, taker, taker):
        assert client.get("/api/tasks", headers=user.headers).status_code == 200
    moved = make_token({"sub": holder.id, "email": f"new-{shared}", "name": "Test User"})
    assert client.get("/api/tasks", headers={"Authorization": f"Bearer {moved}"}).status_code == 200
    assert client.post("/api/tasks", json={"title": "t"}, headers=taker.headers).status_code == 201
    emails = rows(db, "SELECT id, email FROM users WHERE id IN (:a, :b)", a=holder.id, b=taker.id)
    assert {r["id"]: r["email"] for r in emails} == {holder.id: f"new-{shared}", taker.id: shared}


def test_user_row_deleted_in_the_database_is_recreated(client, db):
    """An admin, a cascade from Better Auth's tables or an erasure deletes a user the server
    has already stored: the next write recreates the row instead of breaking the foreign key
    (the server's memory of stored users is only an optimisation)."""
    user = new_user()
    for round in range(3):
        assert (
            client.post(
                "/api/tasks", json={"title": f"before {round}"}, headers=user.headers
            ).status_code
            == 201
        )
        with db.begin() as connection:
            connection.execute(text("DELETE FROM tasks WHERE user_id = :id"), {"id": user.id})
            connection.execute(text("DELETE FROM users WHERE id = :id"), {"id": user.id})
        created = client.post("/api/tasks", json={"title": "after"}, headers=user.headers)
        assert created.status_code == 201, created.text
        assert [t["title"] for t in client.get("/api/tasks", headers=user.headers).json()] == [
            "after"
        ]
        stored = rows(db, "SELECT email, name FROM users WHERE id = :id", id=user.id)
        assert stored == [{"email": f"{user.id}@example.com", "name": "Test User"}]
        with db.begin() as connection:  # the next round starts from a task of a stored user
            connection.execute(text("DELETE FROM tasks WHERE user_id = :id"), {"id": user.id})


def claims_at(user_id: str, issued_at: int, email: str, name: str) -> dict[str, str]:
    token = make_token({"sub": user_id, "email": email, "name": name, "iat": issued_at})
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def two_workers(database_url):
    """The app with two worker processes, each with its own memory of stored users."""
    server = AppServer(server_env(database_url), args=["--workers", "2"], measured=False).start()
    yield server
    server.stop()


def test_newest_claims_win_across_workers(two_workers, db):
    """An older but still valid token (Better Auth's tokens live 15 minutes) never rolls the
    stored email and name back to its own claims, whichever worker serves it and whatever that
    worker stored before: the token's `iat` is compared with the stored claims' in the upsert."""
    user_id = f"iat-{time.time_ns()}"
    now = int(time.time())
    old = claims_at(user_id, now - 300, f"old-{user_id}@example.com", "Old Name")
    new = claims_at(user_id, now - 10, f"new-{user_id}@example.com", "New Name")
    with httpx.Client(base_url=two_workers.url, timeout=30) as http:
        for headers in (old, old, new):  # both workers may have stored the old claims
            assert http.get("/api/tasks", headers=headers).status_code == 200
        for _ in range(10):  # the old token again, on either worker
            assert http.post("/api/tasks", json={"title": "t"}, headers=old).status_code == 201
    stored = rows(db, "SELECT email, name FROM users WHERE id = :id", id=user_id)
    assert stored == [{"email": f"new-{user_id}@example.com", "name": "New Name"}]
    newer = claims_at(user_id, now, f"newer-{user_id}@example.com", "Newer")
    with httpx.Client(base_url=two_workers.url, timeout=30) as http:
        assert http.get("/api/tasks", headers=newer).status_code == 200
        assert http.get("/api/tasks", headers=new).status_code == 200
    stored = rows(db, "SELECT email, name FROM users WHERE id = :id", id=user_id)
    assert stored == [{"email": f"newer-{user_id}@example.com", "name": "Newer"}]


def test_broken_jwks_is_503_never_500(tmp_path, caplog):
    """Whatever the JWKS endpoint answers, a token whose key cannot be had is 503 with
    Retry-After (docs/api.md: Authentication), HS256 tokens keep working, and a repaired JWKS is
    used at once, without a restart."""
    key = Ed25519PrivateKey.generate()
    jwk = {
        **jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key(), as_dict=True),
        "kid": "k1",
        "alg": "EdDSA",
        "use": "sig",
    }
    now = int(time.time())
    token = jwt.encode(
        {"sub": "user-jwks", "iss": FRONTEND, "aud": FRONTEND, "iat": now, "exp": now + 600},
        key,
        algorithm="EdDSA",
        headers={"kid": "k1"},
    )
    broken = {
        "not JSON": (200, b"<html>sign in</html>"),
        "alg not a string": (200, json.dumps({"keys": [{**jwk, "alg": ["EdDSA"]}]}).encode()),
        "deeply nested": (200, b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    }
    jwks = FakeJWKS()
    env = server_env(f"sqlite:///{tmp_path}/todo.db", BETTER_AUTH_JWKS_URL=jwks.url)
    try:
        with in_process(env) as http:
            for name, (status, body) in broken.items():
                jwks.serve(status, body)
                response = call(http, f"Bearer {token}")
                assert response.status_code == 503, (name, response.text)
                assert_problem(response, 503)
                assert int(response.headers["retry-after"]) > 0
                assert call(http, f"Bearer {new_user().token}").status_code == 200
            jwks.serve(200, json.dumps({"keys": [jwk]}).encode())
            assert call(http, f"Bearer {token}").status_code == 200
        assert not [r for r in caplog.records if r.exc_info], caplog.text  # no traceback logged
    finally:
        jwks.close()


def test_remembered_token_still_expires(client):
    """Verified tokens are remembered, but never past `exp` plus the 30 s leeway."""
    user = new_user()
    token = make_token({"sub": user.id}, lifetime=-28)  # valid for 2 more seconds (leeway)
    assert call(client, f"Bearer {token}").status_code == 200
    assert call(client, f"Bearer {token}").status_code == 200  # remembered
    time.sleep(2.5)
    response = call(client, f"Bearer {token}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == INVALID


def test_verified_tokens_are_remembered_up_to_the_most_recent_few():
    """A verified token is checked once: later calls get the same Caller back, until it is
    one of more than VERIFIED_MAX tokens verified since it was last used."""
    verify = make_verifier(SecretVerifier(SECRET), None)
    tokens = [make_token({"sub": f"user-{n}"}) for n in range(VERIFIED_MAX + 1)]

    async def run() -> None:
        first = await verify(tokens[0])
        assert await verify(tokens[0]) is first  # remembered, not checked again
        second = await verify(tokens[1])
        for token in tokens[2:VERIFIED_MAX]:
            await verify(token)
        assert await verify(tokens[0]) is first  # used again: the most recent now
        await verify(tokens[VERIFIED_MAX])  # one more than fits: the least recent goes
        assert await verify(tokens[0]) is first
        again = await verify(tokens[1])
        assert again == second and again is not second  # checked again

    anyio.run(run)
