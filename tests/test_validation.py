"""Bad input is 400 (or 413/415) with problem details and changes nothing (docs/api.md: Validation
and errors)."""

import gzip
import json

import pytest

from tests.helpers import assert_problem, rows

TOO_BIG = 64 * 1024 + 1


BAD_CREATE_BODIES = [
    ({}, "title"),
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"title": None}, "title"),
    ({"title": 5}, "title"),
    ({"title": ["a"]}, "title"),
    ({"title": True}, "title"),
    ({"title": {"text": "a"}}, "title"),
    ({"title": "ok", "description": "x" * 1001}, "description"),
    ({"title": "ok", "description": 12}, "description"),
    ({"title": "ok", "description": ["a"]}, "description"),
    ({"title": "ok", "description": False}, "description"),
    ({"title": "ok", "completed": "true"}, "completed"),
    ({"title": "ok", "completed": 1}, "completed"),
    ({"title": "ok", "completed": None}, "completed"),
    ({"title": "ok", "completed": [True]}, "completed"),
    ({"title": "ok", "due_date": "tomorrow"}, "due_date"),
    ({"title": "ok", "due_date": "2030-13-01"}, "due_date"),
    ({"title": "ok", "due_date": "2030-02-30"}, "due_date"),
    ({"title": "ok", "due_date": "2030-01-01T25:00:00"}, "due_date"),
    ({"title": "ok", "due_date": "31/12/2030"}, "due_date"),
    ({"title": "ok", "due_date": ""}, "due_date"),
    ({"title": "ok", "due_date": 1700000000}, "due_date"),
    ({"title": "ok", "due_date": True}, "due_date"),
    ({"title": "ok", "due_date": {"year": 2030}}, "due_date"),
    ({"title": "ok", "due_date": "0001-01-01T00:00:00+01:00"}, "due_date"),
    ({"title": "ok", "due_date": "9999-12-31T23:00:00-05:00"}, "due_date"),
]


@pytest.mark.parametrize("body,field", BAD_CREATE_BODIES)
def test_bad_create_body_is_400_and_stores_nothing(api, body, field):
    assert_problem(api.create(body), 400, field)
    assert api.list().json() == []


def test_title_message_matches_spec_wording(api):
    problem = assert_problem(api.create({"title": ""}), 400, "title")
    assert "1-200 characters" in problem["detail"]


def test_length_boundaries_are_accepted(api):
    task = api.new_task(title="x" * 200, description="d" * 1000)
    assert len(task["title"]) == 200
    assert len(task["description"]) == 1000
    assert api.new_task(title="é" * 200)["title"] == "é" * 200
    assert api.new_task(title="x", description="")["description"] == ""


@pytest.mark.parametrize(
    "body,field",
    [
        ({"title": ""}, "title"),
        ({"title": None}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"completed": None}, "completed"),
        ({"completed": "false"}, "completed"),
        ({"description": "x" * 1001}, "description"),
        ({"due_date": "soon"}, "due_date"),
        ({"title": 7}, "title"),
        ({"description": ["x"]}, "description"),
        ({"due_date": 1700000000}, "due_date"),
        ({"completed": 0}, "completed"),
    ],
)
def test_bad_update_is_400_and_changes_nothing(api, body, field):
    task = api.new_task(title="keep", description="keep")
    for method in ("PUT", "PATCH"):
        assert_problem(api.update(task["id"], body, method=method), 400, field)
    assert api.get(task["id"]).json() == task


@pytest.mark.parametrize(
    "content,detail",
    [
        (b"{not json", "not valid JSON"),
        (b'{"title": "a",}', "not valid JSON"),
        (b"[]", "JSON object"),
        (b'["title"]', "JSON object"),
        (b'"title"', "JSON object"),
        (b"null", "JSON object"),
        (b"", "empty"),
        (b" \r\n", "empty"),
        (b'{"title": "\xff"}', "not valid JSON"),
        (b'{"title": "a", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "not valid JSON"),
    ],
)
def test_malformed_json_is_400(api, content, detail):
    headers = {"Content-Type": "application/json"}
    assert detail in assert_problem(api.create(content=content, headers=headers), 400)["detail"]
    task = api.new_task()
    response = api.update(task["id"], content=content, headers=headers)
    assert detail in assert_problem(response, 400)["detail"]
    assert api.list().json() == [task]


STRING_FIELDS = {"title": "a task", "description": "some words", "due_date": "2030-01-31"}


@pytest.mark.parametrize("field", list(STRING_FIELDS))
@pytest.mark.parametrize(
    "raw,detail",
    [
        (b"a\\u0000b", "NUL"),  # a NUL character, escaped
        (b"\\ud800", "not valid JSON"),  # a lone surrogate, escaped
        (b"\\udc00x", "not valid JSON"),
        (b"\xed\xa0\x80", "not valid JSON"),  # a lone surrogate, encoded (CESU-8, not UTF-8)
    ],
    ids=["NUL", "high surrogate", "low surrogate", "encoded surrogate"],
)
def test_nul_and_lone_surrogates_are_400_in_every_string_field(api, field, raw, detail):
    """PostgreSQL text can hold neither; JSON can carry both (docs/api.md: Validation)."""
    value = b'"' + raw + b'"'
    create = {**STRING_FIELDS, field: "__value__"}
    headers = {"Content-Type": "application/json"}
    body = json.dumps(create).encode().replace(b'"__value__"', value)
    problem = assert_problem(api.create(content=body, headers=headers), 400)
    assert detail in problem["detail"] or field == "due_date", problem
    task = api.new_task(**STRING_FIELDS)
    for method in ("PUT", "PATCH"):
        update = b'{"' + field.encode() + b'": ' + value + b"}"
        assert_problem(api.update(task["id"], content=update, headers=headers, method=method), 400)
    assert api.list().json() == [task]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ],
)
def test_non_json_content_type_is_415(api, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"title": "a"}).encode()
    assert_problem(api.create(content=body, headers=headers), 415)
    task = api.new_task()
    assert_problem(api.update(task["id"], content=body, headers=headers), 415)
    assert api.list().json() == [task]


