"""What a web page on another site, or one reached through DNS rebinding, cannot make
the API do (SPEC §14), over real HTTP to real servers.

- A POST declares `Content-Type: application/json` or sends no body: anything else (the
  types an HTML form or a no-CORS fetch can send) is 415 and changes nothing.
- The `Host` must be one the web answers to (`STEPSTREAM_ALLOWED_HOSTS`; by default
  localhost, 127.0.0.1, ::1 and the address the connection came in on): else 400.
  The probes answer whatever the `Host`.
- A WebSocket upgrade or an unsafe method carrying an `Origin` other than the web's own
  or one of `STEPSTREAM_ALLOWED_ORIGINS` is 403. No `Origin` (curl, servers): allowed.
- The UI pages carry a CSP that allows only the server's own scripts and styles, and
  refuse to be framed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websocket
from clients import ws_connection
from conftest import LiveServer, serve, url_of
from werkzeug.serving import make_server

from client.streams import WSStream
from devtools.processes import spawn, wait_ready
from devtools.redis_server import free_port
from tasks import keys
from tasks.config import Settings

RUNS = "/api/runs"
RUN_BODY = b'{"scenario_id": "hello_sequence", "input": {"name": "Ada"}}'
#: The content types a cross-site HTML form, or a `fetch` without CORS, can send.
SIMPLE_TYPES = {
    "text/plain": RUN_BODY,
    "text/plain;charset=UTF-8": RUN_BODY,
    "application/x-www-form-urlencoded": b"scenario_id=hello_sequence&input.name=Ada",
    "multipart/form-data; boundary=x": (
        b'--x\r\nContent-Disposition: form-data; name="scenario_id"\r\n\r\n'
        b"hello_sequence\r\n--x--\r\n"
    ),
}
POST_ROUTES = (RUNS, "/api/runs/{run_id}/cancel", "/api/tools/refresh")
FOREIGN = "http://evil.example"


@pytest.fixture
def idle(app_factory: Callable[..., Any], broker: redis.Redis) -> Callable[..., Any]:
    """Apps whose runs stay queued: their broker is a database no worker consumes."""

    def make(**overrides: Any) -> Any:
        return app_factory(broker_url=url_of(broker), **overrides)

    return make


@pytest.fixture
def server(idle: Callable[..., Any], r: redis.Redis) -> Iterator[LiveServer]:
    with serve(idle()) as live:
        yield live


def queued_run(url: str) -> str:
    response = httpx.post(f"{url}{RUNS}", content=RUN_BODY, headers=JSON, timeout=10)
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


JSON = {"Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"], body


def state(r: redis.Redis, broker: redis.Redis) -> tuple[list[Any], list[Any], int]:
    """What a request could have changed: the runs, their statuses, the messages sent."""
    runs = sorted(r.zrange(keys.runs_index(), 0, -1))
    statuses = [r.hget(keys.run(run_id), "status") for run_id in runs]
    return runs, statuses, int(broker.llen("stepstream"))


# -- 415 -------------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", SIMPLE_TYPES)
@pytest.mark.parametrize("route", POST_ROUTES)
def test_a_post_in_a_type_a_form_can_send_is_415_and_changes_nothing(
    route: str, ctype: str, server: LiveServer, r: redis.Redis, broker: redis.Redis
) -> None:
    path = route.format(run_id=queued_run(server.url))
    before = state(r, broker)
    response = httpx.post(
        f"{server.url}{path}", content=SIMPLE_TYPES[ctype], headers={"Content-Type": ctype}
    )
    assert_error(response, 415, "unsupported_media_type")
    assert "application/json" in response.json()["error"]["message"]
    assert state(r, broker) == before


@pytest.mark.parametrize("route", POST_ROUTES)
def test_a_non_json_type_is_415_even_with_an_empty_body(
    route: str, server: LiveServer, r: redis.Redis, broker: redis.Redis
) -> None:
    # An empty text/plain form POST is all a cross-site page needs to cancel a run.
    path = route.format(run_id=queued_run(server.url))
    before = state(r, broker)
    response = httpx.post(f"{server.url}{path}", headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")
    assert state(r, broker) == before


def test_a_post_without_a_body_needs_no_content_type(server: LiveServer, r: redis.Redis) -> None:
    """`curl -X POST .../cancel`: no body, no Content-Type, as curl sends it."""
    run_id = queued_run(server.url)
    request = httpx.Request("POST", f"{server.url}{RUNS}/{run_id}/cancel")
    assert "content-type" not in request.headers
    response = httpx.Client().send(request)
    assert response.status_code == 202, response.text
    assert r.hget(keys.run(run_id), "status") == "cancelled"
    refresh = httpx.post(f"{server.url}/api/tools/refresh")
    assert refresh.status_code == 202, refresh.text


def test_a_body_without_a_content_type_is_415(
    server: LiveServer, r: redis.Redis, broker: redis.Redis
) -> None:
    request = httpx.Request("POST", f"{server.url}{RUNS}", content=RUN_BODY)
    request.headers.pop("Content-Type", None)  # httpx sets none for bytes; be sure
    response = httpx.Client().send(request)
    assert_error(response, 415, "unsupported_media_type")
    assert state(r, broker) == ([], [], 0)


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        'application/json; charset="utf-8"',
    ],
)
def test_json_in_any_spelling_of_its_type_is_accepted(ctype: str, server: LiveServer) -> None:
    response = httpx.post(f"{server.url}{RUNS}", content=RUN_BODY, headers={"Content-Type": ctype})
    assert response.status_code == 202, response.text


# -- Host --------------------------------------------------------------------------------


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


@pytest.mark.parametrize("path", ["/", "/api/scenarios", "/static/app.js", "/nowhere"])
def test_a_foreign_host_is_400(path: str, server: LiveServer) -> None:
    for host in ("evil.example", f"evil.example:{port_of(server.url)}", "127.0.0.1.evil.example"):
        response = httpx.get(f"{server.url}{path}", headers={"Host": host})
        assert_error(response, 400, "host_not_allowed")


def test_a_foreign_host_cannot_post(
    server: LiveServer, r: redis.Redis, broker: redis.Redis
) -> None:
    response = httpx.post(
        f"{server.url}{RUNS}", content=RUN_BODY, headers={**JSON, "Host": "rebound.example"}
    )
    assert_error(response, 400, "host_not_allowed")
    assert state(r, broker) == ([], [], 0)


def test_the_local_names_are_answered_by_default(server: LiveServer) -> None:
    port = port_of(server.url)
    for host in ("localhost", f"localhost:{port}", "LOCALHOST.", "127.0.0.1", f"[::1]:{port}"):
        response = httpx.get(f"{server.url}/api/scenarios", headers={"Host": host})
        assert response.status_code == 200, (host, response.text)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_the_probes_answer_any_host(path: str, server: LiveServer) -> None:
    """Orchestrators call them by the pod's IP or a service name; they reveal nothing."""
    response = httpx.get(f"{server.url}{path}", headers={"Host": "10.1.2.3:8000"})
    assert response.status_code != 400, response.text


