"""The reference frontend (examples/nextjs: Next.js, Better Auth, the typed client) end to end in
a real browser (Debian's Chromium driven by Playwright, as in test_browser.py).

The servers are those of `make demo` (scripts/demo.sh, the build `make test` keeps up to date),
with the API on PostgreSQL and Better Auth's tokens made to expire after one second (plus the
API's 30 s leeway), so that a session outlives its token. Users sign up through the real UI;
every step is checked by what the page shows and, where it matters, by what the API stores.
Screenshots go to test-artifacts/. Without Node, the frontend's packages or Chromium the tests
skip, except under CI.
"""

import os
import re
import secrets
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import jwt
import pytest

from tests.helpers import TIMEOUT_MS, screenshot
from tests.servers import ROOT, free_port, require_node_packages

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture reports it
    expect = None

EXAMPLE = ROOT / "examples" / "nextjs"
BUILT = EXAMPLE / ".next" / ".built"
SOURCES = [
    *EXAMPLE.glob("*.ts"),
    *EXAMPLE.glob("*.json"),
    *EXAMPLE.glob("app/**/*.*"),
    *EXAMPLE.glob("components/*"),
    *EXAMPLE.glob("lib/*"),
    *(ROOT / "clients" / "typescript" / "src").glob("*.ts"),
]
PASSWORD = "correct horse battery staple"
TOKEN_SECONDS, LEEWAY_SECONDS = 1, 30


@dataclass
class Stack:
    web: str
    api: str
    output: list[str]

    def log(self) -> str:
        return "".join(self.output)


