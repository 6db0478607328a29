"""The container image and the compose stack, built and run by a real Docker engine.

The image is built from the project's Dockerfile and the stack brought up from compose.yaml, in
a copy of the checkout with its own .env, on local stand-ins for the official python and postgres
images (tests/engine.py; TEST_PYTHON_IMAGE / TEST_POSTGRES_IMAGE name others). Skipped, with the
reason, when no engine can start; required in CI.
"""

import json
import os
import re
import secrets
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.engine import Engine, EngineUnavailable, docker, local_base_images, run
from tests.servers import APP_VARIABLES, free_port
from tests.users import make_token

ROOT = Path(__file__).resolve().parent.parent
API_IMAGE = "todo-api-test"  # one tag, so the engine's build cache serves later runs
COMPOSE_VARIABLES = ("PYTHON_IMAGE", "POSTGRES_IMAGE", "POSTGRES_PASSWORD", "API_PORT", "API_IMAGE")


def unavailable(reason: str):
    if os.getenv("CI"):
        pytest.fail(f"CI must run the container tests: {reason}")
    pytest.skip(f"no container engine: {reason}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    try:
        engine = Engine.start(tmp_path_factory.mktemp("engine"))
    except EngineUnavailable as error:
        unavailable(str(error))
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def base_images(engine) -> tuple[str, str]:
    given = os.getenv("TEST_PYTHON_IMAGE"), os.getenv("TEST_POSTGRES_IMAGE")
    if all(given):
        return given
    try:
        return local_base_images()
    except EngineUnavailable as error:
        unavailable(str(error))


class Stack:
    """A compose `file` brought up by `engine` in `directory` (a copy of the checkout) under a
    project name of its own, with `env` (plus `extra`) as the whole environment."""

    def __init__(
        self,
        engine: Engine,
        directory: Path,
        env: dict[str, str],
        secret: str,
        file: str = "compose.yaml",
        **extra: str,
    ):
        self.engine, self.directory, self.secret, self.file = engine, directory, secret, file
        self.env = {
            **env,
            "COMPOSE_PROJECT_NAME": f"todotest{uuid.uuid4().hex[:8]}",
            "API_PORT": str(free_port()),
            **extra,
        }
        self.project = self.env["COMPOSE_PROJECT_NAME"]
        self.url = f"http://127.0.0.1:{self.env['API_PORT']}"

    def compose(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess:
        return run(
            *self.engine.compose,
            "-f",
            self.file,
            *args,
            cwd=self.directory,
            env=self.env,
            timeout=timeout,
            check=check,
        )

    def inspect(self, service: str) -> dict:
        """`docker inspect` of the service's (single) container, running or exited."""
        ids = docker(
            "ps",
            "-aq",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return json.loads(docker("inspect", ids[0]).stdout)[0]

    def exec(self, service: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return docker("exec", self.inspect(service)["Id"], *command, check=check)

    def up(self) -> None:
        """`compose up -d`, then until healthy; fails with every service's logs (the one-shot
        migration's too: compose reports only its exit code) when either step fails."""
        started = self.compose("up", "-d", check=False)
        if started.returncode != 0:
            pytest.fail(
                f"`compose up -d` exited {started.returncode}: {started.stderr}\n{self.logs()}"
            )
        self.wait_healthy()

    def logs(self) -> str:
        """Every service's container logs, exited containers' too."""
        logs = self.compose("logs", "--no-color", "--timestamps", check=False)
        return logs.stdout + logs.stderr

    def wait_healthy(self, timeout: float = 180) -> None:
        """Until the image's HEALTHCHECK reports the API healthy; fails with its logs if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.inspect("api")["State"]
            if state.get("Health", {}).get("Status") == "healthy":
                return
            time.sleep(1)
        pytest.fail(f"the API did not become healthy: {state}\n{self.logs()}")

    def psql(self, sql: str) -> str:
        return psql(self.inspect("db")["Id"], "todo", sql)

    def token(self, user_id: str) -> str:
        return make_token({"sub": user_id, "email": f"{user_id}@example.com"}, secret=self.secret)


def checkout_copy(target: Path) -> Path:
    """The files a fresh clone would have, plus the untracked ones not ignored (work in
    progress)."""
    listed = run("git", "ls-files", "-z", "-co", "--exclude-standard", cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
            (target / name).chmod(source.stat().st_mode)
    return target


def psql(container: str, user: str, sql: str) -> str:
    """One statement through psql inside a PostgreSQL container; its unaligned output."""
    return docker("exec", container, "psql", "-U", user, "-d", "todo", "-tAc", sql).stdout.strip()


def wait_for_postgres(container: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (
        docker("exec", container, "pg_isready", "-q", "-h", "127.0.0.1", check=False).returncode
        != 0
    ):
        assert time.monotonic() < deadline, docker("logs", container, check=False).stderr
        time.sleep(1)


def bridge_gateway(image: str) -> str:
    """The host's address on the engine's default bridge, which containers reach the host by.
    The network's record does not always name it (on a machine whose docker0 the daemon created
    at that start, `IPAM.Config[0].Gateway` is empty), so it is read from a container's own
    settings then."""
    recorded = docker("network", "inspect", "bridge", "-f", "{{json .IPAM.Config}}").stdout
    gateway = next((c.get("Gateway") for c in json.loads(recorded) if c.get("Gateway")), None)
    if gateway:
        return gateway
    container = docker("run", "-d", "--entrypoint", "sleep", image, "60").stdout.strip()
    try:
        return docker("inspect", "-f", "{{.NetworkSettings.Gateway}}", container).stdout.strip()
    finally:
        docker("rm", "-f", container, check=False)


def wait_for_login(postgres_image: str, url: str, timeout: float = 120) -> None:
    """Until `url` takes a login from a container, by the path and credentials the stack will
    use (the engine's gateway and published port, not the server's own loopback); fails with
    psql's last error."""
    deadline = time.monotonic() + timeout
    while True:
        login = docker(
            "run",
            "--rm",
            "--entrypoint",
            "psql",
            postgres_image,
            url,
            "-tAc",
            "SELECT 1",
            check=False,
            timeout=60,
        )
        if login.returncode == 0:
            return
        assert time.monotonic() < deadline, login.stderr
        time.sleep(1)


@pytest.fixture(scope="module")
def clone(engine, base_images, tmp_path_factory) -> tuple[Path, dict[str, str], str]:
    """A copy of the checkout with the .env that `make .env` makes from .env.example (compose
    reads it, as in a user's clone; the image must not contain it), the environment to run
    compose in (the app's and compose's variables of the calling environment left out), and the
    secret that .env holds."""
    directory = checkout_copy(tmp_path_factory.mktemp("clone"))
    run("make", "--no-print-directory", ".env", cwd=directory)
    secret = re.search(r"^BETTER_AUTH_SECRET=(.+)$", (directory / ".env").read_text(), re.M).group(
        1
    )
    outside = {
        name: value
        for name, value in os.environ.items()
        if name not in APP_VARIABLES + COMPOSE_VARIABLES and not name.startswith("COMPOSE_")
    }
    env = {
        **outside,
        "PYTHON_IMAGE": base_images[0],
        "POSTGRES_IMAGE": base_images[1],
        "API_IMAGE": API_IMAGE,
    }
    return directory, env, secret


@pytest.fixture(scope="module")
def api_image(engine, clone) -> str:
    """The API's image, built by compose from the clone's Dockerfile on the python stand-in."""
    previous = docker("image", "inspect", "-f", "{{.Id}}", API_IMAGE, check=False).stdout.strip()
    started = time.monotonic()
    Stack(engine, *clone).compose("build", "api")
    print(f"image built in {time.monotonic() - started:.0f} s")
    if (
        previous
        and previous != docker("image", "inspect", "-f", "{{.Id}}", API_IMAGE).stdout.strip()
    ):
        docker("image", "rm", previous, check=False)  # the last run's image, now untagged
    return API_IMAGE


@pytest.fixture(scope="module")
def stack(engine, clone, api_image):
    stack = Stack(engine, *clone, POSTGRES_PASSWORD=secrets.token_hex(16))
    try:
        stack.up()
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", check=False)


def test_image_is_small_runs_as_non_root_and_holds_no_secret(stack, base_images, api_image):
    size, base = (
        docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip()
        for tag in (api_image, base_images[0])
    )
    added = (int(size) - int(base)) / 1e6
    base_mb = int(base) / 1e6
    print(f"image {int(size) / 1e6:.0f} MB: base {base_mb:.0f} MB + the project's {added:.0f} MB")
    assert added < 150
    assert stack.inspect("api")["Config"]["User"] == "app:app"
    assert stack.exec("api", "id", "-u").stdout.strip() != "0"
    # exec form: PID 1 is uvicorn itself (not a shell that would swallow SIGTERM), with the
    # Procfile's web command and limits.
    assert stack.exec("api", "cat", "/proc/1/comm").stdout.strip() == "uvicorn"
    argv = stack.exec("api", "cat", "/proc/1/cmdline").stdout.split("\0")[:-1]
    web = re.search(r"^web: (.+)$", (ROOT / "Procfile").read_text(), re.M).group(1)
    assert argv[2:] == shlex.split(web.replace("${PORT:-8000}", "8000"))[1:]
    listing = stack.exec("api", "ls", "-a", "/app").stdout.split()
    assert ".env" not in listing and "tests" not in listing and ".git" not in listing
    assert "app.py" in listing
    # The code is read-only for the app's user.
    assert stack.exec("api", "sh", "-c", "touch /app/app.py", check=False).returncode != 0


def test_migration_runs_to_completion_before_the_api_starts(stack, api_image):
    migrate, api = stack.inspect("migrate")["State"], stack.inspect("api")["State"]
    assert migrate["Status"] == "exited" and migrate["ExitCode"] == 0
    assert migrate["FinishedAt"] <= api["StartedAt"]  # both RFC 3339 in UTC: they sort as text
    head = docker("run", "--rm", api_image, "alembic", "heads").stdout.split()[0]
    assert stack.psql("SELECT version_num FROM alembic_version") == head


def test_smoke_script_passes_on_postgresql(stack):
    user = f"smoke-{uuid.uuid4().hex}"
    result = run(str(ROOT / "scripts/smoke.sh"), stack.url, stack.token(user), check=False)
    assert result.returncode == 0, result.stderr
    # The API's user row is in the stack's PostgreSQL, not in some embedded database.
    assert stack.psql(f"SELECT count(*) FROM users WHERE id = '{user}'") == "1"


def test_tasks_survive_a_restart_and_down_stops_within_10_s(stack):
    user = f"restart-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {stack.token(user)}"}
    for title in ("Water the plants", "Renew passport"):
        assert (
            httpx.post(f"{stack.url}/api/tasks", json={"title": title}, headers=headers).status_code
            == 201
        )
    before = httpx.get(f"{stack.url}/api/tasks", headers=headers).json()

    started = time.monotonic()
    stack.compose("down")  # removes the containers; the named volume stays
    assert time.monotonic() - started < 10
    stack.up()

    assert httpx.get(f"{stack.url}/api/tasks", headers=headers).json() == before
    assert [task["title"] for task in before] == ["Renew passport", "Water the plants"]


def test_stop_is_graceful(stack):
    started = time.monotonic()
    stack.compose("stop")
    assert time.monotonic() - started < 10
    # uvicorn exits 0 after a graceful shutdown; 137 would be the engine's SIGKILL after 10 s.
    assert stack.inspect("api")["State"]["ExitCode"] == 0
    assert stack.inspect("db")["State"]["ExitCode"] == 0


def test_image_honours_port(stack, api_image):
    """The image alone, as a platform runs it, with PORT set: its HEALTHCHECK follows PORT, and
    without DATABASE_URL it migrates and serves the embedded SQLite file in /data."""
    host_port = free_port()
    container = docker(
        "run",
        "-d",
        "-e",
        "PORT=9123",
        "-e",
        f"BETTER_AUTH_SECRET={stack.secret}",
        "-p",
        f"127.0.0.1:{host_port}:9123",
        api_image,
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 90
        while (
            docker("inspect", "-f", "{{.State.Health.Status}}", container).stdout.strip()
            != "healthy"
        ):
            assert time.monotonic() < deadline, docker("logs", container, check=False).stderr
            time.sleep(1)
        assert httpx.get(f"http://127.0.0.1:{host_port}/ready").status_code == 200
        headers = {"Authorization": f"Bearer {stack.token('port-user')}"}
        assert (
            httpx.post(
                f"http://127.0.0.1:{host_port}/api/tasks", json={"title": "t"}, headers=headers
            ).status_code
            == 201
        )
        assert "todo.db" in docker("exec", container, "ls", "/data").stdout
        started = time.monotonic()
        docker("stop", container)
        assert time.monotonic() - started < 10
        assert docker("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip() == "0"
    finally:
        docker("rm", "-f", container, check=False)


def test_neon_file_runs_the_api_alone_on_database_url(engine, clone, base_images, api_image):
    """compose.neon.yaml on an outside PostgreSQL (a container of its own, reached through the
    engine's gateway as a hosted database would be through the internet)."""
    gateway = bridge_gateway(base_images[1])
    port, password = free_port(), secrets.token_hex(16)
    database = docker(
        "run",
        "-d",
        "-e",
        "POSTGRES_USER=alice",
        "-e",
        f"POSTGRES_PASSWORD={password}",
        "-e",
        "POSTGRES_DB=todo",
        "-p",
        f"{gateway}:{port}:5432",
        base_images[1],
    ).stdout.strip()
    url = f"postgresql://alice:{password}@{gateway}:{port}/todo"
    stack = Stack(engine, *clone, file="compose.neon.yaml", DATABASE_URL=url)
    try:
        assert stack.compose("config", "--services").stdout.split() == ["migrate", "api"]
        wait_for_postgres(database)
        wait_for_login(base_images[1], url)
        stack.up()
        user = f"neon-{uuid.uuid4().hex}"
        headers = {"Authorization": f"Bearer {stack.token(user)}"}
        assert (
            httpx.post(f"{stack.url}/api/tasks", json={"title": "t"}, headers=headers).status_code
            == 201
        )
        assert (
            psql(database, "alice", f"SELECT count(*) FROM tasks WHERE user_id = '{user}'") == "1"
        )
    finally:
        # pytest shows this only when the test failed
        outside = docker("logs", database, check=False)
        print(f"the outside PostgreSQL's log:\n{outside.stdout}{outside.stderr}")
        stack.compose("down", "-v", check=False)
        docker("rm", "-f", "-v", database, check=False)
    del stack.env["DATABASE_URL"]
    missing = stack.compose("config", check=False)
    assert missing.returncode != 0 and "DATABASE_URL" in missing.stderr


def test_compose_files_and_env_example_agree_on_variable_names():
    documented = set(
        re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    read_by_app = set()
    for module in [
        ROOT / "app.py",
        *(ROOT / name for name in ("store.py", "engine.py", "tables.py", "statements.py")),
        *ROOT.glob("middleware/*.py"),
        *ROOT.glob("handlers/*.py"),
    ]:
        read_by_app |= set(re.findall(r"getenv\(\"(\w+)\"", module.read_text()))
    assert read_by_app <= documented
    for name in ("compose.yaml", "compose.neon.yaml"):
        text = (ROOT / name).read_text()
        assert set(re.findall(r"\$\{(\w+)", text)) <= documented, name
        assert all(f"{variable}:" in text for variable in read_by_app), name
