"""The typed TypeScript client (clients/typescript/) cannot drift from the API's contract.

Its types are regenerated with openapi-typescript from the running app's /openapi.json and
must equal the committed src/schema.d.ts; the wrapper and the usage example type-check with
`tsc --noEmit`, and a call that breaks the contract does not. `UPDATE_TS_CLIENT=1` (what
`make client` sets) writes the regenerated types instead of comparing them.

Without Node or the client's packages (`make test` installs them) the tests skip, except in CI.
"""

import difflib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import server_env
from tests.servers import ROOT, AppServer, require_node_packages

CLIENT = ROOT / "clients" / "typescript"
SCHEMA = CLIENT / "src" / "schema.d.ts"
BIN = CLIENT / "node_modules" / ".bin"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    require_node_packages(CLIENT)
    server = AppServer(server_env(f"sqlite:///{tmp_path_factory.mktemp('db')}/todo.db")).start()
    yield server
    server.stop()


def tsc(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "tsc"), "--noEmit", "-p", str(project)],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_committed_types_are_those_of_the_running_api(api, tmp_path):
    generated = tmp_path / "schema.d.ts"
    subprocess.run(
        [
            str(BIN / "openapi-typescript"),
            f"{api.url}/openapi.json",
            "--default-non-nullable",
            "false",
            "-o",
            str(generated),
        ],
        cwd=CLIENT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if os.getenv("UPDATE_TS_CLIENT"):
        shutil.copyfile(generated, SCHEMA)
    diff = "".join(
        difflib.unified_diff(
            SCHEMA.read_text().splitlines(True),
            generated.read_text().splitlines(True),
            "committed src/schema.d.ts",
            "generated from /openapi.json",
        )
    )
    assert not diff, f"clients/typescript is out of date: run `make client`\n{diff[:4000]}"


def test_client_and_usage_example_type_check():
    require_node_packages(CLIENT)
    result = tsc(CLIENT)
    assert result.returncode == 0, result.stdout + result.stderr


BREAKING_CALLS = [  # each breaks the contract in one way; tsc must flag every line
    'api.POST("/api/tasks", { body: { titel: "x" } })',
    'api.GET("/api/tasks", { params: { query: { status: "done" } } })',
    'api.GET("/api/todos", {})',
    'api.PATCH("/api/tasks/{task_id}/complete", { params: { path: { task_id: "one" } } })',
    'ok(api.GET("/api/tasks")).then(({ data }) => data.map((task) => task.name))',
    'ok(api.GET("/api/tasks")).then(({ data }) => data.tasks)',
]


def test_calls_that_break_the_contract_do_not_type_check(tmp_path):
    require_node_packages(CLIENT)
    header = [
        f'import {{ createTodoClient, ok }} from "{CLIENT / "src" / "index"}";',
        'const api = createTodoClient({ baseUrl: "http://localhost:8000", token: () => null });',
        'export const fine = ok(api.GET("/api/tasks", { params: { query: { sort: "title" } } }));',
    ]
    lines = header + [f"export const bad{n} = {call};" for n, call in enumerate(BREAKING_CALLS)]
    (tmp_path / "bad.ts").write_text("\n".join(lines) + "\n")
    (tmp_path / "tsconfig.json").write_text(
        f'{{"extends": "{CLIENT / "tsconfig.json"}", "include": ["bad.ts"]}}'
    )
    result = tsc(tmp_path)
    flagged = {
        int(line.split("(")[1].split(",")[0])
        for line in result.stdout.splitlines()
        if line.split("(")[0].endswith("bad.ts")
    }
    assert flagged == set(range(len(header) + 1, len(lines) + 1)), result.stdout