@pytest.mark.parametrize(
    "encoding", ["gzip", "deflate", "br", "zstd", "x-anything", "gzip, identity"]
)
def test_encoded_request_body_is_415(api, encoding):
    """A body with a Content-Encoding is not read as if it were plain JSON: 415 with
    `Accept-Encoding: identity` (RFC 9110 section 15.5.16), nothing stored or changed."""
    body = json.dumps({"title": "encoded"}).encode()
    if encoding.startswith("gzip"):
        body = gzip.compress(body)
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    created = api.create(content=body, headers=headers)
    assert_problem(created, 415)
    assert created.headers["accept-encoding"] == "identity"
    task = api.new_task()
    assert_problem(api.update(task["id"], content=body, headers=headers), 415)
    assert api.list().json() == [task]
    plain = {"Content-Type": "application/json", "Content-Encoding": "identity"}
    assert (
        api.create(content=json.dumps({"title": "plain"}).encode(), headers=plain).status_code
        == 201
    )


def test_json_content_type_with_charset_is_accepted(api):
    body = json.dumps({"title": "a"}).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert api.create(content=body, headers=headers).status_code == 201


def test_body_over_64_kib_is_413(api):
    padding = "x" * TOO_BIG
    assert_problem(api.create({"title": "a", "description": padding}), 413)
    task = api.new_task()
    assert_problem(api.update(task["id"], {"description": padding}), 413)

    def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(80):
            yield b" " * 1024

    headers = {"Content-Type": "application/json"}
    assert_problem(api.create(content=chunks(), headers=headers), 413)
    five_mb = json.dumps({"title": "a", "description": "x" * 5_000_000}).encode()
    assert_problem(api.create(content=five_mb, headers=headers), 413)
    assert_problem(api.update(task["id"], content=five_mb, headers=headers), 413)
    assert_problem(
        api.create(
            content=(five_mb[i : i + 65536] for i in range(0, len(five_mb), 65536)), headers=headers
        ),
        413,
    )
    assert api.list().json() == [task]


def test_body_just_under_limit_is_read(api):
    body = json.dumps({"title": "a", "pad": "x" * (64 * 1024 - 100)}).encode()
    assert len(body) <= 64 * 1024
    assert api.create(content=body, headers={"Content-Type": "application/json"}).status_code == 201


@pytest.mark.parametrize(
    "params", [{"page": "x" * 60_000}, {"status": "x" * 60_000}, [("sort", "title")] * 5_000]
)
def test_60_kb_list_query_string_is_414(api, params):
    task = api.new_task()
    assert_problem(api.request("GET", api.path(), params=params), 414)
    assert api.list(sort="title", page="x" * 8000).json() == [task]  # just under the limit


@pytest.mark.parametrize(
    "task_id",
    [
        "0",
        "-1",
        "abc",
        "1.5",
        "2147483648",
        "9007199254740991",
        "9007199254740992",
        "99999999999999999999",
        "1e3",
        "%20",
    ],
)
def test_odd_ids_are_404_everywhere(api, task_id):
    task = api.new_task()
    for response in (
        api.get(task_id),
        api.update(task_id, {"title": "x"}),
        api.update(task_id, {"title": "x"}, method="PATCH"),
        api.toggle(task_id),
        api.delete(task_id),
    ):
        assert_problem(response, 404)
    assert api.list().json() == [task]


def test_ids_end_at_the_largest_safe_integer_and_odd_ids_are_plain_404(api):
    """2**53 - 1 is an id: an update's body is validated first (400); 0 and 2**53 are not, so
    they are 404 whatever the body. Each 404 is the one for a missing task: it tells nothing
    about which ids exist or how they are checked."""
    largest = 2**53 - 1
    assert_problem(api.update(largest, {"title": ""}), 400, "title")
    missing = assert_problem(api.get(largest), 404)
    for task_id in ("0", str(largest + 1)):
        assert assert_problem(api.update(task_id, {"title": ""}), 404) == missing
        assert assert_problem(api.get(task_id), 404) == missing


def test_nothing_stored_for_rejected_requests(api, db):
    for body in ({"title": ""}, {"title": "x" * 201}, {"title": "ok", "completed": "yes"}):
        api.create(body)
    assert rows(db, "SELECT id FROM tasks WHERE user_id = :u", u=api.user.id) == []
