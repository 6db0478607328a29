"""Keyset pagination: `limit`, opaque `cursor`, `Link: rel="next"` (RFC 8288); no
task skipped or repeated while tasks are added or deleted between pages, for every sort."""

import random
import re

import pytest
from itsdangerous import URLSafeSerializer

from tests.helpers import Api, assert_problem
from tests.users import SECRET, new_user

SORTS = ["created", "updated", "completed", "title", "due_date"]


def next_link(response) -> str | None:
    match = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
    return match[1] if match else None


def walk(api: Api, params: dict, between_pages=lambda page: None) -> list[dict]:
    """Follow rel=next to the end; returns every task seen, in order."""
    response = api.list(**params)
    seen = []
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(page)
        link = next_link(response)
        if link is None:
            return seen
        assert len(page) == params["limit"]
        between_pages(page)
        response = api.request("GET", link)


def test_default_limit_returns_everything_without_link(api):
    for n in range(5):
        api.new_task(title=str(n))
    response = api.list()
    assert len(response.json()) == 5
    assert "link" not in response.headers


def test_limit_and_link(api):
    made = [api.new_task(title=str(n))["id"] for n in range(5)]
    first = api.list(limit=2)
    assert [t["id"] for t in first.json()] == made[::-1][:2]
    link = next_link(first)
    assert link and "cursor=" in link and "limit=2" in link
    assert [t["id"] for t in walk(api, {"limit": 2})] == made[::-1]
    assert "link" not in api.list(limit=5).headers


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1:1", "[::1]", 'x"y'])
def test_link_is_a_relative_reference_the_host_header_cannot_move(api, host):
    """The next page's link is a relative reference (RFC 8288 section 3.1), so a client's
    `Host` or a TLS-terminating proxy cannot point it elsewhere or at http://."""
    for n in range(3):
        api.new_task(title=str(n))
    response = api.request("GET", api.path(), params={"limit": 1}, headers={"Host": host})
    link = next_link(response)
    assert link.startswith(f"{api.prefix}/tasks?") and "limit=1" in link, link
    assert len(walk(api, {"limit": 1})) == 3


def make_varied_tasks(api: Api, count: int) -> None:
    rng = random.Random(count)
    for n in range(count):
        body = {"title": rng.choice(["apple", "Apple", "banana", "cherry", f"t{n}"])}
        if rng.random() < 0.6:
            body["due_date"] = rng.choice(["2030-01-01", "2030-06-01", "2031-01-01"])
        task = api.new_task(**body)
        if rng.random() < 0.5:
            api.toggle(task["id"])


@pytest.mark.parametrize("order", [None, "asc", "desc"])
def test_pages_match_the_unpaged_list_for_every_sort(client, order):
    api = Api(client, new_user(), "A")
    make_varied_tasks(api, 17)
    for sort in SORTS:
        for status in ("all", "completed"):
            params = {"sort": sort, "status": status, **({"order": order} if order else {})}
            whole = [t["id"] for t in api.list(**params).json()]
            for limit in (1, 4):
                paged = [t["id"] for t in walk(api, {**params, "limit": limit})]
                assert paged == whole, (sort, status, order, limit)


@pytest.mark.parametrize("sort", SORTS)
def test_no_skips_or_repeats_under_concurrent_inserts_and_deletes(client, family, sort):
    api = Api(client, new_user(), family)
    make_varied_tasks(api, 20)
    original = {t["id"] for t in api.list().json()}
    deleted, added, reached = set(), set(), set()
    rng = random.Random(sort)

    def churn(page):
        reached.update(t["id"] for t in page)
        unseen = original - deleted - reached  # only tasks the walk has not returned yet
        victim = rng.choice(sorted(unseen)) if unseen else None
        if victim is not None and api.delete(victim).status_code == 204:
            deleted.add(victim)
        added.add(api.new_task(title=f"new {len(added)}", due_date="2030-03-03")["id"])

    seen = [t["id"] for t in walk(api, {"sort": sort, "limit": 3}, churn)]
    assert len(seen) == len(set(seen)), "a task was repeated"
    survivors = original - deleted
    assert survivors <= set(seen), f"skipped: {survivors - set(seen)}"
    assert deleted, "the churn deleted nothing: the test proves nothing"
    assert not set(seen) & deleted, f"deleted tasks returned: {set(seen) & deleted}"


def test_cursor_is_bound_to_user_and_list(client, family):
    api = Api(client, new_user(), family)
    for n in range(3):
        api.new_task(title=str(n))
    link = next_link(api.list(limit=1))
    cursor = re.search(r"cursor=([^&]+)", link)[1]
    other = Api(client, new_user(), family)
    # The detail tells a cursor of another list from a damaged one.
    for response in (
        other.list(limit=1, cursor=cursor),
        api.list(limit=1, cursor=cursor, sort="title"),
        api.list(limit=1, cursor=cursor, order="asc"),
        api.list(limit=1, cursor=cursor, status="pending"),
    ):
        assert "another list" in assert_problem(response, 400, "cursor")["detail"]
    tampered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    # The same content signed with the same key (the Better Auth secret, when CURSOR_SECRET is
    # unset) for another purpose, without the cursors' salt, is no cursor either.
    _, content = URLSafeSerializer(SECRET).loads_unsafe(cursor)
    unsalted = URLSafeSerializer(SECRET).dumps(content)
    for forged in (tampered, "not a cursor", unsalted):
        assert (
            "invalid" in assert_problem(api.list(limit=1, cursor=forged), 400, "cursor")["detail"]
        )
    assert api.list(limit=1, cursor=cursor).status_code == 200


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "1.5", ""])
def test_bad_limit_is_400(api, limit):
    assert_problem(api.list(limit=limit), 400, "limit")
