"""The real process: start-up checks, logs, restart persistence, database outages, the smoke
script (README: Configuration; docs/api.md: Operations)."""

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy.engine import make_url

from middleware.slow_clients import HEAD_TIMEOUT_SECONDS
from tests.helpers import Api, assert_one_clear_line, rows, server_env, wait_for_no_app_connections
from tests.pgwire import RoundTripProxy
from tests.servers import ROOT, AppServer, free_port, procfile_options
from tests.users import SECRET, new_user


def start_failure(env: dict[str, str], migrate: bool = True) -> str:
    """Start the server with `env`, expect it to refuse, return what it printed (within the
    60 s `AppServer.wait_ready` gives a start-up: on a loaded machine, importing the app under
    coverage alone has taken 20 s)."""
    server = AppServer({**env}, migrate=migrate).start(wait=False)
    try:
        assert server.process.wait(60) != 0
    finally:
        server.stop()
    return server.logs()


@pytest.mark.parametrize(
    "secret,message",
    [
        ("", "BETTER_AUTH_SECRET is not set"),
        ("too-short", "at least 32 bytes"),
    ],
)
def test_refuses_to_start_without_a_usable_secret(tmp_path, secret, message):
    env = server_env(f"sqlite:///{tmp_path}/todo.db", BETTER_AUTH_SECRET=secret)
    output = start_failure(env)
    assert message in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "path,words",
    [
        ("/tmp/no-such-directory-{n}/todo.db", ["/tmp/no-such-directory-", "does not exist"]),
        ("/proc/todo-{n}.db", ["/proc/todo-", "DATABASE_URL"]),
    ],
    ids=["missing directory", "read-only file system"],
)
def test_unusable_sqlite_path_is_one_clear_line(path, words):
    path = path.format(n=time.time_ns())
    assert_one_clear_line(start_failure(server_env(f"sqlite:///{path}"), migrate=False), *words)


def test_unreachable_database_at_start_is_one_clear_line():
    port = free_port()  # nothing listens there
    password = f"pw-{time.time_ns()}"
    output = start_failure(
        server_env(f"postgresql://todo:{password}@127.0.0.1:{port}/todo"), migrate=False
    )
    assert_one_clear_line(output, f"127.0.0.1:{port}/todo", "DATABASE_URL")
    assert password not in output


def test_refuses_bad_log_level(tmp_path):
    output = start_failure(server_env(f"sqlite:///{tmp_path}/todo.db", LOG_LEVEL="LOUD"))
    assert "LOG_LEVEL" in output


def test_embedded_sqlite_is_the_default(tmp_path):
    env = server_env("")
    del env["DATABASE_URL"]
    server = AppServer(env, cwd=tmp_path).start()  # ./todo.db lands in tmp_path
    try:
        user = new_user()
        created = httpx.post(f"{server.url}/api/tasks", json={"title": "t"}, headers=user.headers)
        assert created.status_code == 201
        assert (tmp_path / "todo.db").exists()
    finally:
        server.stop()


def test_one_log_line_per_request_without_tokens(server):
    user = new_user()
    marker = f"log-{time.time_ns()}"
    headers = {**user.headers, "X-Request-ID": marker}
    response = httpx.get(f"{server.url}/api/tasks", headers=headers)
    assert response.headers["x-request-id"] == marker
    httpx.get(f"{server.url}/api/tasks?status=bogus", headers=user.headers)
    time.sleep(0.2)
    logs = server.logs()
    lines = [line for line in logs.splitlines() if marker in line]
    assert len(lines) == 1
    assert "GET /api/tasks 200" in lines[0]
    assert "ms" in lines[0]
    assert "todo.request GET /api/tasks 400 " in logs
    assert ' HTTP/1.1" ' not in logs  # no uvicorn access line repeating ours (app.py)
    assert user.token not in logs
    assert user.token.split(".")[1] not in logs
    assert SECRET not in logs


def test_a_path_cannot_forge_log_lines(server):
    """CR, LF and other control characters in a path are escaped in the request log line, so a
    client (even without a token) cannot write a fake line (CWE-117)."""
    marker = f"forged-{time.time_ns()}"
    response = httpx.get(f"{server.url}/api/x%0D%0A{marker}%20GET%20/api/tasks%20200%0B%1B[2J")
    assert response.status_code == 401
    time.sleep(0.2)
    lines = [line for line in server.logs().splitlines() if marker in line]
    assert lines and not any(line.startswith(marker) for line in lines), lines
    ours = [line for line in lines if "request_id=" in line]
    assert len(ours) == 1 and ours[0].isprintable(), ours


