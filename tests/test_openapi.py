"""The published contract: `GET /openapi.json` is a valid OpenAPI 3.1 document of exactly the
served routes, built from the handlers' Pydantic models, and `GET /docs` shows it offline."""

import json
import os
import re
import shutil
import subprocess

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic import BaseModel
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from handlers.docs import CONTENT_SECURITY_POLICY
from handlers.openapi import REF, UndocumentedRoute, document
from schemas.problem import Problem
from schemas.tasks import TaskCreate, TaskPublic, TaskUpdate

# docs/api.md: Endpoints. Both families, the probes; nothing else is documented.
TASK_OPERATIONS = {
    ("/tasks", "get"),
    ("/tasks", "post"),
    ("/tasks/{task_id}", "get"),
    ("/tasks/{task_id}", "put"),
    ("/tasks/{task_id}", "patch"),
    ("/tasks/{task_id}", "delete"),
    ("/tasks/{task_id}/complete", "patch"),
}
OPERATIONS = {
    ("/health", "get"),
    ("/ready", "get"),
    *((f"/api{path}", method) for path, method in TASK_OPERATIONS),
    *((f"/api/{{user_id}}{path}", method) for path, method in TASK_OPERATIONS),
}


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/openapi.json")  # no token
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(spec).validate()


def test_documents_exactly_the_served_operations(spec, client):
    assert {(path, method) for path, method, _ in operations(spec)} == OPERATIONS
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(ids) == len(set(ids))


def test_405_allow_lists_every_documented_method_of_the_path(spec, api):
    """Regression (found by Schemathesis): Starlette's 405 named only the methods of the first
    route on the path, e.g. `Allow: GET, HEAD` on /api/tasks, which serves POST too."""
    values = {"user_id": api.user.id, "task_id": "1"}
    for path, item in spec["paths"].items():
        url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        response = api.request("TRACE", url)
        assert response.status_code == 405, path
        assert response.headers["content-type"] == "application/problem+json"
        documented = {method.upper() for method in item}
        implicit = {"HEAD"} if "GET" in documented else set()  # Starlette's twin of GET
        assert set(response.headers["allow"].split(", ")) == documented | implicit, path