def test_the_allowlist_opens_a_host_and_replaces_the_default_names(
    idle: Callable[..., Any], r: redis.Redis
) -> None:
    with serve(idle(allowed_hosts=("stepstream.example",))) as live:
        port = port_of(live.url)
        ok = httpx.get(f"{live.url}/api/scenarios", headers={"Host": f"stepstream.example:{port}"})
        assert ok.status_code == 200, ok.text
        assert_error(
            httpx.get(f"{live.url}/api/scenarios", headers={"Host": "localhost"}),
            400,
            "host_not_allowed",
        )
        # The address the connection came in on is always its own, whatever the list.
        assert httpx.get(f"{live.url}/api/scenarios").status_code == 200


def test_a_star_allows_every_host(idle: Callable[..., Any], r: redis.Redis) -> None:
    with serve(idle(allowed_hosts=("*",))) as live:
        response = httpx.get(f"{live.url}/api/scenarios", headers={"Host": "anything.example"})
        assert response.status_code == 200, response.text


@contextlib.contextmanager
def serve_on(app: Any, address: str) -> Iterator[str]:
    server = make_server(address, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_the_address_the_server_is_bound_to_is_answered(
    idle: Callable[..., Any], r: redis.Redis
) -> None:
    """Bound to 127.0.0.2 (not in the default names): that address is answered, another
    one is not."""
    with serve_on(idle(), "127.0.0.2") as url:
        assert httpx.get(f"{url}/api/scenarios").status_code == 200
        assert_error(
            httpx.get(f"{url}/api/scenarios", headers={"Host": "127.0.0.3"}),
            400,
            "host_not_allowed",
        )


def test_under_gunicorn_the_bound_address_is_answered(
    base_env: dict[str, str], tmp_path: Path, r: redis.Redis
) -> None:
    """gunicorn as production runs it, bound to 127.0.0.2 only."""
    url = f"http://127.0.0.2:{free_port()}"
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"]
    command += ["--bind", url.removeprefix("http://"), "web:create_app()"]
    proc = spawn(command, base_env, tmp_path / "web.log")

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    try:
        wait_ready(proc, answers, what="gunicorn", log_path=tmp_path / "web.log", give_up=kill)
        assert httpx.get(f"{url}/api/scenarios", timeout=10).status_code == 200
        assert_error(
            httpx.get(f"{url}/api/scenarios", headers={"Host": "evil.example"}, timeout=10),
            400,
            "host_not_allowed",
        )
    finally:
        kill()


def test_the_settings_read_both_lists_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "STEPSTREAM_ALLOWED_HOSTS": " a.example, B.Example ,,",
            "STEPSTREAM_ALLOWED_ORIGINS": "https://App.example:8443/, http://b.example",
        }
    )
    assert settings.allowed_hosts == ("a.example", "b.example")
    assert settings.allowed_origins == ("https://app.example:8443", "http://b.example")
    default = Settings.from_env({})
    assert default.allowed_hosts == ("localhost", "127.0.0.1", "::1")
    assert default.allowed_origins == ()