def test_claims_cannot_forge_log_lines(server):
    """A signed `sub` holding CR, LF and other control characters reaches a log line (the
    warning that another user holds the token's email): it is escaped there as in the request
    line, so a token cannot write a fake line either."""
    marker = f"forged-{time.time_ns()}"
    shared = f"{marker}@example.com"
    holder = new_user(email=shared)
    intruder = new_user(
        sub=f"x\r\n{marker} INFO todo.request GET /api/tasks 200\x1b[2J\u2028", email=shared
    )
    assert httpx.get(f"{server.url}/api/tasks", headers=holder.headers).status_code == 200
    headers = {**intruder.headers, "X-Request-ID": marker}
    assert httpx.get(f"{server.url}/api/tasks", headers=headers).status_code == 200
    time.sleep(0.2)
    lines = [line for line in server.logs().splitlines() if marker in line]
    assert lines and not any(line.startswith(marker) for line in lines), lines
    assert all(line.isprintable() for line in lines), lines
    # The warning is logged in a worker thread, and carries the request's id all the same.
    warning = [line for line in lines if "held by another user" in line]
    assert len(warning) == 1 and warning[0].endswith(f" request_id={marker}"), lines


@pytest.mark.parametrize(
    "path",
    [
        "/api/tasks/",
        "/health/",
        "/ready/",
        "/api/tasks/1/",
        "/api/tasks/1/complete/",
        "/openapi.json/",
        "/api/u/tasks/",
    ],
)
def test_trailing_slash_is_404_never_a_redirect(server, path):
    """No redirect to a URL built from the client's `Host` (and always http://): a path with a
    trailing slash names no resource, 404 problem details (401 first under /api without a
    token, as for any path there)."""
    user = new_user()
    for headers in ({}, user.headers, {**user.headers, "Host": "evil.example"}):
        expected = 401 if path.startswith("/api") and not headers else 404
        for method in ("GET", "POST", "PATCH"):
            response = httpx.request(
                method, f"{server.url}{path}", headers=headers, follow_redirects=False
            )
            assert response.status_code == expected, (method, path, response.status_code)
            assert "location" not in response.headers
            assert response.headers["content-type"] == "application/problem+json"


def open_connections(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing `sock` (b"" for nothing), or None if it kept it
    open for `timeout` seconds."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def test_a_flood_of_slow_connections_does_not_starve_normal_requests(tmp_path):
    """1,100 connections held open by clients that send nothing, their headers a byte a second
    (slowloris), or headers announcing a body that never comes, against the server as the
    Procfile runs it, started with the common soft limit of 1,024 open files: a normal request
    is still served at once; the silent and slowloris connections are closed once the head
    timeout passes, and a missing body is answered 408. Loopback only, bounded in time."""
    user = new_user()
    server = AppServer(
        server_env(f"sqlite:///{tmp_path}/todo.db"), args=procfile_options(), open_files=1024
    ).start()
    flood: dict[str, list[socket.socket]] = {}
    try:
        flood["silent"] = open_connections(server.port, 400)
        flood["slowloris"] = open_connections(server.port, 400, b"GET /health HTTP/1.1\r\n")
        flood["no body"] = open_connections(
            server.port,
            300,
            (
                f"POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user.token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            ).encode(),
        )
        started = time.monotonic()
        for n in range(3):
            for sock in flood["slowloris"]:
                sock.send(b"X")  # one more byte of a header line that never ends
            response = httpx.get(f"{server.url}/api/tasks", headers=user.headers, timeout=5)
            assert response.status_code == 200, response.text
            created = httpx.post(
                f"{server.url}/api/tasks", json={"title": f"t{n}"}, headers=user.headers, timeout=5
            )
            assert created.status_code == 201, created.text
            time.sleep(1)
        deadline = started + HEAD_TIMEOUT_SECONDS + 5
        for kind in ("silent", "slowloris"):
            for sock in flood[kind]:
                assert closed_by_server(sock, max(deadline - time.monotonic(), 0.1)) == b"", kind
        for sock in flood["no body"]:
            answer = closed_by_server(sock, max(deadline - time.monotonic(), 0.1))
            assert answer is not None and answer.startswith(b"HTTP/1.1 408 "), answer
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        assert "Traceback" not in server.logs()
    finally:
        for sock in (s for kind in flood.values() for s in kind):
            sock.close()
        server.stop()


def test_a_silent_kept_alive_connection_is_closed(tmp_path):
    """After a response, a connection that stays silent is closed after --timeout-keep-alive;
    one that starts a request and stalls, after the head timeout."""
    server = AppServer(server_env(f"sqlite:///{tmp_path}/todo.db"), args=procfile_options()).start()
    keep_alive = int(procfile_options()[procfile_options().index("--timeout-keep-alive") + 1])
    try:
        request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        idle, stalled = open_connections(server.port, 2, request)
        for sock in (idle, stalled):
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")
        stalled.sendall(b"GET /health HTTP/1.1\r\nHost:")
        started = time.monotonic()
        assert closed_by_server(idle, keep_alive + 3) == b""
        assert keep_alive - 1 < time.monotonic() - started
        assert closed_by_server(stalled, HEAD_TIMEOUT_SECONDS + 3) == b""
        assert HEAD_TIMEOUT_SECONDS - 1 < time.monotonic() - started
    finally:
        idle.close()
        stalled.close()
        server.stop()


def test_client_leaving_mid_body_is_no_500(server, db):
    """A client that closes the connection halfway through its body stores nothing and leaves
    one 499 log line, not a traceback and a 500 (which would page someone for nothing)."""
    user = new_user()
    marker = f"gone-{time.time_ns()}"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"POST /api/tasks HTTP/1.1\r\nHost: test\r\nX-Request-ID: {marker}\r\n"
            f"Authorization: Bearer {user.token}\r\nContent-Type: application/json\r\n"
            f'Content-Length: 1000\r\n\r\n{{"title": "half'.encode()
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while marker not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in server.logs().splitlines() if marker in line]
    assert len(lines) == 1 and "POST /api/tasks 499" in lines[0], lines  # no "unhandled error"
    assert rows(db, "SELECT id FROM tasks WHERE user_id = :id", id=user.id) == []


def test_generated_request_id_when_client_sends_none_or_junk(server):
    plain = httpx.get(f"{server.url}/health")
    junk = httpx.get(f"{server.url}/health", headers={"X-Request-ID": "bad id\twith\nstuff"[:6]})
    assert len(plain.headers["x-request-id"]) == 32
    assert junk.headers["x-request-id"] != "bad id"


def test_tasks_persist_across_restart(postgres_database):
    server = AppServer(server_env(postgres_database.url)).start()
    user = new_user()
    try:
        task = httpx.post(
            f"{server.url}/api/tasks", json={"title": "survive"}, headers=user.headers
        ).json()
    finally:
        server.stop()  # SIGTERM: uvicorn shuts down gracefully, then re-raises the signal
    assert "Finished server process" in server.logs()
    server = AppServer(server_env(postgres_database.url), port=server.port).start()
    base = f"{server.url}/api/tasks/{task['id']}"
    try:
        assert httpx.get(base, headers=user.headers).json() == task
        assert httpx.patch(f"{base}/complete", headers=user.headers).json()["completed"] is True
        updated = httpx.put(base, json={"title": "renamed"}, headers=user.headers).json()
        assert updated["title"] == "renamed"
        assert httpx.delete(base, headers=user.headers).status_code == 204
        assert httpx.get(base, headers=user.headers).status_code == 404
    finally:
        server.stop()


def test_killed_idle_connections_give_no_error(postgres_server, postgres_database):
    """Pooled connections killed while idle (pg_terminate_backend, a server restart, an idle
    timeout) are noticed at checkout and replaced: no request, read or write, sees an error."""
    server = postgres_server
    user = new_user()
    with httpx.Client(
        base_url=server.url, timeout=15, limits=httpx.Limits(max_connections=8)
    ) as http:
        api = Api(http, user, "A")
        task = api.new_task()

        def work(n: int) -> int:
            call = [
                lambda: api.list(),
                lambda: api.create({"title": f"t{n}"}),
                lambda: api.update(task["id"], {"title": f"u{n}"}, method="PATCH"),
                lambda: api.toggle(task["id"]),
                lambda: api.get(task["id"]),
            ][n % 5]
            return call().status_code

        for _ in range(3):
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(work, range(16))) <= {200, 201}  # fill the pool
            assert postgres_database.terminate_connections() > 0
            wait_for_no_app_connections(postgres_database)
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(work, range(40)))
            assert set(statuses) <= {200, 201}, statuses
    assert "Traceback" not in server.logs()


