"""A Neon connection string works as given (docs/operations.md: Neon): `postgres://` or
`postgresql://` with `sslmode=require&channel_binding=require`, against a private cluster
that, like Neon, accepts only TLS connections authenticated with SCRAM-SHA-256 (channel
binding needs both)."""

import pytest

from tests.helpers import Api, check_task_flow, in_process, server_env
from tests.pgcluster import PostgresCluster
from tests.servers import AppServer
from tests.users import new_user

NEON_QUERY = {"sslmode": "require", "channel_binding": "require"}


@pytest.fixture(scope="module")
def cluster():
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module", params=["postgres", "postgresql"])
def neon_app(request, cluster):
    """The app (in process) on the cluster through a Neon-style URL, once per scheme."""
    with in_process(server_env(cluster.url(request.param, **NEON_QUERY))) as client:
        yield client


def startup_failure(url: str) -> str:
    """Start the app on `url`, which must make it exit at start-up (it checks the schema there,
    so it never serves a request); its log."""
    server = AppServer(server_env(url), migrate=False).start(wait=False)
    try:
        assert server.process.wait(timeout=15) != 0, server.logs()
    finally:
        server.stop()
    return server.logs()


def test_task_flow_over_a_neon_url(neon_app, family):
    check_task_flow(Api(neon_app, new_user(), family))


def test_app_connections_use_tls(neon_app, cluster):
    assert neon_app.get("/ready").status_code == 200
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
    assert (
        "channel binding required, but server authenticated client without channel binding" in log
    )