def _start_demo(env: dict) -> subprocess.Popen:
    """scripts/demo.sh (`make demo`) with `env`, its output and errors on one text pipe."""
    return subprocess.Popen(
        ["scripts/demo.sh"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def stack(postgres_database, tmp_path_factory):
    """scripts/demo.sh on free ports: the API on PostgreSQL, the frontend's Better Auth on a
    fresh SQLite file."""
    require_node_packages(EXAMPLE, ".next/.built")
    stale = [
        str(path.relative_to(ROOT))
        for path in SOURCES
        if path.name != "next-env.d.ts" and path.stat().st_mtime > BUILT.stat().st_mtime
    ]
    if stale:
        pytest.fail(f"examples/nextjs is not built from its sources ({stale[0]}...): run make test")
    web_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "WEB_PORT": str(web_port),
        "API_PORT": str(api_port),
        "DEMO_DATABASE_URL": postgres_database.url,
        "AUTH_DATABASE_URL": f"sqlite:{tmp_path_factory.mktemp('auth')}/auth.db",
        "BETTER_AUTH_SECRET": secrets.token_urlsafe(48),
        "JWT_EXPIRATION_TIME": f"{TOKEN_SECONDS}s",
        "AUTH_RATE_LIMIT": "off",
    }
    process = _start_demo(env)
    output: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in process.stdout:
            output.append(line)
            if line.startswith("Todo demo: open"):
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait(90)
    if process.poll() is not None or not any(line.startswith("Todo demo") for line in output):
        process.kill()
        pytest.fail("scripts/demo.sh did not start:\n" + "".join(output))
    yield Stack(f"http://localhost:{web_port}", f"http://127.0.0.1:{api_port}", output)
    process.send_signal(signal.SIGTERM)
    process.wait(20)
    reader.join(10)  # it reads to the end of the output, then the pipe can be closed
    process.stdout.close()


@pytest.fixture
def context(browser, stack):
    """A browser profile of its own (one user); uncaught page errors fail the test."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)  # a busy CI machine: a retry waits 0.5 s and more
    context.page_errors = []
    context.on("weberror", lambda error: context.page_errors.append(str(error.error)))
    yield context
    assert context.page_errors == []
    context.close()


def sign_up(page, web: str, name: str) -> str:
    """Sign up as `name` through the page's form; the new account's email."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    page.goto(web)
    page.get_by_role("button", name="Create an account").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()
    return email


def add(page, title: str, description: str = "", due: str = "") -> None:
    form = page.get_by_role("form", name="New task")
    form.get_by_label("Title", exact=True).fill(title)
    form.get_by_label("Description").fill(description)
    form.get_by_label("Due date").fill(due)
    form.get_by_role("button", name="Add task").click()


def titles(page):
    return page.locator("ul.tasks > li .task-title")


def notice(page):
    return page.locator("p.notice")


def alert(page):
    return page.locator("main [role=alert]")  # not Next's route announcer, also an alert


def token_of(context, web: str) -> str:
    """The signed-in user's JWT, as authClient.token() gets it (the context's cookies)."""
    return context.request.get(f"{web}/api/auth/token").json()["token"]


def api_tasks(stack: Stack, token: str) -> list[dict]:
    answer = httpx.get(f"{stack.api}/api/tasks", headers={"Authorization": f"Bearer {token}"})
    return answer.raise_for_status().json()


def test_make_demo_serves_both_on_sqlite(tmp_path):
    """scripts/demo.sh as `make demo` runs it, with the API on its embedded SQLite default: a
    user signed up with Better Auth gets a jwt-plugin token that the API accepts."""
    require_node_packages(EXAMPLE, ".next/.built")
    web_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "WEB_PORT": str(web_port),
        "API_PORT": str(api_port),
        "DEMO_DATABASE_URL": f"sqlite:///{tmp_path}/todo.db",
        "AUTH_DATABASE_URL": f"sqlite:{tmp_path}/auth.db",
        "BETTER_AUTH_SECRET": secrets.token_urlsafe(48),
    }
    process = _start_demo(env)
    try:
        web = f"http://localhost:{web_port}"
        for line in process.stdout:
            if line.startswith("Todo demo: open"):
                assert line.split()[3] == web
                break
        else:
            pytest.fail(f"scripts/demo.sh exited {process.wait()}")
        with httpx.Client(base_url=web, headers={"Origin": web}) as browser_like:
            browser_like.post(
                "/api/auth/sign-up/email",
                json={
                    "email": f"{uuid.uuid4().hex[:12]}@example.com",
                    "password": PASSWORD,
                    "name": "Demo",
                },
            ).raise_for_status()
            token = browser_like.get("/api/auth/token").raise_for_status().json()["token"]
        assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
        api = f"http://127.0.0.1:{api_port}"
        created = httpx.post(
            f"{api}/api/tasks",
            json={"title": "from the demo"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201
        assert (tmp_path / "todo.db").exists() and (tmp_path / "auth.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
        process.stdout.close()


def manage_tasks(page, screenshot_name: str) -> None:
    """Create, sort, filter, edit, toggle, delete and reload through the UI, as a new user with
    no tasks; leaves one task, "Walk the dog", done and due 2030-05-01."""
    expect(page.get_by_text("No tasks yet.")).to_be_visible()
    add(page, "Walk the dog", due="2030-05-01")
    expect(notice(page)).to_have_text("Added “Walk the dog”.")
    add(page, "Buy milk", description="oat, not cow")
    expect(notice(page)).to_have_text("Added “Buy milk”.")
    expect(titles(page)).to_have_text(["Buy milk", "Walk the dog"])  # newest first
    expect(page.get_by_text("Due 2030-05-01")).to_be_visible()

    sort, order, status = (page.get_by_label(label) for label in ("Sort by", "Order", "Status"))
    sort.select_option("title")
    order.select_option("desc")
    expect(titles(page)).to_have_text(["Walk the dog", "Buy milk"])
    order.select_option("")
    sort.select_option("due_date")  # soonest first, no date last
    expect(titles(page)).to_have_text(["Walk the dog", "Buy milk"])

    page.get_by_role("button", name="Edit “Buy milk”").click()
    editing = page.get_by_role("form", name="Edit “Buy milk”")
    expect(editing.get_by_label("Description")).to_have_value("oat, not cow")
    editing.get_by_label("Title", exact=True).fill("Buy oat milk")
    editing.get_by_role("button", name="Save").click()
    expect(notice(page)).to_have_text("Saved “Buy oat milk”.")

    page.get_by_role("checkbox", name="Walk the dog").click()
    expect(notice(page)).to_have_text("“Walk the dog” is done.")
    expect(page.locator("li.done .task-title")).to_have_text(["Walk the dog"])
    status.select_option("pending")
    expect(titles(page)).to_have_text(["Buy oat milk"])
    status.select_option("completed")
    expect(titles(page)).to_have_text(["Walk the dog"])
    status.select_option("all")

    page.get_by_role("button", name="Delete “Buy oat milk”").click()
    expect(notice(page)).to_have_text("Deleted “Buy oat milk”.")
    expect(titles(page)).to_have_text(["Walk the dog"])

    add(page, "   ")  # passes the browser's `required`; the API's problem details explain
    expect(alert(page)).to_contain_text("title must be 1-200 characters")
    title_input = page.get_by_role("form", name="New task").get_by_label("Title", exact=True)
    expect(title_input).to_have_attribute("aria-invalid", "true")

    page.reload()
    expect(titles(page)).to_have_text(["Walk the dog"])
    expect(page.get_by_role("checkbox", name="Walk the dog")).to_be_checked()
    screenshot(page, screenshot_name)


def test_two_users_sign_up_and_each_manages_only_their_own_tasks(stack, context, browser):  # noqa: F811
    page = context.new_page()
    email = sign_up(page, stack.web, "Ada")
    manage_tasks(page, "nextjs-first-user.png")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(titles(page)).to_have_text(["Walk the dog"])

    other = browser.new_context()  # the second user, in a browser profile of their own
    try:
        other.set_default_timeout(TIMEOUT_MS)
        page_b = other.new_page()
        sign_up(page_b, stack.web, "Bob")
        manage_tasks(page_b, "nextjs-second-user.png")  # sees none of Ada's tasks
        bob = token_of(other, stack.web)
    finally:
        other.close()

    ada = token_of(context, stack.web)
    ada_tasks, bob_tasks = api_tasks(stack, ada), api_tasks(stack, bob)
    for stored in (ada_tasks, bob_tasks):
        assert [(t["title"], t["completed"], t["due_date"][:10]) for t in stored] == [
            ("Walk the dog", True, "2030-05-01")
        ]
    assert ada_tasks[0]["id"] != bob_tasks[0]["id"]
    as_bob = {"Authorization": f"Bearer {bob}"}
    ada_id = jwt.decode(ada, options={"verify_signature": False})["sub"]
    assert (
        httpx.get(f"{stack.api}/api/tasks/{ada_tasks[0]['id']}", headers=as_bob).status_code == 404
    )
    assert httpx.get(f"{stack.api}/api/{ada_id}/tasks", headers=as_bob).status_code == 403
    page.reload()
    expect(titles(page)).to_have_text(["Walk the dog"])
    expect(page.locator("ul.tasks > li")).to_have_count(1)


def test_pages_of_ten_with_next_and_previous(stack, context):
    page = context.new_page()
    sign_up(page, stack.web, "Pat")
    headers = {"Authorization": f"Bearer {token_of(context, stack.web)}"}
    for n in range(12):
        httpx.post(f"{stack.api}/api/tasks", json={"title": f"task {n:02}"}, headers=headers)
    page.reload()
    page.get_by_label("Sort by").select_option("title")
    expect(page.locator("#task-count")).to_have_text("10 tasks on page 1")
    expect(titles(page)).to_have_text([f"task {n:02}" for n in range(10)])
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#task-count")).to_have_text("2 tasks on page 2")
    expect(titles(page)).to_have_text(["task 10", "task 11"])
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="Previous page").click()
    expect(titles(page)).to_have_text([f"task {n:02}" for n in range(10)])


def test_stale_edit_in_a_second_tab_gets_the_conflict_message(stack, context):
    first = context.new_page()
    sign_up(first, stack.web, "Cleo")
    add(first, "Call mom")
    expect(titles(first)).to_have_text(["Call mom"])
    first.get_by_role("button", name="Edit “Call mom”").click()  # reads the task and its ETag

    second = context.new_page()  # same user, another tab
    second.goto(stack.web)
    second.get_by_role("button", name="Edit “Call mom”").click()
    second.get_by_role("form", name="Edit “Call mom”").get_by_label("Title", exact=True).fill(
        "Call mum"
    )
    second.get_by_role("button", name="Save").click()
    expect(notice(second)).to_have_text("Saved “Call mum”.")

    editing = first.get_by_role("form", name="Edit “Call mom”")
    editing.get_by_label("Description").fill("on Sunday")
    editing.get_by_role("button", name="Save").click()  # If-Match with the old ETag: 412
    conflict = alert(first)
    expect(conflict).to_contain_text("changed in another tab or window")
    expect(conflict).to_contain_text("It now reads “Call mum”")
    screenshot(first, "nextjs-conflict.png")
    token = token_of(context, stack.web)
    assert [(t["title"], t["description"]) for t in api_tasks(stack, token)] == [("Call mum", None)]

    editing.get_by_role("button", name="Save").click()  # knowingly, with the current ETag
    expect(notice(first)).to_have_text("Saved “Call mom”.")
    assert [(t["title"], t["description"]) for t in api_tasks(stack, token)] == [
        ("Call mom", "on Sunday")
    ]


def test_a_create_whose_answer_is_lost_is_retried_and_made_once(stack, context):
    page = context.new_page()
    sign_up(page, stack.web, "Dan")
    lost = []

    def lose_first_answer(route):
        if route.request.method == "POST" and not lost:
            lost.append(route.fetch().status)  # the API made the task; the answer never arrives
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route(f"{stack.api.replace('127.0.0.1', 'localhost')}/api/tasks", lose_first_answer)
    add(page, "Only once")
    expect(notice(page)).to_have_text("Added “Only once”.")
    expect(titles(page)).to_have_text(["Only once"])
    assert lost == [201]
    assert [t["title"] for t in api_tasks(stack, token_of(context, stack.web))] == ["Only once"]


def test_a_token_expiring_mid_session_is_refreshed(stack, context):
    page = context.new_page()
    token_requests = []
    page.on(
        "request", lambda request: "/api/auth/token" in request.url and token_requests.append(1)
    )
    sign_up(page, stack.web, "Eve")
    add(page, "Water the plants")
    expect(titles(page)).to_have_text(["Water the plants"])
    fetched = len(token_requests)
    time.sleep(TOKEN_SECONDS + LEEWAY_SECONDS + 2)  # the page's token is now past exp + leeway

    page.get_by_role("checkbox", name="Water the plants").click()
    expect(notice(page)).to_have_text("“Water the plants” is done.")
    assert len(token_requests) > fetched
    task_id = api_tasks(stack, token_of(context, stack.web))[0]["id"]
    toggle = re.compile(rf"todo\.request PATCH /api/tasks/{task_id}/complete (\d+) ")
    toggles = [match[1] for match in map(toggle.search, stack.output) if match]
    assert toggles == ["401", "200"]  # refused as expired, then retried with a new token
