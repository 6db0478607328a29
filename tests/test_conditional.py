"""Conditional requests (RFC 9110 section 13): strong ETags, If-Match against lost
updates, If-None-Match for cheap re-reads; without the headers nothing changes."""

from concurrent.futures import ThreadPoolExecutor

from tests.helpers import Api, assert_problem
from tests.users import new_user


def test_every_single_task_response_has_an_etag_that_changes(api):
    created = api.create({"title": "t"})
    etag = created.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    task_id = created.json()["id"]
    assert api.get(task_id).headers["etag"] == etag
    seen = {etag}
    for change in (
        lambda: api.update(task_id, {"title": "u"}),
        lambda: api.toggle(task_id),
        lambda: api.update(task_id, {"description": "d"}, method="PATCH"),
    ):
        response = change()
        assert response.headers["etag"] not in seen
        seen.add(response.headers["etag"])
        assert api.get(task_id).headers["etag"] == response.headers["etag"]


def test_if_none_match_on_a_task(api):
    created = api.create({"title": "t"})
    etag, task_id = created.headers["etag"], created.json()["id"]
    cached = api.request("GET", api.path(task_id), headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    weak = api.request("GET", api.path(task_id), headers={"If-None-Match": f"W/{etag}"})
    assert weak.status_code == 304
    api.toggle(task_id)
    changed = api.request("GET", api.path(task_id), headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["completed"] is True


def test_if_none_match_on_the_list(api):
    task_id = api.new_task()["id"]
    first = api.list()
    etag = first.headers["etag"]
    again = api.request("GET", api.path(), headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    api.new_task()
    assert api.request("GET", api.path(), headers={"If-None-Match": etag}).status_code == 200
    etag = api.list().headers["etag"]
    api.update(task_id, {"description": "changed, same tasks"})
    changed = api.request("GET", api.path(), headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    other_query = api.request(
        "GET", api.path(), params={"status": "completed"}, headers={"If-None-Match": etag}
    )
    assert other_query.status_code == 200


def test_if_match_applies_only_to_the_current_version(api):
    created = api.create({"title": "v1"})
    old, task_id = created.headers["etag"], created.json()["id"]
    ok = api.update(task_id, {"title": "v2"}, headers={"If-Match": old})
    assert ok.status_code == 200
    current = ok.json()
    for response in (
        api.update(task_id, {"title": "stale"}, headers={"If-Match": old}),
        api.update(task_id, {"title": "stale"}, method="PATCH", headers={"If-Match": old}),
        api.request("PATCH", api.path(task_id, "/complete"), headers={"If-Match": old}),
        api.request("DELETE", api.path(task_id), headers={"If-Match": old}),
        api.update(task_id, {}, headers={"If-Match": old}),
    ):
        problem = assert_problem(response, 412)
        assert problem["task"] == current
        assert response.headers["etag"] == ok.headers["etag"]
    assert api.get(task_id).json() == current


def test_if_match_forms(api):
    created = api.create({"title": "t"})
    etag, task_id = created.headers["etag"], created.json()["id"]
    for form in (lambda tag: f'"0-0", {tag}', lambda tag: "*", lambda tag: tag):
        header = form(etag)
        response = api.request(
            "PATCH", api.path(task_id, "/complete"), headers={"If-Match": header}
        )
        assert response.status_code == 200, header
        etag = response.headers["etag"]
    for header in (f"W/{etag}", '"garbage"', etag.replace('"', "")):
        response = api.request(
            "PATCH", api.path(task_id, "/complete"), headers={"If-Match": header}
        )
        assert response.status_code == 412, header
    other = api.new_task()
    foreign_etag = api.get(other["id"]).headers["etag"]
    assert (
        api.update(task_id, {"title": "x"}, headers={"If-Match": foreign_etag}).status_code == 412
    )


def test_if_match_compares_whole_quoted_tags_of_a_list(api):
    """A tag matches only whole and quoted (RFC 9110 section 8.8.3): more characters inside the
    quotes, or a quote missing, is no match (412). A list matches by any of its members,
    wherever it stands, with or without spaces after the commas (section 13.1.1)."""
    created = api.create({"title": "t"})
    etag, task_id = created.headers["etag"], created.json()["id"]
    bare = etag.strip('"')
    for header in (f'"X{bare}X"', f'"{bare}', f'{bare}"'):
        response = api.update(task_id, {"title": "x"}, headers={"If-Match": header})
        assert response.status_code == 412, header
    for form in ('{}, "0-0"', '{},"0-0"', '"0-0",{}'):
        header = form.format(etag)
        response = api.update(task_id, {"title": header}, headers={"If-Match": header})
        assert response.status_code == 200, header
        etag = response.headers["etag"]


def test_if_match_delete(api):
    created = api.create({"title": "t"})
    response = api.request(
        "DELETE", api.path(created.json()["id"]), headers={"If-Match": created.headers["etag"]}
    )
    assert response.status_code == 204


def test_if_match_on_missing_or_foreign_task_is_404(api, other):
    task = api.new_task()
    etag = api.get(task["id"]).headers["etag"]
    assert_problem(other.update(task["id"], {"title": "x"}, headers={"If-Match": etag}), 404)
    assert_problem(other.request("DELETE", other.path(task["id"]), headers={"If-Match": "*"}), 404)
    assert_problem(api.update(2147483000, {"title": "x"}, headers={"If-Match": "*"}), 404)
    assert api.get(task["id"]).json() == task


def test_two_clients_racing_with_if_match_exactly_one_wins(client, family):
    api = Api(client, new_user(), family)
    created = api.create({"title": "start"})
    etag, task_id = created.headers["etag"], created.json()["id"]
    racers = 10

    def race(n):
        return Api(client, api.user, family).update(
            task_id, {"title": f"writer {n}"}, headers={"If-Match": etag}
        )

    with ThreadPoolExecutor(racers) as pool:
        responses = list(pool.map(race, range(racers)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * (racers - 1)
    winner = next(r for r in responses if r.status_code == 200).json()
    assert api.get(task_id).json() == winner


def test_without_headers_updates_are_unconditional(api):
    task = api.new_task()
    api.update(task["id"], {"title": "a"})
    assert api.update(task["id"], {"title": "b"}).json()["title"] == "b"


def test_if_match_with_non_ascii_digits_is_412_on_every_write(api):
    """`str.isdigit()` accepts superscripts (`"²"`, sent as Latin-1) that `int()` refuses: an
    ETag with them names no version, so it matches nothing (412), never a 500."""
    task = api.new_task()
    task_id = task["id"]
    for digits in ("\xb2", "1\xb3", "\xb9", "\xbd", "\u0661"):
        header = f'"{task_id}-{digits}"'.encode("utf-8" if digits == "\u0661" else "latin-1")
        for response in (
            api.update(task_id, {"title": "x"}, headers={"If-Match": header}),
            api.update(task_id, {"title": "x"}, method="PATCH", headers={"If-Match": header}),
            api.request("PATCH", api.path(task_id, "/complete"), headers={"If-Match": header}),
            api.request("DELETE", api.path(task_id), headers={"If-Match": header}),
        ):
            assert_problem(response, 412)
    assert api.get(task_id).json() == task
