"""With STEPSTREAM_API_TOKEN set, every `/api` route needs the token (SPEC §6, §14).

The token is accepted as `Authorization: Bearer <token>` or, on the two streaming
routes only (browsers cannot set headers on a WebSocket or an EventSource), as
`?access_token=<token>`, which is never logged. The probes stay open. Run tokens are
tested in test_run_tokens.py.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import websocket
from clients import first_event, sse_connection, ws_connection
from conftest import url_of, wait_for
from werkzeug.serving import make_server

from client.streams import WSStream

TOKEN = "s3cret"
GOOD_HEADER = {"Authorization": f"Bearer {TOKEN}"}
RUN_BODY = {"scenario_id": "hello_sequence", "input": {"name": "x"}}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    #: The status with a good token.
    ok: int
    headers: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None

    def url(self, run_id: str) -> str:
        return self.path.format(run_id=run_id)


JSON = (("Accept", "application/json"),)
SSE = (("Accept", "text/event-stream"),)

#: Every `/api` route of SPEC §6 but the streaming ones, which need a real server.
ROUTES = [
    pytest.param(Route("POST", "/api/runs", 202, body=RUN_BODY), id="create-run"),
    pytest.param(Route("GET", "/api/runs", 200), id="list-runs"),
    pytest.param(Route("GET", "/api/runs/{run_id}", 200), id="snapshot"),
    pytest.param(
        Route("POST", "/api/runs/{run_id}/cancel", 202),
        id="cancel",
    ),
    pytest.param(Route("GET", "/api/runs/{run_id}/events", 200, JSON), id="events-page"),
    pytest.param(Route("GET", "/api/scenarios", 200), id="scenarios"),
    pytest.param(Route("GET", "/api/scenarios/hello_sequence", 200), id="scenario"),
    pytest.param(Route("GET", "/api/tools", 200), id="tools"),
    pytest.param(
        Route("GET", "/api/workers", 200),
        id="workers",
    ),
    pytest.param(Route("GET", "/api/openapi.json", 200), id="openapi"),
]
#: The same routes for the refusals, which must not depend on the route being built,
#: plus the streams and a route that does not exist (a 401 must not reveal a 404).
REFUSED = [
    *[pytest.param(*p.values, id=p.id) for p in ROUTES],
    pytest.param(Route("GET", "/api/runs/{run_id}/events", 200, SSE), id="events-sse"),
    pytest.param(Route("GET", "/api/runs/{run_id}/ws", 101), id="ws-plain-get"),
    pytest.param(Route("GET", "/api/no/such/route", 404), id="unknown-route"),
]
BAD_CREDENTIALS = [
    pytest.param({}, "", id="none"),
    pytest.param({"Authorization": "Bearer wrong"}, "", id="wrong-bearer"),
    pytest.param({"Authorization": f"Bearer {TOKEN}x"}, "", id="longer-bearer"),
    pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, "", id="prefix-bearer"),
    pytest.param({"Authorization": f"Bearer {TOKEN.upper()}"}, "", id="case-bearer"),
    pytest.param({"Authorization": f"Bearer {TOKEN} extra"}, "", id="bearer-extra"),
    pytest.param({"Authorization": TOKEN}, "", id="no-scheme"),
    pytest.param({"Authorization": "Bearer"}, "", id="scheme-only"),
    pytest.param({"Authorization": "Bearer "}, "", id="scheme-space"),
    pytest.param({"Authorization": f"Basic {TOKEN}"}, "", id="basic"),
    pytest.param({"Authorization": "Basic czNjcmV0"}, "", id="basic-base64"),
    pytest.param({"Authorization": f"Token {TOKEN}"}, "", id="other-scheme"),
    pytest.param({}, "access_token=wrong", id="wrong-query"),
    pytest.param({}, "access_token=", id="empty-query"),
    pytest.param({}, f"token={TOKEN}", id="other-query-name"),
]


@pytest.fixture
def token_app(app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis) -> Any:
    # The idle broker keeps these runs queued.
    return app_factory(api_token=TOKEN, broker_url=url_of(broker))


@pytest.fixture
def token_client(token_app: Any) -> Any:
    return token_app.test_client()


@pytest.fixture
def token_server(token_app: Any) -> Iterator[str]:
    """The token app on a real threaded HTTP server; yields `host:port`."""
    server = make_server("127.0.0.1", 0, token_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def run_id(token_client: Any) -> str:
    """A queued run (no worker takes it), so a refusal is never a 404."""
    response = token_client.post("/api/runs", json=RUN_BODY, headers=GOOD_HEADER)
    assert response.status_code == 202, response.get_data(as_text=True)
    return str(response.get_json()["run_id"])


def assert_unauthorized(status: int, headers: Any, body: Any) -> None:
    assert status == 401, body
    headers = httpx.Headers(dict(headers))  # websocket-client lowercases the names
    assert headers.get("WWW-Authenticate", "").lower().startswith("bearer")
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)


def call(client: Any, route: Route, run_id: str, headers: dict[str, str], query: str) -> Any:
    url = route.url(run_id) + (f"?{query}" if query else "")
    return client.open(
        url, method=route.method, headers={**dict(route.headers), **headers}, json=route.body
    )


def ws_connect(
    host: str, run_id: str, query: str = "", headers: dict[str, str] | None = None
) -> WSStream:
    return ws_connection(f"http://{host}", run_id, query=query, headers=headers, timeout=10)


def first_event_over_ws(
    host: str, run_id: str, query: str = "", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    with ws_connect(host, run_id, query, headers) as conn:
        return first_event(conn.frames())


def first_event_over_sse(
    host: str, run_id: str, query: str = "", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    url = f"http://{host}"
    with sse_connection(url, run_id, query=query, headers=headers, timeout=10) as stream:
        response = stream.response
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return first_event(m.data for m in stream.messages())


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "query"), BAD_CREDENTIALS)
@pytest.mark.parametrize("route", REFUSED)
def test_api_route_without_good_token_is_401(
    token_client: Any,
    r: redis.Redis,
    run_id: str,
    route: Route,
    headers: dict[str, str],
    query: str,
) -> None:
    runs_before = r.zcard("stepstream:runs")
    response = call(token_client, route, run_id, headers, query)
    assert_unauthorized(response.status_code, response.headers, response.get_json())
    assert r.zcard("stepstream:runs") == runs_before


@pytest.mark.parametrize(("headers", "query"), BAD_CREDENTIALS)
def test_websocket_handshake_without_good_token_is_401(
    token_server: str, run_id: str, headers: dict[str, str], query: str
) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connect(token_server, run_id, query, headers)
    assert refused.value.status_code == 401
    assert_unauthorized(401, refused.value.resp_headers or {}, json.loads(refused.value.resp_body))


@pytest.mark.parametrize(("headers", "query"), BAD_CREDENTIALS)
def test_sse_without_good_token_is_401_on_a_real_server(
    token_server: str, run_id: str, headers: dict[str, str], query: str
) -> None:
    url = f"http://{token_server}/api/runs/{run_id}/events" + (f"?{query}" if query else "")
    # h11 will not send a header value with trailing space ("Bearer "): strip it.
    sent = {"Accept": "text/event-stream", **{k: v.strip() for k, v in headers.items()}}
    response = httpx.get(url, headers=sent, timeout=10)
    assert_unauthorized(response.status_code, response.headers, response.json())


def test_unknown_run_without_token_is_401_not_404(token_client: Any, token_server: str) -> None:
    """Without the token, nothing tells whether a run exists."""
    response = token_client.get("/api/runs/no-such-run")
    assert_unauthorized(response.status_code, response.headers, response.get_json())
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connect(token_server, "no-such-run")
    assert refused.value.status_code == 401


# -- acceptance ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        pytest.param(GOOD_HEADER, "", id="bearer"),
        pytest.param({"Authorization": f"bearer {TOKEN}"}, "", id="bearer-lowercase"),
    ],
)
@pytest.mark.parametrize("route", ROUTES)
def test_api_route_with_token_works(
    token_client: Any, run_id: str, route: Route, headers: dict[str, str], query: str
) -> None:
    response = call(token_client, route, run_id, headers, query)
    assert response.status_code == route.ok, response.get_data(as_text=True)


@pytest.mark.parametrize("route", ROUTES)
def test_api_token_in_the_query_string_only_on_streaming_routes(
    token_server: str, r: redis.Redis, run_id: str, route: Route
) -> None:
    """Elsewhere it would sit in URLs, browser history and proxies' logs for nothing:
    only the streaming routes (which a browser cannot give a header) read it."""
    runs_before = r.zcard("stepstream:runs")
    url = f"http://{token_server}{route.url(run_id)}?access_token={TOKEN}"
    response = httpx.request(
        route.method, url, headers=dict(route.headers), json=route.body, timeout=10
    )
    if route.path.endswith("/events"):  # the events page: the SSE route's other answer
        assert response.status_code == route.ok, response.text
    else:
        assert_unauthorized(response.status_code, response.headers, response.json())
        assert "only on the streaming routes" in response.json()["error"]["message"]
        assert r.zcard("stepstream:runs") == runs_before


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        pytest.param(GOOD_HEADER, "", id="bearer"),
        pytest.param({}, f"access_token={TOKEN}", id="query"),
    ],
)
def test_streams_with_token_work(
    token_server: str, run_id: str, headers: dict[str, str], query: str
) -> None:
    for first in (
        first_event_over_ws(token_server, run_id, query, headers),
        first_event_over_sse(token_server, run_id, query, headers),
    ):
        assert first["type"] == "run_queued" and first["run_id"] == run_id


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="no-token"), pytest.param({"Authorization": "Bearer wrong"}, id="wrong")],
)
def test_probes_stay_open(token_client: Any, path: str, headers: dict[str, str]) -> None:
    response = token_client.get(path, headers=headers)
    # /readyz is 503 here (no worker runs for this file); it is open all the same.
    expected = (200, 503) if path == "/readyz" else (200,)
    assert response.status_code in expected, response.get_data(as_text=True)
    if path == "/metrics":
        assert response.mimetype == "text/plain"
        assert "# TYPE" in response.get_data(as_text=True)


# -- the token stays out of the logs -------------------------------------------------------


def raw_get(host: str, target: str, headers: tuple[tuple[str, str], ...] = ()) -> int:
    """GET `target` exactly as written (httpx would normalise its escapes); the status."""
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request("GET", target, headers=dict(headers))
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def served_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the server side logged: the clients' own loggers are left out."""
    clients = ("httpx", "httpcore", "websocket", "urllib3")
    return [rec.getMessage() for rec in caplog.records if not rec.name.startswith(clients)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "query",
    [
        pytest.param(f"access_token={TOKEN}", id="plain"),
        pytest.param(f"limit=5&access_token={TOKEN}&x=1", id="among-others"),
        pytest.param(f"access%5Ftoken={TOKEN}", id="escaped-name"),
        pytest.param(f"access%5ftoken={TOKEN}", id="escaped-name-lowercase"),
        pytest.param(f"%61ccess_token={TOKEN}", id="escaped-letter"),
    ],
)
def test_access_token_never_appears_in_request_log(
    token_server: str, run_id: str, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    caplog.set_level(logging.DEBUG)
    # Refused requests are logged too, with the token they carried: in the query string,
    # the API token is only read by the streaming routes.
    assert raw_get(token_server, f"/api/scenarios?{query}") == 401
    assert raw_get(token_server, f"/api/runs/{run_id}?{query}") == 401
    assert raw_get(token_server, f"/api/runs/{run_id}/events?{query}", JSON) == 200
    assert raw_get(token_server, f"/api/runs/nope/events?{query}", JSON) == 404
    assert first_event_over_sse(token_server, run_id, query)["type"] == "run_queued"
    assert first_event_over_ws(token_server, run_id, query)["type"] == "run_queued"

    # Every request above was logged (so the check below has something to check); the
    # WebSocket's line is written once the server notices that the client has gone.
    for path in ("/api/scenarios", f"/api/runs/{run_id}?", "/events", "/api/runs/nope", "/ws"):
        wait_for(
            lambda p=path: any(p in m for m in served_messages(caplog)),
            what=f"the log line of {path}",
        )
    # ... and none of them with the token.
    assert not [m for m in served_messages(caplog) if TOKEN in m]
