"""One database round trip per request, counted on the wire by tests/pgwire.py, so
no later change can quietly add one."""

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import server_env
from tests.pgwire import RoundTripProxy
from tests.servers import AppServer, run_sql
from tests.users import new_user


@pytest.fixture(scope="module")
def counted(postgres_database):
    """(server, proxy): the app on PostgreSQL through a round-trip counting proxy."""
    target = make_url(postgres_database.url)
    proxy = RoundTripProxy((target.host, target.port or 5432))
    url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    server = AppServer(server_env(url)).start()
    yield server, proxy
    server.stop()
    proxy.close()


def trips(proxy: RoundTripProxy, call) -> tuple[httpx.Response, int]:
    proxy.reset()
    response = call()
    return response, proxy.round_trips


@pytest.mark.parametrize("prefix", ["/api", "/api/{user}"])
def test_every_endpoint_costs_one_round_trip(counted, prefix):
    server, proxy = counted
    user = new_user()
    base = f"{server.url}{prefix.format(user=user.id)}/tasks"
    with httpx.Client(headers=user.headers, timeout=30) as http:
        response, first = trips(proxy, lambda: http.post(base, json={"title": "first"}))
        assert response.status_code == 201
        assert first == 1  # the user's row is stored inside the task statement
        task = response.json()
        path = f"{base}/{task['id']}"
        etag = response.headers["etag"]
        steady = {
            "create": lambda: http.post(base, json={"title": "t"}),
            "list": lambda: http.get(base),
            "list page": lambda: http.get(base, params={"limit": 1, "sort": "title"}),
            "get": lambda: http.get(path),
            "get 304": lambda: http.get(path, headers={"If-None-Match": etag}),
            "update": lambda: http.put(path, json={"title": "u"}),
            "patch": lambda: http.patch(path, json={"description": "d"}),
            "toggle": lambda: http.patch(f"{path}/complete"),
        }
        for name, call in steady.items():
            response, count = trips(proxy, call)
            status = {"create": 201, "get 304": 304}.get(name, 200)
            assert response.status_code == status, (name, response.text)
            assert count == 1, f"{name}: {count} round trips"
        current = http.get(path).headers["etag"]
        response, count = trips(
            proxy, lambda: http.put(path, json={"title": "if"}, headers={"If-Match": current})
        )
        assert (response.status_code, count) == (200, 1)
        response, count = trips(
            proxy, lambda: http.put(path, json={"title": "stale"}, headers={"If-Match": current})
        )
        assert (response.status_code, count) == (412, 2)  # the miss, then the current task
        response, count = trips(proxy, lambda: http.get(f"{base}/2147483000"))
        assert (response.status_code, count) == (404, 1)
        response, count = trips(proxy, lambda: http.delete(path))
        assert (response.status_code, count) == (204, 1)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("list", 1),
        ("create", 1),
        ("get missing", 1),
        ("update missing", 1),
        ("toggle missing", 1),
        ("delete missing", 1),
        ("create with Idempotency-Key", 2),
    ],
)
def test_a_new_users_first_request_stores_the_user_without_a_round_trip_of_its_own(
    counted, postgres_database, kind, expected
):
    """The upsert of a user this process has not seen travels inside the request's first
    statement (Store._execute), whatever that statement is; the row is there afterwards."""
    server, proxy = counted
    user = new_user()
    base, missing = f"{server.url}/api/tasks", f"{server.url}/api/tasks/2147483000"
    call = {
        "list": lambda: httpx.get(base, headers=user.headers),
        "create": lambda: httpx.post(base, json={"title": "t"}, headers=user.headers),
        "get missing": lambda: httpx.get(missing, headers=user.headers),
        "update missing": lambda: httpx.put(missing, json={"title": "u"}, headers=user.headers),
        "toggle missing": lambda: httpx.patch(f"{missing}/complete", headers=user.headers),
        "delete missing": lambda: httpx.delete(missing, headers=user.headers),
        "create with Idempotency-Key": lambda: httpx.post(
            base, json={"title": "k"}, headers={**user.headers, "Idempotency-Key": "first"}
        ),
    }[kind]
    response, count = trips(proxy, call)
    assert response.status_code in (200, 201, 404) and count == expected, (response, count)
    stored = run_sql(postgres_database.url, "SELECT email FROM users WHERE id = %s", (user.id,))
    assert stored == [(f"{user.id}@example.com",)]
    assert any("INSERT INTO users" in sql for sql in proxy.queries), proxy.queries
    _, again = trips(proxy, call)
    assert again == expected
    # remembered: no upsert at all now
    assert not any("INSERT INTO users" in sql for sql in proxy.queries), proxy.queries


def test_rejected_requests_cost_no_round_trip(counted):
    server, proxy = counted
    user = new_user()
    with httpx.Client(headers=user.headers, timeout=30) as http:
        http.get(f"{server.url}/api/tasks")  # the user exists
        for call in (
            lambda: http.get(f"{server.url}/api/someone-else/tasks"),
            lambda: http.post(f"{server.url}/api/tasks", json={"title": ""}),
            lambda: http.get(f"{server.url}/api/tasks/abc"),
            lambda: httpx.get(f"{server.url}/api/tasks"),
        ):
            response, count = trips(proxy, call)
            assert response.status_code in (400, 401, 403, 404)
            assert count == 0, response.request.url


def test_idempotency_key_costs_at_most_two_round_trips(counted):
    server, proxy = counted
    user = new_user()
    base = f"{server.url}/api/tasks"
    with httpx.Client(headers=user.headers, timeout=30) as http:
        http.get(base)  # the user exists
        for name, call in {
            "create": lambda: http.post(
                base, json={"title": "k"}, headers={"Idempotency-Key": "k1"}
            ),
            "replay": lambda: http.post(
                base, json={"title": "k"}, headers={"Idempotency-Key": "k1"}
            ),
        }.items():
            response, count = trips(proxy, call)
            assert response.status_code == 201 and count == 2, (name, count)
        path = f"{base}/{response.json()['id']}"
        for name, call in {
            "toggle": lambda: http.patch(f"{path}/complete", headers={"Idempotency-Key": "k2"}),
            "update": lambda: http.put(
                path, json={"title": "u"}, headers={"Idempotency-Key": "k3"}
            ),
            "empty": lambda: http.patch(path, json={}, headers={"Idempotency-Key": "k4"}),
        }.items():
            response, count = trips(proxy, call)
            assert response.status_code == 200 and count == 2, (name, count)
        replayed = http.patch(path, json={}, headers={"Idempotency-Key": "k4"})
        assert replayed.headers["idempotent-replayed"] == "true"