# -- Origin ------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [FOREIGN, "null", "http://127.0.0.1", "https://127.0.0.1"])
def test_a_post_from_a_foreign_origin_is_403(
    origin: str, server: LiveServer, r: redis.Redis, broker: redis.Redis
) -> None:
    # The same host on another port or scheme is another origin.
    response = httpx.post(
        f"{server.url}{RUNS}", content=RUN_BODY, headers={**JSON, "Origin": origin}
    )
    assert_error(response, 403, "origin_not_allowed")
    assert state(r, broker) == ([], [], 0)


def test_a_cancel_from_a_foreign_origin_is_403(
    server: LiveServer, r: redis.Redis, broker: redis.Redis
) -> None:
    run_id = queued_run(server.url)
    before = state(r, broker)
    response = httpx.post(f"{server.url}{RUNS}/{run_id}/cancel", headers={"Origin": FOREIGN})
    assert_error(response, 403, "origin_not_allowed")
    assert state(r, broker) == before


def test_a_post_from_the_webs_own_origin_or_none_is_accepted(server: LiveServer) -> None:
    port = port_of(server.url)
    own = {
        "127.0.0.1": {"Origin": server.url},
        "localhost": {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"},
        "none": {},
    }
    for name, headers in own.items():
        response = httpx.post(f"{server.url}{RUNS}", content=RUN_BODY, headers=JSON | headers)
        assert response.status_code == 202, (name, response.text)


def test_a_read_from_a_foreign_origin_is_left_to_cors(server: LiveServer) -> None:
    """A GET cannot change anything, and without CORS headers a page cannot read it."""
    response = httpx.get(f"{server.url}/api/scenarios", headers={"Origin": FOREIGN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_an_allowlisted_origin_may_post(idle: Callable[..., Any], r: redis.Redis) -> None:
    with serve(idle(allowed_origins=("https://app.example",))) as live:
        ok = httpx.post(
            f"{live.url}{RUNS}", content=RUN_BODY, headers={**JSON, "Origin": "https://app.example"}
        )
        assert ok.status_code == 202, ok.text
        refused = httpx.post(
            f"{live.url}{RUNS}", content=RUN_BODY, headers={**JSON, "Origin": FOREIGN}
        )
        assert_error(refused, 403, "origin_not_allowed")
    with serve(idle(allowed_origins=("*",))) as live:
        ok = httpx.post(f"{live.url}{RUNS}", content=RUN_BODY, headers={**JSON, "Origin": FOREIGN})
        assert ok.status_code == 202, ok.text


def ws_connect(live: LiveServer, run_id: str, origin: str | None) -> WSStream:
    return ws_connection(
        live.url, run_id, timeout=10, origin=origin, suppress_origin=origin is None
    )


def test_a_websocket_from_a_foreign_origin_is_403(server: LiveServer) -> None:
    run_id = queued_run(server.url)
    for origin in (FOREIGN, "null"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ws_connect(server, run_id, origin)
        assert refused.value.status_code == 403


def test_a_websocket_from_the_webs_own_origin_or_none_opens(server: LiveServer) -> None:
    run_id = queued_run(server.url)
    for origin in (server.url, None):
        with ws_connect(server, run_id, origin) as conn:
            first = next(conn.frames()).decode()
            assert '"run_created"' in first or '"type"' in first


def test_a_websocket_from_an_allowlisted_origin_opens(
    idle: Callable[..., Any], r: redis.Redis
) -> None:
    with serve(idle(allowed_origins=("https://app.example",))) as live:
        run_id = queued_run(live.url)
        conn = ws_connect(live, run_id, "https://app.example")
        conn.close()
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ws_connect(live, run_id, FOREIGN)
        assert refused.value.status_code == 403


# -- headers -----------------------------------------------------------------------------


class InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.found += [f"{tag} {n}" for n in names if n.startswith("on") or n == "style"]
        if tag == "style" or (tag == "script" and "src" not in names):
            self._in = tag
            self.found.append(f"inline <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        self._in = None


@pytest.mark.parametrize("path", ["/", "/runs/{run_id}"])
def test_the_ui_pages_carry_the_security_headers(path: str, server: LiveServer) -> None:
    response = httpx.get(f"{server.url}{path.format(run_id=queued_run(server.url))}")
    assert response.status_code == 200
    csp = {
        d.strip().split(" ", 1)[0]: d.strip()
        for d in response.headers["content-security-policy"].split(";")
    }
    assert csp["default-src"] == "default-src 'self'"
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert "unsafe-eval" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    parser = InlineCode()
    parser.feed(response.text)
    assert parser.found == []


def test_api_answers_and_errors_carry_them_too(server: LiveServer) -> None:
    for response in (
        httpx.get(f"{server.url}/api/scenarios"),
        httpx.get(f"{server.url}/api/runs/nope"),
        httpx.get(f"{server.url}/api/scenarios", headers={"Host": "evil.example"}),
        httpx.get(f"{server.url}/static/app.js"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
