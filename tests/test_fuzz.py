"""Property-based fuzzing of the app with Hypothesis: no create or update
body and no list query gets a 5xx; a rejected request changes nothing; whatever is accepted is
stored as sent and reads back, alone and in every list order. Bounded: a few hundred requests
per database."""

import json
import time
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from tests.helpers import Api, assert_problem, instant, signed_payload
from tests.users import new_user

# coverage.py pauses for these tests (pytest-cov's no_cover): tracing the app costs little, but
# Hypothesis' own generating and shrinking under the tracer ran twice as long, for no line of
# the app's the other tests miss.
pytestmark = pytest.mark.no_cover

# No time limits (a loaded CI machine is slow, not wrong): no deadline per example, and no
# too_slow health check on generating them. No example database: every run draws afresh (from
# --hypothesis-seed if given) and prints what reproduces a failure.
FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any character, lone surrogates and NUL included (json.dumps escapes them as \ud800, \u0000).
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
date_strings = st.one_of(
    st.dates().map(date.isoformat),
    st.datetimes(timezones=st.none() | offsets).map(datetime.isoformat),
    st.one_of(
        st.datetimes(max_value=datetime(1, 1, 1, 23, 59), timezones=offsets),  # the edges
        st.datetimes(min_value=datetime(9999, 12, 31), timezones=offsets),
    ).map(datetime.isoformat),
    st.from_regex(
        r"\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?)?(Z|[+-]\d\d:?\d\d)?", fullmatch=True
    ),
)
# Values of the right type, edgy in content: any character but NUL and lone surrogates, lengths
# up to and just past the limits, dates from year 1 to 9999 in any offset.
text_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
PLAUSIBLE = {
    "title": st.text(text_chars, min_size=1, max_size=201),
    "description": st.none() | st.text(text_chars, max_size=1001),
    "due_date": st.none() | date_strings,
    "completed": st.booleans(),
}
# Anything at all, including wrong types, NUL, lone surrogates and JSON structures.
HOSTILE = {
    "title": st.one_of(st.text(" \t\n", max_size=3), any_text, json_values),
    "description": st.one_of(any_text, json_values),
    "due_date": st.one_of(any_text, json_values),
    "completed": json_values,
}
READ_ONLY = {
    field: date_strings | json_values for field in ("id", "user_id", "created_at", "updated_at")
}
bodies = st.one_of(
    st.fixed_dictionaries(
        {"title": PLAUSIBLE["title"]},
        optional={**{f: v for f, v in PLAUSIBLE.items() if f != "title"}, **READ_ONLY},
    ),
    st.fixed_dictionaries({}, optional=PLAUSIBLE),
    st.fixed_dictionaries({}, optional={f: PLAUSIBLE[f] | HOSTILE[f] for f in PLAUSIBLE}),
)
LIST_VALUES = {
    "status": ["all", "pending", "completed"],
    "sort": ["created", "title", "due_date"],
    "order": ["asc", "desc"],
}
queries = st.dictionaries(
    st.sampled_from([*LIST_VALUES, "user_id"]) | st.text(max_size=8),
    st.sampled_from([v for values in LIST_VALUES.values() for v in values]) | st.text(max_size=12),
    max_size=4,
)


@pytest.fixture(scope="module")
def fuzz(client):
    """One user for every example, on both databases; its tasks are deleted as they go."""
    return Api(client, new_user(), "A")


# What Pydantic trims from a title: Unicode White_Space, which (unlike Python's str.isspace)
# leaves out the information separators U+001C..U+001F.
WHITE_SPACE = "".join(
    c for c in map(chr, range(0x3001)) if c.isspace() and c not in "\x1c\x1d\x1e\x1f"
)


def assert_stored_as_sent(task: dict, body: dict, before: dict) -> None:
    """Each member sent is applied as docs/api.md says; the others keep `before`'s value."""
    expected = {**before}
    for field in ("title", "description", "completed", "due_date"):
        if field in body:
            expected[field] = body[field].strip(WHITE_SPACE) if field == "title" else body[field]
    for field in ("title", "description", "completed"):
        assert task[field] == expected[field], field
    if expected["due_date"] is None:
        assert task["due_date"] is None
    else:
        assert instant(task["due_date"]) == instant(expected["due_date"])


def assert_reads_back(api: Api, task: dict) -> None:
    """The task reads back unchanged, alone and in every list order (no stored value breaks a
    later read)."""
    assert api.get(task["id"]).json() == task
    for sort in LIST_VALUES["sort"]:
        for order in LIST_VALUES["order"]:
            listed = api.list(sort=sort, order=order)
            assert listed.status_code == 200, listed.text
            assert task in listed.json()


def as_json(body: dict) -> dict:
    """Request arguments sending `body` as JSON, NaN and Infinity included (httpx refuses them)."""
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


