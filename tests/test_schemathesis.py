"""Schemathesis (the real tool) proves the app keeps its published contract.

Its pytest integration reads `/openapi.json` from the app on PostgreSQL, in process, and, with
the settings of `schemathesis.toml` (the same ones `st run` uses), sends generated requests,
valid and invalid, to every documented operation, with all of its checks on: no 5xx, only
documented statuses, content types, headers and bodies, invalid data rejected, valid data
accepted, 405 with `Allow` for undocumented methods, 401 without the token. The stateful test
then runs `st run --phases stateful` against a live uvicorn server, which follows the
document's links: create a task, then get, update, toggle and delete it.

Each route family runs as a user of its own: the two families reach the same tasks, and
Schemathesis, which cannot know that, would take a task deleted through one family and then
missing through the other for a lost resource.
"""

import os
import re
import subprocess
import sys

import pytest
import schemathesis

from tests.helpers import make_app, server_env
from tests.servers import ROOT, unmeasured
from tests.users import User, new_user

USER_IN_PATH = r"^/api/\{user_id\}/"  # family B; family A runs with /health and /ready


@pytest.fixture
def api_user(monkeypatch) -> User:
    """A new user, whose token and id schemathesis.toml reads from the environment."""
    user = new_user()
    monkeypatch.setenv("TODO_API_TOKEN", user.token)
    monkeypatch.setenv("TODO_API_USER", user.id)
    return user


@pytest.fixture
def api_schema(postgres_database, api_user):
    """The document as Schemathesis loads it from the app on PostgreSQL, called in process
    (Schemathesis' ASGI client, which runs the app's lifespan for the test), authenticated as
    `api_user`, whose id also fills `{user_id}`."""
    config = schemathesis.Config.from_path(ROOT / "schemathesis.toml")
    app = make_app(server_env(postgres_database.url))
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


family_a = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=USER_IN_PATH)
family_b = schemathesis.pytest.from_fixture("api_schema").include(path_regex=USER_IN_PATH)


# coverage.py pauses for the generated cases (pytest-cov's no_cover): Schemathesis' generating
# and checking under the tracer ran 60 % longer, for no line of the app's the other tests miss.
@pytest.mark.no_cover
@family_a.parametrize()
def test_api_tasks_keep_the_contract(case):
    case.call_and_validate()


@pytest.mark.no_cover
@family_b.parametrize()
def test_api_user_tasks_keep_the_contract(case):
    case.call_and_validate()


@pytest.mark.parametrize("user_in_path", [False, True], ids=["api-tasks", "api-user-tasks"])
def test_stateful_links_chain_real_calls(postgres_server, api_user, user_in_path):
    """`st run --phases stateful` (the CLI, as docs/testing.md shows it, with schemathesis.toml)
    follows the document's links from a created task to get, update, toggle and delete it. The CLI's
    engine, unlike Hypothesis' plain state machine runner, tolerates a server whose answers
    depend on earlier calls. The server's access log proves the chain reached real tasks: every
    operation on a task id succeeded at least once, which random ids would not."""
    selection = "--include-path-regex" if user_in_path else "--exclude-path-regex"
    served_before = len(postgres_server.logs())
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{postgres_server.url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "stateful",
            selection,
            USER_IN_PATH,
        ],
        cwd=ROOT,
        env=unmeasured(os.environ),  # the tool: coverage.py measures the server it calls
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Stateful" in run.stdout and "No issues found" in run.stdout, run.stdout
    served = postgres_server.logs()[served_before:]
    task = re.escape(f"/api/{api_user.id}" if user_in_path else "/api") + r"/tasks/\d+"
    for method, suffix, status in [
        ("GET", "", 200),
        ("PUT", "", 200),
        ("PATCH", "", 200),
        ("PATCH", "/complete", 200),
        ("DELETE", "", 204),
    ]:
        assert re.search(f"todo.request {method} {task}{suffix} {status} ", served), (
            method,
            suffix,
        )
