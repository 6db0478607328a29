"""Several workers behave as one (docs/operations.md): a cursor issued by one worker works on
every other and after a restart, with HS256 or JWKS-only configuration; a backlog of expired
Idempotency-Keys neither delays nor fails the start of 4 workers."""

import json
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urljoin

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

import migrations
from store import Store
from tests.helpers import FRONTEND, FakeJWKS, engine_for, rows, server_env, wait_for_workers
from tests.servers import AppServer, run_sql
from tests.users import User, new_user

WORKERS = 4
PAGES = 100


def jwks_user(key: Ed25519PrivateKey) -> User:
    """A user with a Better Auth jwt-plugin style token (EdDSA, kid, iss and aud)."""
    user = new_user()
    now = int(time.time())
    token = jwt.encode(
        {"sub": user.id, "iss": FRONTEND, "aud": FRONTEND, "iat": now, "exp": now + 900},
        key,
        algorithm="EdDSA",
        headers={"kid": "k1"},
    )
    return User(user.id, token)


@pytest.fixture(params=["HS256", "JWKS-only"])
def deployment(request, database_url):
    """(environment, user) of a deployment with a shared secret or with only a JWKS."""
    migrations.upgrade(database_url)
    if request.param == "HS256":
        yield server_env(database_url), new_user()
        return
    key = Ed25519PrivateKey.generate()
    jwk = {
        **jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key(), as_dict=True),
        "kid": "k1",
        "alg": "EdDSA",
        "use": "sig",
    }
    jwks = FakeJWKS()
    jwks.serve(200, json.dumps({"keys": [jwk]}).encode())
    try:
        yield (
            server_env(database_url, BETTER_AUTH_SECRET="", BETTER_AUTH_JWKS_URL=jwks.url),
            jwks_user(key),
        )
    finally:
        jwks.close()


def test_cursor_walk_over_four_workers_and_a_restart(deployment):
    """100 pages of limit=1, each request on a new connection (so on any of the workers), then
    a cursor saved before a restart: zero failures."""
    env, user = deployment
    # Its workers run what the single-worker servers measure: coverage.py leaves them out.
    server = AppServer(env, args=["--workers", str(WORKERS)], migrate=False, measured=False).start()
    try:
        wait_for_workers(server, WORKERS)
        with httpx.Client(base_url=server.url, headers=user.headers) as client:
            for number in range(PAGES + 1):
                created = client.post("/api/tasks", json={"title": f"t{number:03}"})
                assert created.status_code == 201, created.text
        seen, url, saved = [], f"{server.url}/api/tasks?sort=title&limit=1", None
        while url:
            page = httpx.get(url, headers=user.headers)  # a new connection every time
            assert page.status_code == 200, (len(seen), page.text)
            seen += [task["title"] for task in page.json()]
            url = urljoin(server.url, page.links["next"]["url"]) if "next" in page.links else None
            if len(seen) == PAGES // 2:
                saved = url
        assert seen == [f"t{number:03}" for number in range(PAGES + 1)]
    finally:
        server.stop()
    server = AppServer(env, port=server.port, migrate=False).start()
    try:
        resumed = httpx.get(saved, headers=user.headers)
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()[0]["title"] == f"t{PAGES // 2:03}"
    finally:
        server.stop()


def test_expired_key_backlog_neither_delays_nor_fails_start_up(new_postgres):
    """200,000 expired Idempotency-Keys and 4 workers starting together: every worker starts at
    once and the backlog is purged in the background, in batches; a live key stays."""
    url = new_postgres.url
    migrations.upgrade(url)
    expired = datetime.now(timezone.utc) - timedelta(days=2)
    run_sql(
        url,
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, created_at, status)"
        " SELECT 'user-' || (g %% 500), 'key-' || g, 'f', %s, 201"
        " FROM generate_series(1, 200000) g",
        (expired,),
    )
    run_sql(
        url,
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, created_at, status)"
        " VALUES ('user-live', 'live', 'f', now(), 201)",
    )
    started = time.monotonic()
    # Measured: only this backlog makes the purge run batch after batch.
    server = AppServer(server_env(url), args=["--workers", str(WORKERS)], migrate=False).start()
    try:
        wait_for_workers(server, WORKERS)
        assert time.monotonic() - started < 30
        engine = engine_for(url)
        deadline = time.monotonic() + 120
        while rows(engine, "SELECT count(*) AS n FROM idempotency_keys")[0]["n"] > 1:
            assert time.monotonic() < deadline, "expired keys not purged in 120 s"
            time.sleep(0.5)
        assert rows(engine, "SELECT key FROM idempotency_keys") == [{"key": "live"}]
        engine.dispose()
    finally:
        server.stop()
    logs = server.logs()
    assert "Traceback" not in logs and "died" not in logs and "purge paused" not in logs, logs
    purged = sum(
        int(line.split("purged ")[1].split()[0])
        for line in logs.splitlines()
        if "expired idempotency keys" in line
    )
    assert purged == 200_000


def test_purge_deletes_one_bounded_batch_per_call(database_url):
    """Each purge statement deletes at most its batch, so none runs into the statement timeout
    however large the backlog; repeated, it deletes every expired key and no live one."""
    migrations.upgrade(database_url)
    owner = new_user().id
    expired = datetime.now(timezone.utc) - timedelta(days=2)
    engine = engine_for(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, created_at, status)"
                " VALUES (:user, :key, 'f', :at, 201)"
            ),
            [{"user": owner, "key": f"k{n}", "at": expired} for n in range(2500)]
            + [{"user": owner, "key": "live", "at": datetime.now(timezone.utc)}],
        )
    keys = Store(database_url)
    try:
        assert keys.purge_keys(batch=1000) == 1000
        while keys.purge_keys(batch=1000) == 1000:
            pass
    finally:
        keys.dispose()
    assert rows(engine, "SELECT key FROM idempotency_keys WHERE user_id = :u", u=owner) == [
        {"key": "live"}
    ]
    engine.dispose()