def test_schemas_are_the_pydantic_models(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["TaskCreate"] == TaskCreate.model_json_schema(ref_template=REF)
    assert schemas["TaskUpdate"] == TaskUpdate.model_json_schema(ref_template=REF)
    public = TaskPublic.model_json_schema(ref_template=REF, mode="serialization")
    assert schemas["TaskPublic"] == public
    problem = Problem.model_json_schema(ref_template=REF, mode="serialization")
    assert schemas["Problem"] == {k: v for k, v in problem.items() if k != "$defs"}
    create = spec["paths"]["/api/tasks"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskCreate"
    }


def test_every_api_operation_documents_its_errors(spec):
    for path, method, operation in operations(spec):
        responses = operation["responses"]
        if not path.startswith("/api/"):
            assert operation["security"] == []
            continue
        expected = {"401", "500", "503"}
        if "{user_id}" in path:
            expected.add("403")
        if "{task_id}" in path:
            expected.add("404")
        if "requestBody" in operation:
            expected |= {"400", "413", "415"}
        if method == "get" and path.endswith("/tasks"):
            expected |= {"400", "414"}  # a query string over 8 KiB
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        if "If-Match" in headers:
            expected.add("412")
        if "Idempotency-Key" in headers:
            expected |= {"400", "409", "422"}
        if "If-None-Match" in headers:
            assert responses["304"]["headers"]["ETag"]
        errors = {status for status in responses if status >= "400"}
        assert errors == expected, (method, path)
        for status in errors:
            assert list(responses[status]["content"]) == ["application/problem+json"]
        assert responses["401"]["headers"]["WWW-Authenticate"]
        assert responses["503"]["headers"]["Retry-After"]
        assert "security" not in operation  # the document-wide bearerAuth applies


def test_parameters_are_typed(spec):
    listing = {p["name"]: p for p in spec["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]}
    assert listing["status"]["schema"]["enum"] == ["all", "pending", "completed"]
    assert listing["sort"]["schema"]["enum"] == [
        "created",
        "updated",
        "completed",
        "title",
        "due_date",
    ]
    assert listing["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 1000,
    }
    assert listing["order"]["schema"]["enum"] == ["asc", "desc"]
    assert listing["user_id"]["in"] == "path" and listing["user_id"]["required"] is True
    one = {p["name"]: p for p in spec["paths"]["/api/tasks/{task_id}"]["get"]["parameters"]}
    assert one["task_id"]["schema"] == {
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": 2**53 - 1,
    }


def test_conditional_and_idempotency_headers_are_documented(spec):
    expected = {
        ("/api/tasks", "get"): {"If-None-Match"},
        ("/api/tasks", "post"): {"Idempotency-Key"},
        ("/api/tasks/{task_id}", "get"): {"If-None-Match"},
        ("/api/tasks/{task_id}", "put"): {"If-Match", "Idempotency-Key"},
        ("/api/tasks/{task_id}", "patch"): {"If-Match", "Idempotency-Key"},
        ("/api/tasks/{task_id}", "delete"): {"If-Match"},
        ("/api/tasks/{task_id}/complete", "patch"): {"If-Match", "Idempotency-Key"},
    }
    for (path, method), headers in expected.items():
        for family_path in (path, path.replace("/api/", "/api/{user_id}/")):
            operation = spec["paths"][family_path][method]
            documented = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
            assert documented == headers, (family_path, method)
    listing = spec["paths"]["/api/tasks"]["get"]["responses"]["200"]["headers"]
    assert {"ETag", "Link"} <= set(listing)
    assert "ETag" in spec["paths"]["/api/tasks/{task_id}"]["get"]["responses"]["200"]["headers"]


def test_bearer_jwt_security_scheme(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        **spec["components"]["securitySchemes"]["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert spec["security"] == [{"bearerAuth": []}]


def test_links_chain_create_to_the_task_operations(spec):
    for prefix, suffix, extra in [
        ("/api", "", {}),
        ("/api/{user_id}", "ForUser", {"user_id": "$request.path.user_id"}),
    ]:
        created = spec["paths"][f"{prefix}/tasks"]["post"]["responses"]["201"]
        assert created["headers"]["Location"]
        links = {link["operationId"]: link["parameters"] for link in created["links"].values()}
        targets = {
            f"{name}{suffix}"
            for name in ("getTask", "updateTask", "patchTask", "toggleTask", "deleteTask")
        }
        assert set(links) == targets
        assert all(p == {"task_id": "$response.body#/id", **extra} for p in links.values())


def _validator(spec: dict, schema: dict) -> OAS31Validator:
    registry = Registry().with_resource(
        "urn:todo-openapi", Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    target = {"$ref": "urn:todo-openapi" + schema["$ref"]} if "$ref" in schema else schema
    return OAS31Validator(target, registry=registry, format_checker=OAS31Validator.FORMAT_CHECKER)


def test_examples_match_their_schemas(spec):
    checked = 0
    for name, schema in spec["components"]["schemas"].items():
        for example in schema.get("examples", []):
            _validator(spec, {"$ref": f"#/components/schemas/{name}"}).validate(example)
            checked += 1
    for _, _, operation in operations(spec):
        for response in operation["responses"].values():
            for media in response.get("content", {}).values():
                for example in media.get("examples", {}).values():
                    _validator(spec, media["schema"]).validate(example["value"])
                    checked += 1
    assert checked > 50


@pytest.mark.parametrize(
    "title,valid",
    [
        ("a", True),
        (" a ", True),
        ("x" * 200, True),
        (" " * 300 + "x" * 200 + "\n", True),
        ("\x1c", True),
        ("\u200b", True),
        ("a b", True),
        ("", False),
        ("   ", False),
        ("\u3000\xa0", False),
        ("x" * 201, False),
        ("a\x00b", False),
    ],
)
def test_title_pattern_is_the_validator(spec, title, valid):
    """The documented title pattern accepts exactly what TaskCreate accepts."""
    schema = spec["components"]["schemas"]["TaskCreate"]["properties"]["title"]
    assert _validator(spec, schema).is_valid(title) is valid
    assert _accepts(TaskCreate, {"title": title}) is valid


ASTRAL_TITLES = [  # characters beyond U+FFFF: one code point, two UTF-16 code units each
    ("\U0001f600" * 200, True),
    ("\U0001f600" * 201, False),
    (" \U0001f600 ", True),
    ("a" * 199 + "\U0001f600", True),
    ("\U0001f600" + "a" * 199, True),
    ("\U0001f600" * 199 + "ab", False),
    ("\U0001f468\u200d\U0001f469" * 66, True),
]


@pytest.mark.parametrize("title,valid", ASTRAL_TITLES)
def test_title_pattern_counts_code_points(spec, title, valid):
    schema = spec["components"]["schemas"]["TaskCreate"]["properties"]["title"]
    assert _validator(spec, schema).is_valid(title) is valid
    assert _accepts(TaskCreate, {"title": title}) is valid


def test_title_pattern_read_with_the_u_flag_is_the_validator(spec):
    """JSON Schema's patterns are ECMA-262 with the `u` flag: so read, in JavaScript (Node), the
    title pattern counts code points and agrees with the server; read without it, it counts
    UTF-16 units and would stop a user at 100 emoji, as the schema's description warns."""
    schema = spec["components"]["schemas"]["TaskCreate"]["properties"]["title"]
    assert "`u` flag" in schema["description"]
    titles = [title for title, _ in ASTRAL_TITLES] + ["a", "", "x" * 201, "a\x00b", " \u3000x "]
    script = (
        "const [p, titles] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(titles.map(t => [new RegExp(p, 'u').test(t),"
        " new RegExp(p).test(t)])));"
    )
    if shutil.which("node") is None:
        if os.getenv("CI"):
            pytest.fail("node is not installed")
        pytest.skip("node is not installed")
    done = subprocess.run(
        ["node", "-e", script],
        input=json.dumps([schema["pattern"], titles]),
        capture_output=True,
        text=True,
        check=True,
    )
    answers = dict(zip(titles, json.loads(done.stdout)))
    for title, (unicode, _) in answers.items():
        assert unicode is _accepts(TaskCreate, {"title": title}), title
    assert answers["\U0001f600" * 200] == [True, False]  # 400 UTF-16 units without `u`


def _accepts(model: type[BaseModel], data: dict) -> bool:
    try:
        model.model_validate(data)
    except ValueError:
        return False
    return True


def test_every_route_needs_a_description():
    async def undocumented(request):  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(UndocumentedRoute, match="GET /x"):
        document([Route("/x", undocumented, methods=["GET"])])
    assert document([Route("/x", undocumented, include_in_schema=False)])["paths"] == {}


def test_docs_page_is_served_offline(client):
    page = client.get("/docs")  # no token
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/docs/") for source in sources)
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200, source
    script = client.get("/docs/init.js").text
    assert '"/openapi.json"' in script and "validatorUrl: null" in script
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert len(bundle.content) > 500_000
