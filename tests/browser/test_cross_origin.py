"""A page on another origin, in a real headless Chromium, against a real server (SPEC
§14): it can neither open the API's WebSocket, nor POST to it with a form or a no-CORS
fetch, nor frame the UI; and the UI itself works under its own CSP."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
from conftest import serve, url_of

from tasks import keys

TIMEOUT_MS = 20_000

#: A real Chromium: left out of `make test-fast`.
pytestmark = pytest.mark.slow

#: The attacker's page. A text/plain form turns `name=value` into JSON: the classic way
#: to send a JSON body across origins without CORS.
EVIL_PAGE = """<!doctype html>
<html><body>
<form id="create" method="post" enctype="text/plain" action="{api}/api/runs">
  <input name='{{"scenario_id": "hello_sequence", "input": {{"name": "' value='evil"}}}}'>
</form>
<form id="cancel" method="post" enctype="text/plain" action="{api}/api/runs/{run_id}/cancel">
</form>
<iframe id="ui" src="{api}/runs/{run_id}"></iframe>
</body></html>
"""

#: Opens the API's WebSocket; resolves with "open" or how it closed.
OPEN_WS = """
url => new Promise(resolve => {
    const socket = new WebSocket(url);
    socket.onopen = () => { socket.close(); resolve("open"); };
    socket.onclose = e => resolve(`closed ${e.code}`);
})
"""

#: What a page may send anywhere without asking: a no-CORS fetch with a text/plain body.
NO_CORS_POSTS = """
async ({api, runId}) => {
    const body = JSON.stringify({scenario_id: "hello_sequence", input: {name: "evil"}});
    const answers = [];
    for (const [path, data] of [["/api/runs", body], [`/api/runs/${runId}/cancel`, ""]]) {
        try {
            const r = await fetch(api + path, {method: "POST", mode: "no-cors", body: data});
            answers.push(r.type);
        } catch (error) {
            answers.push(String(error));
        }
    }
    return answers;
}
"""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture
def idle(
    app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis
) -> Callable[..., Any]:
    """Apps whose runs stay queued: their broker is a database no worker consumes."""

    def make(**overrides: Any) -> Any:
        return app_factory(broker_url=url_of(broker), **overrides)

    return make


@contextlib.contextmanager
def evil_site(api: str, run_id: str) -> Iterator[str]:
    """Another origin: a second HTTP server, on another port, serving the attacker's page."""
    html = EVIL_PAGE.format(api=api, run_id=run_id).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def queued_run(url: str) -> str:
    response = httpx.post(f"{url}/api/runs", json={"scenario_id": "test_continue"}, timeout=10)
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


def ws_url(api: str, run_id: str) -> str:
    return "ws" + api[len("http") :] + f"/api/runs/{run_id}/ws"


def submit_form(page: Any, form: str) -> int:
    """Submit one of the evil page's forms; the status the API answered it with."""
    with page.expect_navigation() as navigation:
        page.evaluate(f"document.getElementById('{form}').submit()")
    return int(navigation.value.status)


def test_a_page_on_another_origin_can_neither_stream_nor_post_nor_frame(
    idle: Callable[..., Any], page: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    with serve(idle()) as api:
        run_id = queued_run(api.url)
        with evil_site(api.url, run_id) as evil:
            page.goto(evil)
            opened = page.evaluate(OPEN_WS, ws_url(api.url, run_id))
            fetched = page.evaluate(NO_CORS_POSTS, {"api": api.url, "runId": run_id})
            framed = [f.url for f in page.frames if f != page.main_frame]
            created = submit_form(page, "create")
            page.goto(evil)
            cancelled = submit_form(page, "cancel")

    outcome = {
        "websocket": opened,
        "no-cors fetches": fetched,
        "form posts": [created, cancelled],
        "runs": r.zrange(keys.runs_index(), 0, -1),
        "status": r.hget(keys.run(run_id), "status"),
        "messages sent": broker.llen("stepstream"),
    }
    assert outcome == {
        "websocket": "closed 1006",  # the handshake was refused: it never opened
        "no-cors fetches": ["opaque", "opaque"],  # sent, answered 403, unreadable
        "form posts": [403, 403],
        # Nothing was created or changed: the one run is still queued, sent once.
        "runs": [run_id],
        "status": "queued",
        "messages sent": 1,
    }
    # The UI refused to render inside the attacker's frame (clickjacking).
    assert framed and all(url.startswith("chrome-error:") for url in framed), framed


def test_an_allowlisted_origin_may_open_the_websocket(
    idle: Callable[..., Any], page: Any, r: redis.Redis
) -> None:
    with (
        evil_site("http://unused.invalid", "x") as other,
        serve(idle(allowed_origins=(other,))) as api,
    ):
        run_id = queued_run(api.url)
        page.goto(other)
        assert page.evaluate(OPEN_WS, ws_url(api.url, run_id)) == "open"


def test_the_ui_works_under_its_csp_with_no_violation(
    idle: Callable[..., Any], page: Any, r: redis.Redis
) -> None:
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    with serve(idle()) as api:
        run_id = queued_run(api.url)
        response = page.goto(f"{api.url}/runs/{run_id}")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        # Its WebSocket opened (connect-src 'self' covers ws: on the same host and port).
        page.locator('#connection[data-state="live"]').wait_for()
        # The step boxes are placed through the CSSOM, which the CSP allows.
        boxes = page.locator(".step")
        boxes.first.wait_for()
        lefts = boxes.evaluate_all("els => els.map(el => el.style.left)")
        assert lefts and all(left.endswith("px") for left in lefts), lefts
        # Its own stylesheet applied.
        assert page.locator("header").evaluate("el => getComputedStyle(el).display") == "flex"
    assert violations == []
