"""Idempotent retries with Idempotency-Key: replay instead of redo, 422 for a reused
key with another request, 409 while the first is running, keys per user."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.helpers import Api, assert_problem, rows
from tests.users import new_user


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def test_post_retry_replays_and_creates_once(api):
    headers = key()
    first = api.create({"title": "once"}, headers=headers)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    retry = api.create({"title": "once"}, headers=headers)
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content  # byte for byte
    assert retry.headers["location"] == first.headers["location"]
    assert retry.headers["etag"] == first.headers["etag"]
    assert [t["id"] for t in api.list().json()] == [first.json()["id"]]
    spaced = api.create(
        content=b'{ "title" :  "once" }', headers={**headers, "Content-Type": "application/json"}
    )
    assert spaced.status_code == 201 and spaced.json() == first.json()  # same JSON, same request


def test_same_key_different_body_is_422(api):
    headers = key()
    api.create({"title": "first"}, headers=headers)
    assert_problem(api.create({"title": "second"}, headers=headers), 422)
    assert len(api.list().json()) == 1


def test_update_and_toggle_retries_do_not_repeat(api):
    task = api.new_task()
    toggle_key = key()
    flipped = api.request("PATCH", api.path(task["id"], "/complete"), headers=toggle_key)
    again = api.request("PATCH", api.path(task["id"], "/complete"), headers=toggle_key)
    assert flipped.json()["completed"] is True
    assert again.content == flipped.content  # not flipped back, byte for byte
    assert api.get(task["id"]).json()["completed"] is True
    update_key = key()
    for method in ("PUT", "PUT"):
        response = api.update(task["id"], {"title": "x"}, method=method, headers=update_key)
        assert response.status_code == 200
    assert api.get(task["id"]).json()["updated_at"] == response.json()["updated_at"]
    assert_problem(api.update(task["id"], {"title": "y"}, headers=update_key), 422)
    assert_problem(api.update(task["id"], {"title": "x"}, method="PATCH", headers=update_key), 422)


def test_keys_are_per_user(client, family):
    alice, bob = Api(client, new_user(), family), Api(client, new_user(), family)
    headers = key()
    a = alice.create({"title": "same"}, headers=headers)
    b = bob.create({"title": "same"}, headers=headers)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    assert "idempotent-replayed" not in b.headers


def test_failed_request_does_not_burn_the_key(api):
    headers = key()
    assert api.update(2147483000, {"title": "x"}, headers=headers).status_code == 404
    task = api.new_task()
    stale = api.update(task["id"], {"title": "x"}, headers={**headers, "If-Match": '"0-0"'})
    assert stale.status_code == 412
    ok = api.update(task["id"], {"title": "x"}, headers=headers)
    assert ok.status_code == 200


@pytest.mark.parametrize("bad", ["", "x" * 256, "ключ", "a\tb"])
def test_malformed_key_is_400(api, bad):
    response = api.create({"title": "t"}, headers={"Idempotency-Key": bad.encode()})
    assert_problem(response, 400)
    assert api.list().json() == []


def test_parallel_retries_create_exactly_one_task(client, family):
    api = Api(client, new_user(), family)
    api.list()  # the user exists
    headers = key()

    def retry(_):
        return Api(client, api.user, family).create({"title": "racing"}, headers=headers)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(retry, range(20)))
    assert {r.status_code for r in responses} <= {201, 409}
    created = [r.json() for r in responses if r.status_code == 201]
    assert created and all(body == created[0] for body in created)
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.headers["retry-after"]
    assert len(api.list().json()) == 1


def test_expired_key_is_forgotten(api, db):
    headers = key()
    first = api.create({"title": "old"}, headers=headers).json()
    long_ago = datetime.now(timezone.utc) - timedelta(hours=25)
    with db.begin() as connection:
        connection.execute(
            text("UPDATE idempotency_keys SET created_at = :t WHERE key = :k"),
            {"t": long_ago, "k": headers["Idempotency-Key"]},
        )
    fresh = api.create({"title": "old"}, headers=headers)
    assert fresh.status_code == 201
    assert "idempotent-replayed" not in fresh.headers
    assert fresh.json()["id"] != first["id"]
    stored = rows(
        db,
        "SELECT count(*) AS n FROM idempotency_keys WHERE key = :k",
        k=headers["Idempotency-Key"],
    )
    assert stored == [{"n": 1}]