@pytest.fixture
def proxied_server(postgres_database):
    """A server whose PostgreSQL connections go through a proxy the test can cut."""
    target = make_url(postgres_database.url)
    proxy = RoundTripProxy((target.host or "127.0.0.1", target.port or 5432))
    url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    server = AppServer(server_env(url)).start()
    yield server, proxy
    server.stop()
    proxy.close()


def test_database_unreachable_is_503_and_recovers(proxied_server):
    server, proxy = proxied_server
    user = new_user()
    url = f"{server.url}/api/tasks"
    task = httpx.post(url, json={"title": "t"}, headers=user.headers).json()
    proxy.cut()
    for method, path, body in [
        ("GET", "", None),
        ("POST", "", {"title": "x"}),
        ("PATCH", f"/{task['id']}/complete", None),
    ]:
        started = time.monotonic()
        response = httpx.request(method, url + path, json=body, headers=user.headers, timeout=30)
        assert response.status_code == 503, response.text
        assert time.monotonic() - started < 15
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) > 0
        assert response.json()["detail"]
    assert httpx.get(f"{server.url}/ready").status_code == 503
    assert httpx.get(f"{server.url}/health").status_code == 200
    proxy.restore()
    assert httpx.get(f"{server.url}/ready").status_code == 200
    assert [t["id"] for t in httpx.get(url, headers=user.headers).json()] == [task["id"]]
    assert "Traceback" not in server.logs()


def test_smoke_script_passes_against_a_real_server(server):
    token = subprocess.run(
        [sys.executable, "scripts/dev_token.py", f"smoke-{time.time_ns()}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "BETTER_AUTH_SECRET": SECRET},
    ).stdout.strip()
    result = subprocess.run(
        ["bash", "scripts/smoke.sh", server.url, token],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "smoke test passed" in result.stderr


def test_smoke_script_fails_on_unexpected_status(server):
    result = subprocess.run(
        ["bash", "scripts/smoke.sh", server.url, "not-a-valid-token.x.y"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
