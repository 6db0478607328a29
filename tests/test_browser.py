"""A real browser (Debian's Chromium, headless, driven by Playwright) uses the API.

The frontend page tests/browser/index.html is served from http://localhost:3000, the origin of a
Next.js app and the server's BETTER_AUTH_URL, and calls the API on another port with fetch and
a bearer token: create, list, update with PUT, toggle with PATCH, delete; each step is checked by
what the page shows. The same page served from an origin the API does not allow is refused by
the browser itself. `/docs` renders every documented operation, and its Authorize button and
"Try it out" reach the API under the page's Content-Security-Policy.

Screenshots go to test-artifacts/. Without Chromium the tests skip, except under CI.
"""

import functools
import re
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.helpers import FRONTEND, TIMEOUT_MS, screenshot, server_env
from tests.servers import AppServer, free_port
from tests.users import new_user

PAGES = Path(__file__).parent / "browser"

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture reports it
    expect = None


@pytest.fixture
def page(browser):
    """A fresh page whose console errors (CSP violations among them) fail the test."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.console_errors = errors
    yield page
    context.close()


@pytest.fixture(scope="module")
def api_server(postgres_database):
    """The API on PostgreSQL; BETTER_AUTH_URL (the allowed browser origin) is localhost:3000."""
    env = server_env(postgres_database.url)
    assert env["BETTER_AUTH_URL"] == FRONTEND == "http://localhost:3000"
    server = AppServer(env).start()
    yield server
    server.stop()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def _static_site(host: str, port: int, wait: float = 0):
    """tests/browser/ served over HTTP on (host, port) in a thread, as a frontend would be;
    waits up to `wait` seconds for the port to be free."""
    handler = functools.partial(_QuietHandler, directory=str(PAGES))
    deadline = time.monotonic() + wait
    while True:
        try:
            site = ThreadingHTTPServer((host, port), handler)
            break
        except OSError as error:
            if time.monotonic() > deadline:
                pytest.fail(f"cannot serve the test frontend on {host}:{port}: {error}")
            time.sleep(0.5)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    return site


@pytest.fixture(scope="module")
def frontend():
    """The frontend origin the API allows: http://localhost:3000 (another run of these tests
    may hold the port for a few seconds)."""
    site = _static_site("127.0.0.1", 3000, wait=60)
    yield FRONTEND
    site.shutdown()
    site.server_close()


@pytest.fixture(scope="module")
def foreign_site():
    """The same page from an origin the API does not allow."""
    port = free_port()
    site = _static_site("127.0.0.1", port)
    yield f"http://127.0.0.1:{port}"
    site.shutdown()
    site.server_close()


def app_url(origin: str, api: str, token: str) -> str:
    return f"{origin}/index.html#{urlencode({'api': api, 'token': token})}"


def test_frontend_page_manages_tasks_across_origins(page, frontend, api_server):
    user = new_user()
    page.goto(app_url(frontend, api_server.url, user.token))
    status, items = page.locator("#status"), page.locator("#tasks li")
    expect(status).to_have_text("0 tasks")

    for count, title in enumerate(("Walk the dog", "Buy milk"), 1):  # POST, then GET the list
        page.fill("#new-title", title)
        page.click("#new-task button")
        expect(status).to_have_text(f"{count} task" + "s" * (count > 1))
        expect(page.locator("#new-title")).to_have_value("")
    expect(items.locator(".title")).to_have_text(["Buy milk", "Walk the dog"])  # sort=title

    milk = items.filter(has_text="Buy milk")
    milk.locator(".rename").fill("Buy oat milk")
    milk.locator(".save").click()  # PUT
    expect(items.locator(".title")).to_have_text(["Buy oat milk", "Walk the dog"])

    oat = items.filter(has_text="Buy oat milk")
    oat.locator(".toggle").check()  # PATCH .../complete
    expect(oat).to_have_class("done")
    expect(oat.locator(".toggle")).to_be_checked()
    expect(items.filter(has_text="Walk the dog")).not_to_have_class("done")

    items.filter(has_text="Walk the dog").locator(".delete").click()  # DELETE
    expect(status).to_have_text("1 task")
    expect(items.locator(".title")).to_have_text(["Buy oat milk"])
    screenshot(page, "browser-frontend.png")

    stored = httpx.get(f"{api_server.url}/api/tasks", headers=user.headers).json()
    assert [(t["title"], t["completed"]) for t in stored] == [("Buy oat milk", True)]
    assert page.console_errors == []


def test_credentialed_fetch_passes_the_preflight_and_a_cookie_alone_is_401(
    page, frontend, api_server
):
    """A frontend whose fetch sends `credentials: "include"` (cookies and all) works: Chromium
    requires Access-Control-Allow-Credentials on the preflight and the answer. The browser
    sends a cookie holding a valid token along (localhost:3000 and localhost:PORT are the same
    site), and without the Authorization header that is still a 401."""
    user = new_user()
    api = f"http://localhost:{api_server.port}"
    page.context.add_cookies(
        [
            {"name": name, "value": user.token, "domain": "localhost", "path": "/"}
            for name in ("better-auth.session_token", "token")
        ]
    )
    page.goto(app_url(frontend, api, new_user().token))  # the page's own calls work too
    expect(page.locator("#status")).to_have_text("0 tasks")
    sent_cookies = []
    page.on(
        "request",
        lambda request: (
            request.url.startswith(api)
            and request.method != "OPTIONS"
            and sent_cookies.append(request.all_headers().get("cookie", ""))
        ),
    )
    answers = page.evaluate(
        """async ([api, token]) => {
            const call = async (init) => {
                const response = await fetch(api + "/api/tasks", {credentials: "include", ...init});
                return [response.status, await response.json()];
            };
            const created = await call({method: "POST",
                body: JSON.stringify({title: "with credentials"}),
                headers: {Authorization: "Bearer " + token, "Content-Type": "application/json"}});
            const listed = await call({headers: {Authorization: "Bearer " + token}});
            const cookieOnly = await call({});
            const cookieOnlyPost = await call({method: "POST",
                body: JSON.stringify({title: "cookie"}),
                headers: {"Content-Type": "application/json"}});
            return {created, listed, cookieOnly, cookieOnlyPost};
        }""",
        [api, user.token],
    )
    assert answers["created"][0] == 201
    assert [task["title"] for task in answers["listed"][1]] == ["with credentials"]
    assert answers["cookieOnly"][0] == answers["cookieOnlyPost"][0] == 401
    assert answers["cookieOnly"][1]["detail"]
    for _ in range(50):  # request events arrive asynchronously
        if len(sent_cookies) >= 4:
            break
        page.wait_for_timeout(100)
    assert len(sent_cookies) == 4 and all(user.token in cookie for cookie in sent_cookies)
    # Chromium made real preflights, which the API answered without a token.
    assert re.search(r"todo.request OPTIONS /api/tasks 200 ", api_server.logs())
    stored = httpx.get(f"{api_server.url}/api/tasks", headers=user.headers).json()
    assert [task["title"] for task in stored] == ["with credentials"]
    assert len(page.console_errors) == 2 and all("401" in error for error in page.console_errors)


def test_page_from_another_origin_is_refused_by_the_browser(page, foreign_site, api_server):
    user = new_user()
    page.goto(app_url(foreign_site, api_server.url, user.token))
    expect(page.locator("#status")).to_have_text(re.compile(r"^TypeError: "))
    expect(page.locator("#tasks li")).to_have_count(0)
    rejection = page.evaluate(
        """([api, token]) =>
            fetch(api + "/api/tasks", {headers: {Authorization: "Bearer " + token}})
            .then(response => "answered " + response.status, error => error.name)""",
        [api_server.url, user.token],
    )
    assert rejection == "TypeError"
    screenshot(page, "browser-foreign-origin.png")
    # The server was reached: it refused the preflight (the request log), sending no
    # Access-Control-Allow-Origin, so the browser never sent the request itself.
    assert re.search(r"todo.request OPTIONS /api/tasks 400 ", api_server.logs())


def test_docs_page_renders_every_operation_and_tries_one(page, api_server):
    spec = httpx.get(f"{api_server.url}/openapi.json").json()
    page.goto(f"{api_server.url}/docs")
    operations = page.locator(".opblock")
    expect(operations).to_have_count(sum(len(item) for item in spec["paths"].values()))
    shown = set(
        page.locator(".opblock-summary-path").evaluate_all(
            "nodes => nodes.map(node => node.dataset.path)"
        )
    )
    assert shown == set(spec["paths"])
    for path in ("/api/tasks/{task_id}/complete", "/api/{user_id}/tasks"):
        expect(page.locator(f'.opblock-summary-path[data-path="{path}"]').first).to_be_visible()

    user = new_user()
    httpx.post(f"{api_server.url}/api/tasks", json={"title": "from docs"}, headers=user.headers)
    page.click("button.authorize")  # paste the token into Swagger UI's Authorize dialog
    page.locator(".modal-ux input").fill(user.token)
    page.locator(".modal-ux button.authorize").click()
    page.locator(".modal-ux button.btn-done").click()
    listing = page.locator("#operations-tasks-listTasks")
    listing.locator(".opblock-summary").click()
    listing.locator("button.try-out__btn").click()
    listing.locator("button.execute").click()
    response = listing.locator(".live-responses-table .response")
    expect(response.locator(".response-col_status")).to_contain_text("200")
    expect(response.locator(".response-col_description")).to_contain_text("from docs")
    screenshot(page, "browser-docs.png")
    assert page.console_errors == []
