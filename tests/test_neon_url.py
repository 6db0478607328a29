"""A Neon connection string works as given (README: Neon): `postgres://` or `postgresql://` with
`sslmode=require&channel_binding=require`, against a private cluster that, like Neon, accepts
only TLS connections authenticated with SCRAM-SHA-256 (channel binding needs both)."""

import httpx
import pytest

from tests.conftest import Api, new_user, server_env
from tests.pgcluster import PostgresCluster
from tests.servers import AppServer

NEON_QUERY = {"sslmode": "require", "channel_binding": "require"}


@pytest.fixture(scope="module")
def cluster():
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module", params=["postgres", "postgresql"])
def neon_server(request, cluster):
    """The app on the cluster through a Neon-style URL, once per scheme."""
    server = AppServer(server_env(cluster.url(request.param, **NEON_QUERY))).start()
    yield server
    server.stop()


def check_task_flow(api: Api) -> None:
    """Create, list (sorted and filtered), get, update (PUT and PATCH), toggle twice, delete,
    and another user's 404s: each answers as specified."""
    created = api.create({"title": "Buy milk", "description": "2 litres", "due_date": "2030-01-31"})
    assert created.status_code == 201, created.text
    task = created.json()
    assert api.list().json() == [task]
    assert api.get(task["id"]).json() == task
    later = api.create({"title": "a later one", "due_date": "2031-01-01"}).json()
    assert [t["id"] for t in api.list(sort="due_date").json()] == [task["id"], later["id"]]
    assert [t["id"] for t in api.list(sort="title", order="desc").json()] == [task["id"], later["id"]]
    stranger = Api(api.client, new_user(), api.family)
    for response in (stranger.get(task["id"]), stranger.update(task["id"], {"title": "x"}),
                     stranger.toggle(task["id"]), stranger.delete(task["id"])):
        assert response.status_code == 404, response.text
    assert stranger.list().json() == []
    assert api.delete(later["id"]).status_code == 204
    renamed = api.update(task["id"], {"title": "Buy oat milk"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Buy oat milk", renamed.text
    cleared = api.update(task["id"], {"description": None}, method="PATCH")
    assert cleared.status_code == 200 and cleared.json()["description"] is None, cleared.text
    assert api.toggle(task["id"]).json()["completed"] is True
    assert [t["id"] for t in api.list(status="completed").json()] == [task["id"]]
    assert api.toggle(task["id"]).json()["completed"] is False
    assert api.delete(task["id"]).status_code == 204
    assert api.get(task["id"]).status_code == 404
    assert api.list().json() == []


def startup_failure(url: str) -> str:
    """Start the app on `url`, which must make it exit at start-up (it checks the schema there,
    so it never serves a request); its log."""
    server = AppServer(server_env(url), migrate=False).start(wait=False)
    try:
        assert server.process.wait(timeout=15) != 0, server.logs()
    finally:
        server.stop()
    return server.logs()


def test_task_flow_over_a_neon_url(neon_server, family):
    with httpx.Client(base_url=neon_server.url, timeout=30) as http:
        check_task_flow(Api(http, new_user(), family))


def test_app_connections_use_tls(neon_server, cluster):
    assert httpx.get(f"{neon_server.url}/ready", timeout=10).status_code == 200
    connections = cluster.admin(
        "SELECT a.usename, s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
        " WHERE a.application_name = 'todo-api'"
    )
    assert connections, "the app holds no connection to the cluster"
    for user, ssl, version in connections:
        assert (user, ssl, version[:3]) == ("todo", True, "TLS")


def test_sslmode_disable_is_refused_by_a_tls_only_server(cluster):
    log = startup_failure(cluster.url(sslmode="disable"))
    assert 'no pg_hba.conf entry for host "127.0.0.1", user "todo"' in log
    assert "no encryption" in log
    assert "todo-api: cannot use the database at " in log
    assert cluster.password not in log


def test_channel_binding_require_refuses_a_server_that_skips_it(cluster):
    """The cluster's socket trusts without SCRAM: libpq must refuse it when the URL says
    channel_binding=require, which proves the parameter reaches libpq as given."""
    url = f"postgresql://todo@/todo?host={cluster.dir}&port={cluster.port}&channel_binding=require"
    log = startup_failure(url)
    assert "channel binding required, but server authenticated client without channel binding" \
        in log
