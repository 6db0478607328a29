"""A PostgreSQL whose `TimeZone` is not UTC (a Neon project, a pooler or a DBA may set it): every
stored instant reads back as the same instant, the extremes of the range included, directly and
through PgBouncer in transaction mode (where a session `SET TIME ZONE` would not hold)."""

from datetime import datetime, timezone

import httpx
import pytest

from tests.helpers import Api, bouncer_for, instant, server_env, wait_for_no_app_connections
from tests.servers import AppServer, PostgresDatabase, run_sql
from tests.users import new_user

# Each is year 0 or year 10000 in one of the zones below: unreadable for Python's datetime.
EXTREMES = [
    "0001-01-01",
    "0001-01-01T04:56:01Z",
    "0001-01-01T00:00:00.000001+00:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T15:00:00Z",
]
ZONES = ["America/New_York", "Asia/Tokyo", "Pacific/Kiritimati", "Etc/GMT+12"]


@pytest.fixture(scope="module", params=["direct", "pgbouncer"])
def zoned_server(request, postgres_admin_url):
    database = PostgresDatabase(postgres_admin_url)
    bouncer = bouncer_for(database, pool_size=2) if request.param == "pgbouncer" else None
    server = AppServer(server_env(bouncer.url() if bouncer else database.url)).start()
    yield server, database
    server.stop()
    if bouncer:
        bouncer.stop()
    database.drop()


def set_zone(database: PostgresDatabase, zone: str) -> None:
    """The database's default TimeZone, for every session opened from now on, and the app's
    sessions ended so that it opens new ones."""
    run_sql(database.admin_url, f'ALTER DATABASE "{database.name}" SET TimeZone = %s', (zone,))
    database.terminate_connections()
    wait_for_no_app_connections(database)


@pytest.mark.parametrize("zone", ZONES)
def test_extreme_due_dates_read_back_in_any_session_time_zone(zoned_server, zone):
    server, database = zoned_server
    set_zone(database, zone)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        api = Api(http, new_user(), "A")
        created = []
        for due in EXTREMES:
            response = api.create({"title": due, "due_date": due})
            assert response.status_code == 201, response.text
            created.append(response.json())
            assert instant(response.json()["due_date"]) == instant(due)
        key = {"Idempotency-Key": f"zone-{zone}"}
        first = api.create({"title": "replayed", "due_date": EXTREMES[0]}, headers=key)
        replay = api.create({"title": "replayed", "due_date": EXTREMES[0]}, headers=key)
        assert replay.headers.get("idempotent-replayed") == "true", replay.text
        assert replay.json() == first.json()
        for task in created:
            got = api.get(task["id"])
            assert got.status_code == 200 and got.json() == task
            updated = api.update(
                task["id"],
                {"due_date": task["due_date"]},
                headers={"If-Match": got.headers["etag"]},
            )
            assert updated.status_code == 200 and updated.json()["due_date"] == task["due_date"]
        for sort in ("due_date", "created", "title"):
            for order in ("asc", "desc"):
                listed = api.list(sort=sort, order=order, limit=2)
                assert listed.status_code == 200, listed.text
                while "link" in listed.headers:  # every page, through the cursors
                    listed = api.request("GET", listed.links["next"]["url"])
                    assert listed.status_code == 200, listed.text
        times = [datetime.fromisoformat(t["created_at"]) for t in created]
        assert all(t.utcoffset() == timezone.utc.utcoffset(None) for t in times)
    set_zone(database, "UTC")


def test_rows_written_before_still_read_back(zoned_server):
    """Rows that an earlier version stored at the extremes, read in a zone that turns them into
    year 0 or 10000, were a 500 on every list of their user: they read back now."""
    server, database = zoned_server
    set_zone(database, "UTC")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        api = Api(http, new_user(), "A")
        ids = [api.new_task(due_date=due)["id"] for due in ("0001-01-01", "9999-12-31T23:59:59Z")]
        for zone in ("America/New_York", "Asia/Tokyo"):
            set_zone(database, zone)
            listed = api.list(sort="due_date")
            assert listed.status_code == 200, listed.text
            assert [t["id"] for t in listed.json()] == ids
    set_zone(database, "UTC")