def assert_rejected(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert_problem(response, response.status_code)
    assert response.status_code == 400


@FUZZ
@given(body=bodies)
def test_no_create_body_breaks_the_api(fuzz, body):
    response = fuzz.create(**as_json(body))
    event(f"create {response.status_code}")
    if response.status_code != 201:
        assert_rejected(response)
        assert fuzz.list().json() == []
        return
    task = response.json()
    assert_stored_as_sent(task, body, {"description": None, "completed": False, "due_date": None})
    assert_reads_back(fuzz, task)
    assert fuzz.delete(task["id"]).status_code == 204


@FUZZ
@given(body=bodies, method=st.sampled_from(["PUT", "PATCH"]))
def test_no_update_body_breaks_the_api(fuzz, body, method):
    task = fuzz.new_task(title="before", description="kept", due_date="2030-01-31")
    response = fuzz.update(task["id"], method=method, **as_json(body))
    event(f"update {response.status_code}")
    if response.status_code != 200:
        assert_rejected(response)
        assert fuzz.get(task["id"]).json() == task
    else:
        updated = response.json()
        assert_stored_as_sent(updated, body, task)
        assert (updated["id"], updated["created_at"]) == (task["id"], task["created_at"])
        assert_reads_back(fuzz, updated)
    assert fuzz.delete(task["id"]).status_code == 204


@pytest.fixture(scope="module")
def listed(fuzz):
    """Tasks in every state for the list fuzzing; removed afterwards."""
    tasks = [
        fuzz.new_task(title=title, completed=done, due_date=due)
        for title, done, due in [
            ("b", False, "2030-01-02"),
            ("A", True, None),
            ("a", False, "2029-12-31T23:00:00-02:00"),
            ("c", True, "2030-01-02"),
        ]
    ]
    yield tasks
    for task in tasks:
        fuzz.delete(task["id"])


@FUZZ
@given(params=queries)
def test_no_list_query_breaks_the_api(fuzz, listed, params):
    response = fuzz.request("GET", fuzz.path(), params=params)
    event(f"list {response.status_code}")
    if response.status_code != 200:
        assert_rejected(response)
        return
    status = params.get("status", "all")
    everything = fuzz.list().json()
    expected = [
        t["id"] for t in everything if status in ("all", ("pending", "completed")[t["completed"]])
    ]
    assert len(everything) >= len(listed)
    assert sorted(t["id"] for t in response.json()) == sorted(expected)


# Header values as a client can send them: any Latin-1 text (Unicode digits such as "²" among
# it), ETag-like shapes around the task's own, and lists of them.
latin1 = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30
)
digitish = st.text(st.sampled_from('0123456789\xb2\xb3\xb9\xbc\xbd\xbe-+ ,"W/*'), max_size=12)


def etags(task_id: int):
    tag = st.builds(lambda version: f'"{task_id}-{version}"', digitish | latin1)
    return st.one_of(latin1, digitish, tag, st.lists(tag | digitish, max_size=4).map(", ".join))


@FUZZ
@given(data=st.data())
def test_no_conditional_or_key_header_breaks_a_write(fuzz, data):
    """If-Match, If-None-Match, Idempotency-Key and X-Request-ID with any Latin-1 text on every
    write: never a 5xx; a write that went through changed the task as sent."""
    task = fuzz.new_task(title="before")
    headers = {
        name: data.draw(etags(task["id"]), label=name) for name in ("If-Match", "If-None-Match")
    }
    headers["Idempotency-Key"] = data.draw(latin1 | digitish, label="Idempotency-Key")
    headers["X-Request-ID"] = data.draw(latin1, label="X-Request-ID")
    headers = {k: v.strip().encode("latin-1") for k, v in headers.items() if v.strip()}
    for method, path, body in (
        ("PATCH", fuzz.path(task["id"]), {"title": "after"}),
        ("PATCH", fuzz.path(task["id"], "/complete"), None),
        ("GET", fuzz.path(task["id"]), None),
        ("DELETE", fuzz.path(task["id"]), None),
    ):
        response = fuzz.request(method, path, headers=headers, **({"json": body} if body else {}))
        event(f"{method} {response.status_code}")
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert_problem(response, response.status_code)
    fuzz.delete(task["id"])


numeric_dates = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.integers(-(10**30), 10**30).map(str),
    st.lists(st.integers(), max_size=2),
    st.integers(10**15, 10**400),
)


@FUZZ
@given(
    claims=st.fixed_dictionaries(
        {},
        optional={
            "exp": numeric_dates,
            "nbf": numeric_dates,
            "iat": numeric_dates,
            "sub": any_text | json_values,
            "email": any_text | json_values,
            "name": any_text | json_values,
        },
    )
)
def test_no_signed_claims_break_authentication(fuzz, claims):
    """Correctly signed tokens with claims of any JSON type and size: 200 (a usable token) or
    401 invalid_token, never a 5xx; NumericDates of the wrong type are never accepted."""
    payload = json.dumps({"exp": int(time.time()) + 600, **claims}, allow_nan=True)
    token = signed_payload(payload)
    response = fuzz.client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
    event(f"claims {response.status_code}")
    assert response.status_code in (200, 401), response.text
    wrong_type = [
        c for c in ("exp", "nbf", "iat") if c in claims and type(claims[c]) not in (int, float)
    ]
    if wrong_type:
        assert response.status_code == 401, (wrong_type, claims)
