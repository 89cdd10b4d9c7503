"""Run tokens (SPEC §14): `POST /api/runs` answers with `stream_token`, which reads that
one run (snapshot, events page, SSE, WebSocket; as `?access_token=` or a bearer) and
nothing else, until it expires. Against real servers: gunicorn as production runs it,
and Werkzeug's server for the variants of the settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websocket
from click.testing import CliRunner
from clients import first_event, sse_connection, submit, ws_connection
from conftest import WebProcess, WorkerProcess, serve, start_web, url_of, wait_for
from itsdangerous import URLSafeTimedSerializer

from client.cli import main
from tasks.config import Settings
from web.run_tokens import RunTokens

TOKEN = "api-s3cret"
API = {"Authorization": f"Bearer {TOKEN}"}
RUN_BODY = {"scenario_id": "hello_sequence", "input": {"name": "x"}}


@pytest.fixture(scope="module")
def web(
    base_env: dict[str, str], idle_broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """gunicorn with an API token, sending runs to a broker database no worker reads
    (the `broker` fixture's), so that they stay queued."""
    env = {
        **base_env,
        "STEPSTREAM_API_TOKEN": TOKEN,
        "STEPSTREAM_BROKER_URL": idle_broker_url,
    }
    process: WebProcess = start_web(env, tmp_path_factory.mktemp("logs"), "web-run-tokens")
    try:
        yield process.url
    finally:
        process.kill()


@pytest.fixture
def two_runs(web: str, r: redis.Redis, broker: redis.Redis) -> tuple[dict[str, Any], ...]:
    """Two queued runs, as their POST answered them."""
    return tuple(submit(web, "hello_sequence", {"name": n}, API) for n in ("a", "b"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- reading with a run token --------------------------------------------------------------


def snapshot(url: str, run_id: str, query: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = httpx.get(f"{url}/api/runs/{run_id}?{query}", headers=headers, timeout=10)
    return response.status_code, response.json()


def events_page(url: str, run_id: str, query: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = httpx.get(
        f"{url}/api/runs/{run_id}/events?{query}",
        headers={"Accept": "application/json", **headers},
        timeout=10,
    )
    return response.status_code, response.json()


def sse_first(url: str, run_id: str, query: str, headers: dict[str, str]) -> tuple[int, Any]:
    with sse_connection(url, run_id, query=query, headers=headers, timeout=10) as stream:
        if stream.response.status_code != 200:
            return stream.response.status_code, json.loads(stream.response.read())
        return 200, first_event(m.data for m in stream.messages())


def ws_first(url: str, run_id: str, query: str, headers: dict[str, str]) -> tuple[int, Any]:
    try:
        conn = ws_connection(url, run_id, query=query, headers=headers, timeout=10)
    except websocket.WebSocketBadStatusException as refused:
        return refused.status_code, json.loads(refused.resp_body)
    with conn:
        return 101, first_event(conn.frames())


READS = [
    pytest.param(snapshot, 200, id="snapshot"),
    pytest.param(events_page, 200, id="events-page"),
    pytest.param(sse_first, 200, id="sse"),
    pytest.param(ws_first, 101, id="ws"),
]
#: How a token is passed: (query string, headers).
PASSING = [
    pytest.param(lambda t: (f"access_token={t}", {}), id="query"),
    pytest.param(lambda t: ("", bearer(t)), id="bearer"),
]

Read = Callable[[str, str, str, dict[str, str]], tuple[int, Any]]
Passing = Callable[[str], tuple[str, dict[str, str]]]


def check_read(body: Any, run_id: str) -> None:
    """What each read returns names the run: a snapshot, a page, or its first event."""
    if "events" in body:
        body = body["events"][0]
    assert body["run_id"] == run_id
    assert body.get("type", "run_queued") == "run_queued"


def assert_refused(status: int, body: Any) -> None:
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("passing", PASSING)
@pytest.mark.parametrize(("read", "ok"), READS)
def test_a_run_token_reads_its_run(
    web: str, two_runs: tuple[dict[str, Any], ...], read: Read, ok: int, passing: Passing
) -> None:
    run = two_runs[0]
    query, headers = passing(run["stream_token"])
    status, body = read(web, run["run_id"], query, headers)
    assert status == ok, body
    check_read(body, run["run_id"])


@pytest.mark.parametrize("passing", PASSING)
@pytest.mark.parametrize(("read", "ok"), READS)
def test_a_run_token_does_not_read_another_run(
    web: str, two_runs: tuple[dict[str, Any], ...], read: Read, ok: int, passing: Passing
) -> None:
    first, second = two_runs
    query, headers = passing(first["stream_token"])
    assert_refused(*read(web, second["run_id"], query, headers))


#: Every other route, with what it would do: none of it is the run token's to do.
ELSEWHERE = [
    pytest.param("POST", "/api/runs/{run_id}/cancel", None, id="cancel-its-run"),
    pytest.param("POST", "/api/runs", RUN_BODY, id="create-run"),
    pytest.param("GET", "/api/runs", None, id="list-runs"),
    pytest.param("GET", "/api/tools", None, id="tools"),
    pytest.param("POST", "/api/tools/refresh", None, id="refresh-tools"),
    pytest.param("GET", "/api/scenarios", None, id="scenarios"),
    pytest.param("GET", "/api/workers", None, id="workers"),
    pytest.param("GET", "/api/openapi.json", None, id="openapi"),
    pytest.param("GET", "/api/runs/{run_id}/nope", None, id="unknown-route"),
]


@pytest.mark.parametrize("passing", PASSING)
@pytest.mark.parametrize(("method", "path", "body"), ELSEWHERE)
def test_a_run_token_is_refused_on_every_other_route(
    web: str,
    r: redis.Redis,
    two_runs: tuple[dict[str, Any], ...],
    method: str,
    path: str,
    body: Any,
    passing: Passing,
) -> None:
    run = two_runs[0]
    query, headers = passing(run["stream_token"])
    runs_before = r.zcard("stepstream:runs")
    response = httpx.request(
        method,
        f"{web}{path.format(run_id=run['run_id'])}?{query}",
        headers=headers,
        json=body,
        timeout=10,
    )
    assert_refused(response.status_code, response.json())
    assert r.zcard("stepstream:runs") == runs_before
    # Its run was not cancelled.
    assert httpx.get(f"{web}/api/runs/{run['run_id']}", headers=API).json()["status"] == "queued"


def forged(token: str, other_run: str) -> list[str]:
    payload, timestamp, signature = token.split(".")
    # The first character: the last one's low bits are base64 padding, ignored.
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    other_payload = URLSafeTimedSerializer("x").dump_payload({"run": other_run}).decode()
    signed_elsewhere = URLSafeTimedSerializer("another key", salt="stepstream.run-token.v1")
    return [
        f"{payload}.{timestamp}.{flipped}",  # a signature altered
        f"{other_payload}.{timestamp}.{signature}",  # another run under its signature
        f"{payload}.{timestamp}",  # no signature
        signed_elsewhere.dumps({"run": other_run}),  # another key
        "not-a-token",
    ]


@pytest.mark.parametrize(("read", "ok"), READS)
def test_forged_and_tampered_tokens_are_refused(
    web: str, two_runs: tuple[dict[str, Any], ...], read: Read, ok: int
) -> None:
    first, second = two_runs
    for token in forged(first["stream_token"], second["run_id"]):
        assert_refused(*read(web, second["run_id"], "", bearer(token)))
        assert_refused(*read(web, first["run_id"], f"access_token={token}", {}))


def test_an_idempotent_replay_carries_a_run_token(web: str, r: redis.Redis, broker: Any) -> None:
    headers = {**API, "Idempotency-Key": "replay-token"}
    first = httpx.post(f"{web}/api/runs", json=RUN_BODY, headers=headers, timeout=10)
    again = httpx.post(f"{web}/api/runs", json=RUN_BODY, headers=headers, timeout=10)
    assert (first.status_code, again.status_code) == (202, 200)
    run_id = first.json()["run_id"]
    assert again.json()["run_id"] == run_id
    status, body = snapshot(web, run_id, "", bearer(again.json()["stream_token"]))
    assert status == 200 and body["run_id"] == run_id


# -- expiry, keys, and servers without a key ---------------------------------------------------


@pytest.mark.slow
def test_a_run_token_expires(app_factory: Callable[..., Any], broker: redis.Redis) -> None:
    with serve(app_factory(api_token=TOKEN, run_token_ttl_s=2, broker_url=url_of(broker))) as s:
        run = submit(s.url, "hello_sequence", {"name": "x"}, API)
        token = run["stream_token"]
        assert snapshot(s.url, run["run_id"], "", bearer(token))[0] == 200

        # Polled until its time is up (a couple of seconds), never slept on.
        def refused() -> Any:
            status, body = snapshot(s.url, run["run_id"], "", bearer(token))
            return status == 401 and body

        body = wait_for(refused, timeout=15, what="the run token to expire")
        assert "expired" in body["error"]["message"]
        for read in (events_page, sse_first, ws_first):
            assert_refused(*read(s.url, run["run_id"], f"access_token={token}", {}))
        # The API token still reads it.
        assert snapshot(s.url, run["run_id"], "", API)[0] == 200


@pytest.mark.slow
def test_every_web_process_with_the_same_key_honours_a_token(
    web: str, two_runs: tuple[dict[str, Any], ...], app_factory: Callable[..., Any]
) -> None:
    """The key comes from the configuration, not from the process: a token issued by the
    gunicorn process is read by another one; another key (or API token) refuses it."""
    run = two_runs[0]
    token = run["stream_token"]
    with serve(app_factory(api_token=TOKEN)) as same:
        assert snapshot(same.url, run["run_id"], "", bearer(token))[0] == 200
    with serve(app_factory(api_token=TOKEN, secret_key="a secret key")) as keyed:
        assert_refused(*snapshot(keyed.url, run["run_id"], "", bearer(token)))
        own = httpx.post(f"{keyed.url}/api/runs", json=RUN_BODY, headers=API, timeout=10).json()
        assert snapshot(keyed.url, own["run_id"], "", bearer(own["stream_token"]))[0] == 200
    with serve(app_factory(api_token="rotated")) as rotated:
        assert_refused(*snapshot(rotated.url, run["run_id"], "", bearer(token)))


def test_without_a_token_or_key_there_is_no_stream_token(
    app_factory: Callable[..., Any], broker: redis.Redis, r: redis.Redis
) -> None:
    with serve(app_factory(api_token=None, broker_url=url_of(broker))) as open_server:
        assert "stream_token" not in submit(open_server.url, "hello_sequence", {"name": "x"})
    # With a secret key, a token is handed out (for a back end to pass on) and auth is
    # still off: every route is open, as without one.
    settings = {"api_token": None, "secret_key": "k", "broker_url": url_of(broker)}
    with serve(app_factory(**settings)) as keyed:
        run = submit(keyed.url, "hello_sequence", {"name": "x"})
        assert isinstance(run["stream_token"], str)
        assert httpx.get(f"{keyed.url}/api/runs", timeout=10).status_code == 200


# -- the command line watches with the run token --------------------------------------------------


def test_cli_follows_a_run_with_its_run_token(
    app_factory: Callable[..., Any], settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    seen: list[tuple[str, str, str]] = []
    app = app_factory(api_token=TOKEN)
    wsgi = app.wsgi_app

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(
            (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("HTTP_AUTHORIZATION", ""))
        )
        return wsgi(environ, start_response)

    app.wsgi_app = recording
    with serve(app) as server:
        args = ["--url", server.url, "--token", TOKEN, "run", "hello_sequence", "-i", "name=x"]
        result = CliRunner().invoke(main, [*args, "--follow", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [(_, _, create_auth)] = [s for s in seen if s[0] == "POST"]
    assert create_auth == f"Bearer {TOKEN}"  # creating needs the API token
    follows = [s for s in seen if s[1].endswith("/events")]
    assert follows
    tokens = RunTokens.from_settings(Settings(api_token=TOKEN))
    assert tokens is not None
    for _, path, auth in follows:
        run_token = auth.removeprefix("Bearer ")
        assert run_token != TOKEN  # watching does not send the API token ...
        assert f"/api/runs/{tokens.run_of(run_token)}/events" == path  # ... but its own
