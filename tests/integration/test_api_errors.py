"""Bad requests get their status and the error body, and create nothing (SPEC §6, §7).

The app under test sends its Celery messages to a broker database of its own that no
worker reads, so "no message was queued" is a plain length check of the `celery` list,
whatever workers other tests have started.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis
import websocket
from clients import ws_connection
from conftest import url_of

JSON = {"Accept": "application/json"}
SSE = {"Accept": "text/event-stream"}
#: Not stream ids, though some look close: each must be refused with 400.
BAD_CURSORS = ["zz", "-1", "1-", "-0", "1.5", "1-2-3", "1700000000000-x", "é", " 1-0"]
#: Shaped like `<ms>-<seq>` but beyond Redis's 64-bit ids: not stream ids either.
OVERFLOW_CURSOR = "99999999999999999999-0"
BAD_SCENARIO_IDS = [
    "../hello_sequence",
    "../../scenarios/hello_sequence",
    "%2e%2e/hello_sequence",
    "%2e%2e%2fhello_sequence",
    "/etc/passwd",
    "hello_sequence/../hello_sequence",
    "hello\x00sequence",
    "\x00",
    "x" * 10_000,
]
UNKNOWN_RUN_IDS = [str(uuid.uuid4()), "not-a-run", "x" * 2000]


@pytest.fixture
def app(app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis) -> Any:
    return app_factory(broker_url=url_of(broker))


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """`app` on a real threaded HTTP server; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def check_error(status: int, body: Any, expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, body
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def assert_error(response: Any, status: int) -> dict[str, Any]:
    """The response is `{"error": {"code", "message", "details"}}` with `status`."""
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    return check_error(response.status_code, response.get_json(silent=True), status)


def assert_nothing_created(r: redis.Redis, broker: redis.Redis) -> None:
    assert list(r.scan_iter("stepstream:run:*")) == []
    assert r.zcard("stepstream:runs") == 0
    assert broker.llen("stepstream") == 0


def create_run(client: Any, scenario_id: str = "hello_sequence", **run_input: Any) -> str:
    response = client.post(
        "/api/runs", json={"scenario_id": scenario_id, "input": run_input or {"name": "x"}}
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return str(response.get_json()["run_id"])


def ws_status(url: str, run_id: str, query: str = "") -> int:
    """The status of a refused WebSocket handshake, or the close code sent after it."""
    try:
        conn = ws_connection(url, run_id, query=query, timeout=10)
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    with conn:
        try:
            first = next(conn.frames(), None)
        except websocket.WebSocketException:
            return -1  # the connection broke: neither a refusal nor a close frame
    assert first is None, first
    assert conn.close_code is not None
    return conn.close_code


# -- POST /api/runs: the body ------------------------------------------------------------


def test_a_good_request_is_the_baseline(client: Any, r: redis.Redis, broker: redis.Redis) -> None:
    """What the error tests rely on: a good request does create a run and a message."""
    run_id = create_run(client)
    assert r.exists(f"stepstream:run:{{{run_id}}}")
    assert r.zcard("stepstream:runs") == 1
    assert broker.llen("stepstream") == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{bad",
        b"",
        b'{"scenario_id": "hello_sequence", "input": {}',
        b'{"scenario_id": "hello_sequence"} trailing',
        b"\xff\xfe\x00",
    ],
    ids=["syntax", "empty", "truncated", "trailing", "not-utf8"],
)
def test_malformed_json_is_400(
    client: Any, r: redis.Redis, broker: redis.Redis, body: bytes
) -> None:
    response = client.post("/api/runs", data=body, content_type="application/json")
    assert_error(response, 400)
    assert_nothing_created(r, broker)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_literals_are_400(
    client: Any, r: redis.Redis, broker: redis.Redis, literal: str
) -> None:
    body = '{"scenario_id": "test_continue", "input": {"x": ' + literal + "}}"
    response = client.post("/api/runs", data=body, content_type="application/json")
    assert_error(response, 400)
    assert_nothing_created(r, broker)


@pytest.mark.parametrize(
    "body",
    ['["hello_sequence"]', "[]", '"hello_sequence"', "5", "null", "true"],
)
def test_json_that_is_not_an_object_is_400(
    client: Any, r: redis.Redis, broker: redis.Redis, body: str
) -> None:
    response = client.post("/api/runs", data=body, content_type="application/json")
    assert_error(response, 400)
    assert_nothing_created(r, broker)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"input": {"name": "x"}}, "$.scenario_id"),
        ({}, "$.scenario_id"),
        ({"scenario_id": 5, "input": {"name": "x"}}, "$.scenario_id"),
        ({"scenario_id": None, "input": {"name": "x"}}, "$.scenario_id"),
        ({"scenario_id": ["hello_sequence"], "input": {"name": "x"}}, "$.scenario_id"),
        ({"scenario_id": "", "input": {"name": "x"}}, "$.scenario_id"),
        ({"scenario_id": "hello_sequence", "input": "x"}, "$.input"),
        ({"scenario_id": "hello_sequence", "input": []}, "$.input"),
        ({"scenario_id": "hello_sequence", "input": None}, "$.input"),
        ({"scenario_id": "hello_sequence", "input": 5}, "$.input"),
        ({"scenario_id": "hello_sequence", "input": {"name": "x"}, "extra": 1}, "$.extra"),
    ],
    ids=[
        "missing-scenario_id",
        "empty-object",
        "scenario_id-int",
        "scenario_id-null",
        "scenario_id-list",
        "scenario_id-empty",
        "input-string",
        "input-list",
        "input-null",
        "input-int",
        "unknown-field",
    ],
)
def test_missing_or_wrong_fields_are_400_naming_the_field(
    client: Any, r: redis.Redis, broker: redis.Redis, body: dict[str, Any], path: str
) -> None:
    error = assert_error(client.post("/api/runs", json=body), 400)
    assert isinstance(error["details"], list)
    assert path in [d["path"] for d in error["details"]]
    assert_nothing_created(r, broker)


def test_unknown_scenario_is_404(client: Any, r: redis.Redis, broker: redis.Redis) -> None:
    response = client.post("/api/runs", json={"scenario_id": "no_such_scenario", "input": {}})
    assert_error(response, 404)
    assert_nothing_created(r, broker)


def test_input_failing_the_schema_is_422_with_every_error_and_its_path(
    client: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    bad_input = {
        "count": 0,  # below the minimum
        "items": [{"url": 3}, {}],  # a number for a string; a missing required key
        "unexpected": True,  # additionalProperties: false
    }  # and the required "name" is missing
    response = client.post("/api/runs", json={"scenario_id": "test_validation", "input": bad_input})
    error = assert_error(response, 422)
    details = error["details"]
    assert isinstance(details, list)
    assert all(set(d) >= {"path", "message"} for d in details)
    by_path: dict[str, list[str]] = {}
    for detail in details:
        by_path.setdefault(detail["path"], []).append(detail["message"])
    assert "$.count" in by_path
    assert "$.items[0].url" in by_path
    assert any(
        "url" in m for m in by_path.get("$.items[1]", []) + by_path.get("$.items[1].url", [])
    )
    assert any("name" in m for m in by_path.get("$", []) + by_path.get("$.name", []))
    assert any("unexpected" in m for m in by_path.get("$", []) + by_path.get("$.unexpected", []))
    assert len(details) == 5
    assert_nothing_created(r, broker)


def test_input_with_one_error_is_422_with_one_detail(
    client: Any, r: redis.Redis, broker: redis.Redis
) -> None:
    response = client.post(
        "/api/runs", json={"scenario_id": "test_validation", "input": {"count": "3", "name": "n"}}
    )
    error = assert_error(response, 422)
    assert [d["path"] for d in error["details"]] == ["$.count"]
    assert_nothing_created(r, broker)


def test_oversize_body_is_413(
    app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis
) -> None:
    small = app_factory(max_body_bytes=200, broker_url=url_of(broker)).test_client()
    body = {"scenario_id": "hello_sequence", "input": {"name": "x" * 300}}
    assert_error(small.post("/api/runs", json=body), 413)
    assert_nothing_created(r, broker)
    # The limit is on the body, not on what is in it: a small request still works.
    assert (
        small.post(
            "/api/runs", json={"scenario_id": "hello_sequence", "input": {"name": "x"}}
        ).status_code
        == 202
    )


def test_oversize_chunked_body_without_content_length_is_413(
    app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis
) -> None:
    small = app_factory(max_body_bytes=200, broker_url=url_of(broker))
    body = b'{"scenario_id": "hello_sequence", "input": {"name": "' + b"x" * 300 + b'"}}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 50):
            yield body[start : start + 50]

    with serve(small) as host:
        response = httpx.post(
            f"http://{host}/api/runs",
            content=chunks(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    check_error(response.status_code, response.json(), 413)
    assert_nothing_created(r, broker)


def test_unreachable_broker_is_503_and_leaves_no_run(
    app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis
) -> None:
    cut_off = app_factory(broker_url="redis://127.0.0.1:1/0").test_client()
    response = cut_off.post(
        "/api/runs", json={"scenario_id": "hello_sequence", "input": {"name": "x"}}
    )
    assert_error(response, 503)
    assert_nothing_created(r, broker)


# -- scenario ids that try to be paths -----------------------------------------------------


@pytest.mark.parametrize("scenario_id", BAD_SCENARIO_IDS)
def test_path_like_scenario_id_in_body_is_refused(
    client: Any, r: redis.Redis, broker: redis.Redis, scenario_id: str
) -> None:
    response = client.post("/api/runs", json={"scenario_id": scenario_id, "input": {}})
    assert response.status_code in (400, 404)
    assert_error(response, response.status_code)
    assert_nothing_created(r, broker)


@pytest.mark.parametrize(
    "path",
    [
        "/api/scenarios/..%2Fhello_sequence",
        "/api/scenarios/%2e%2e%2Fhello_sequence",
        "/api/scenarios/%2e%2e",
        "/api/scenarios/..",
        "/api/scenarios/%252e%252e%252fhello_sequence",
        "/api/scenarios/%2Fetc%2Fpasswd",
        "/api/scenarios/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/scenarios/hello%00sequence",
        "/api/scenarios/%00",
        "/api/scenarios/" + "x" * 10_000,
    ],
)
def test_path_like_scenario_id_in_url_is_refused(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (400, 404)
    assert_error(response, response.status_code)


# -- unknown runs --------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", UNKNOWN_RUN_IDS)
@pytest.mark.parametrize(
    ("suffix", "headers"),
    [("", {}), ("/events", SSE), ("/events", JSON), ("/events", {})],
    ids=["snapshot", "sse", "json-page", "no-accept"],
)
def test_unknown_run_is_404(client: Any, run_id: str, suffix: str, headers: dict[str, str]) -> None:
    assert_error(client.get(f"/api/runs/{run_id}{suffix}", headers=headers), 404)


@pytest.mark.parametrize("run_id", UNKNOWN_RUN_IDS)
def test_unknown_run_websocket_is_refused_with_404(live_server: Any, run_id: str) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connection(live_server.url, run_id, timeout=10)
    assert refused.value.status_code == 404
    check_error(404, json.loads(refused.value.resp_body), 404)


# -- cursors -------------------------------------------------------------------------------


@pytest.mark.parametrize("cursor", BAD_CURSORS)
@pytest.mark.parametrize("accept", [SSE, JSON], ids=["sse", "json-page"])
def test_bad_after_is_400(client: Any, cursor: str, accept: dict[str, str]) -> None:
    run_id = create_run(client)
    response = client.get(
        f"/api/runs/{run_id}/events", query_string={"after": cursor}, headers=accept
    )
    assert_error(response, 400)


@pytest.mark.parametrize("cursor", BAD_CURSORS)
@pytest.mark.parametrize("accept", [SSE, JSON], ids=["sse", "json-page"])
def test_bad_last_event_id_is_400(client: Any, cursor: str, accept: dict[str, str]) -> None:
    run_id = create_run(client)
    response = client.get(
        f"/api/runs/{run_id}/events",
        headers={**accept, "Last-Event-ID": cursor.encode().decode("latin-1")},
    )
    assert_error(response, 400)


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_bad_after_on_websocket_is_400_before_upgrade(live_server: Any, cursor: str) -> None:
    run_id = create_run(live_server.app.test_client())
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connection(live_server.url, run_id, query=urlencode({"after": cursor}), timeout=10)
    assert refused.value.status_code == 400


def test_bad_cursor_is_checked_before_the_run_exists(client: Any) -> None:
    """Either answer is a client error; what matters is that it is not a 500."""
    response = client.get("/api/runs/nope/events?after=zz", headers=JSON)
    assert response.status_code in (400, 404)
    assert_error(response, response.status_code)


def test_overflowing_cursor_on_json_page_is_400(client: Any) -> None:
    run_id = create_run(client)
    response = client.get(f"/api/runs/{run_id}/events?after={OVERFLOW_CURSOR}", headers=JSON)
    assert_error(response, 400)


def test_overflowing_last_event_id_on_json_page_is_400(client: Any) -> None:
    run_id = create_run(client)
    response = client.get(
        f"/api/runs/{run_id}/events", headers={**JSON, "Last-Event-ID": OVERFLOW_CURSOR}
    )
    assert_error(response, 400)


def test_overflowing_cursor_on_sse_is_400(live_server: Any) -> None:
    run_id = create_run(live_server.app.test_client())
    response = httpx.get(
        f"{live_server.url}/api/runs/{run_id}/events", params={"after": OVERFLOW_CURSOR}, timeout=10
    )
    check_error(response.status_code, response.json(), 400)


def test_overflowing_cursor_on_websocket_is_refused(live_server: Any) -> None:
    run_id = create_run(live_server.app.test_client())
    status = ws_status(live_server.url, run_id, f"after={OVERFLOW_CURSOR}")
    assert status in (400, 4400)


def test_largest_stream_id_as_cursor_is_beyond_the_stream(client: Any) -> None:
    """A cursor from the future could never be followed: 400, naming the last id."""
    run_id = create_run(client)
    largest = "18446744073709551615-18446744073709551615"
    response = client.get(f"/api/runs/{run_id}/events?after={largest}", headers=JSON)
    assert_error(response, 400)
    assert response.get_json()["error"]["details"]["last_id"]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", "1e3", " 5"])
def test_bad_limit_on_events_page_is_400(client: Any, limit: str) -> None:
    run_id = create_run(client)
    response = client.get(f"/api/runs/{run_id}/events", query_string={"limit": limit}, headers=JSON)
    assert_error(response, 400)


def test_superscript_digit_limit_on_events_page_is_400(client: Any) -> None:
    run_id = create_run(client)
    response = client.get(f"/api/runs/{run_id}/events", query_string={"limit": "²"}, headers=JSON)
    assert_error(response, 400)


# -- GET /api/runs -------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", "", "1e2", "0x10"])
def test_bad_limit_on_run_list_is_400(client: Any, limit: str) -> None:
    assert_error(client.get("/api/runs", query_string={"limit": limit}), 400)


def test_superscript_digit_limit_on_run_list_is_400(client: Any) -> None:
    assert_error(client.get("/api/runs", query_string={"limit": "²"}), 400)


@pytest.mark.parametrize("status", ["bogus", "QUEUED", "pending", "queued,running"])
def test_bad_status_filter_is_400(client: Any, status: str) -> None:
    assert_error(client.get("/api/runs", query_string={"status": status}), 400)


@pytest.mark.parametrize("before", [str(uuid.uuid4()), "zzz", "../x", "x" * 1000])
def test_unknown_before_cursor_is_400(client: Any, before: str) -> None:
    create_run(client)
    assert_error(client.get("/api/runs", query_string={"before": before}), 400)


def create_runs(client: Any, r: redis.Redis, scenarios: list[str]) -> list[str]:
    """One run per scenario id, created one after the other, as fast as possible."""
    inputs = {"hello_sequence": {"name": "x"}, "fan_out_join": {}, "test_continue": {}}
    run_ids = []
    for scenario_id in scenarios:
        response = client.post(
            "/api/runs", json={"scenario_id": scenario_id, "input": inputs[scenario_id]}
        )
        assert response.status_code == 202
        run_ids.append(response.get_json()["run_id"])
    return run_ids


def test_run_list_is_newest_first_and_filtered(client: Any, r: redis.Redis) -> None:
    scenarios = [
        "hello_sequence",
        "fan_out_join",
        "hello_sequence",
        "test_continue",
        "hello_sequence",
    ]
    run_ids = create_runs(client, r, scenarios)

    listed = client.get("/api/runs").get_json()
    assert [run["run_id"] for run in listed["runs"]] == run_ids[::-1]
    assert listed["next_before"] is None
    assert all(run["status"] == "queued" for run in listed["runs"])
    assert set(listed["runs"][0]) == {  # no input: the snapshot has it
        "run_id",
        "scenario_id",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "message",
    }

    hello = client.get("/api/runs?scenario_id=hello_sequence").get_json()["runs"]
    assert [run["run_id"] for run in hello] == [run_ids[4], run_ids[2], run_ids[0]]
    queued = client.get("/api/runs?status=queued").get_json()["runs"]
    assert [run["run_id"] for run in queued] == run_ids[::-1]
    for status in ("running", "succeeded", "failed", "cancelled"):
        assert client.get(f"/api/runs?status={status}").get_json() == {
            "runs": [],
            "next_before": None,
        }
    both = client.get("/api/runs?status=queued&scenario_id=fan_out_join").get_json()["runs"]
    assert [run["run_id"] for run in both] == [run_ids[1]]


def walk_pages(client: Any, query: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    before = None
    while True:
        url = f"/api/runs?limit={limit}{query}" + (f"&before={before}" if before else "")
        response = client.get(url)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert len(body["runs"]) <= limit
        pages.append([run["run_id"] for run in body["runs"]])
        before = body["next_before"]
        if before is None:
            return pages
        assert before == pages[-1][-1]
        assert len(pages) <= 20, "paging does not end"


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8, 200])
def test_run_list_pages_cover_every_run_once(client: Any, r: redis.Redis, limit: int) -> None:
    run_ids = create_runs(client, r, ["hello_sequence", "fan_out_join"] * 4)
    pages = walk_pages(client, "", limit)
    flat = [run_id for page in pages for run_id in page]
    assert flat == run_ids[::-1]
    assert all(len(page) == limit for page in pages[:-1])
    assert pages[-1], "the last page is not empty: next_before was null too late"


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_filtered_run_list_pages_cover_every_match_once(
    client: Any, r: redis.Redis, limit: int
) -> None:
    run_ids = create_runs(client, r, ["hello_sequence", "fan_out_join", "fan_out_join"] * 3)
    pages = walk_pages(client, "&scenario_id=fan_out_join&status=queued", limit)
    flat = [run_id for page in pages for run_id in page]
    expected = [run_id for i, run_id in enumerate(run_ids) if i % 3 != 0][::-1]
    assert flat == expected


def test_empty_run_list(client: Any) -> None:
    response = client.get("/api/runs")
    assert response.status_code == 200
    assert response.get_json() == {"runs": [], "next_before": None}


# -- routes and methods --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/nothing",
        "/api",
        "/api/",
        "/api/runs/x/y/z",
        "/api/scenarios/a/b",
        "/api/tools/echo",
        "/api/openapi.yaml",
    ],
)
def test_unknown_api_route_is_json_404(client: Any, path: str) -> None:
    assert_error(client.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/runs"),
        ("PUT", "/api/runs"),
        ("PATCH", "/api/runs"),
        ("POST", "/api/runs/{run_id}"),
        ("DELETE", "/api/runs/{run_id}"),
        ("POST", "/api/runs/{run_id}/events"),
        ("POST", "/api/scenarios"),
        ("DELETE", "/api/scenarios/hello_sequence"),
        ("POST", "/api/tools"),
        ("POST", "/api/openapi.json"),
    ],
)
def test_wrong_method_is_json_405_with_allow(
    client: Any, r: redis.Redis, broker: redis.Redis, method: str, path: str
) -> None:
    run_id = str(uuid.uuid4())
    response = client.open(path.format(run_id=run_id), method=method, json={})
    assert_error(response, 405)
    assert response.headers.get("Allow")
    assert method not in response.headers["Allow"]
    assert_nothing_created(r, broker)


# -- strict JSON (SPEC §14) ----------------------------------------------------------------


def strict_loads(text: str | bytes) -> Any:
    """json.loads refusing NaN and Infinity: what any strict parser would accept."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def post_raw(client: Any, body: str | bytes) -> Any:
    return client.post("/api/runs", data=body, content_type="application/json")


def run_body(input_json: str, scenario_id: str = '"test_continue"') -> str:
    return '{"scenario_id": ' + scenario_id + ', "input": ' + input_json + "}"


def nested(depth: int, leaf: str = "1") -> str:
    """`depth` levels of alternating objects and arrays around `leaf`, an object outside."""
    text = leaf
    for level in range(depth):
        text = '{"k": ' + text + "}" if (depth - level) % 2 else f"[{text}]"
    return text


@pytest.mark.parametrize(
    "body",
    [
        run_body(nested(65)),  # 66 levels, the body's own object included
        run_body(nested(64)),
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        run_body("[" * 100_000 + "]" * 100_000),
        run_body('{"s": "' + "]" * 100 + '", "d": ' + nested(70) + "}"),  # not hidden by a string
    ],
    ids=["66", "65", "100k-open", "100k-arrays", "100k-objects", "100k-in-input", "after-string"],
)
def test_nesting_deeper_than_64_levels_is_400(
    client: Any, r: redis.Redis, broker: redis.Redis, body: str
) -> None:
    error = assert_error(post_raw(client, body), 400)
    assert "64" in error["message"], error
    assert_nothing_created(r, broker)


def test_nesting_of_exactly_64_levels_is_accepted(client: Any) -> None:
    # The body's object is one level: its input may nest 63.
    body = run_body(nested(63, '"[[[[{{{{"'))
    response = post_raw(client, body)
    assert response.status_code == 202, response.get_data(as_text=True)
    run = client.get(f"/api/runs/{response.get_json()['run_id']}").get_json()
    assert run["input"] == json.loads(body)["input"]


@pytest.mark.parametrize(
    "number",
    ["1e400", "-1e400", "1E+400", "1e309", "-2e308", "1" + "0" * 400, "-" + "9" * 309, "9" * 5000],
    ids=["1e400", "-1e400", "1E+400", "1e309", "-2e308", "int-1e400", "-int-1e309", "5000-digits"],
)
def test_numbers_beyond_a_double_are_400(
    client: Any, r: redis.Redis, broker: redis.Redis, number: str
) -> None:
    error = assert_error(post_raw(client, run_body('{"x": [' + number + "]}")), 400)
    assert "double" in error["message"], error
    assert_nothing_created(r, broker)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (run_body(r'{"s": "\ud800"}'), "$.input.s"),
        (run_body(r'{"s": "x\udfffy"}'), "$.input.s"),
        (run_body(r'{"s": ["ok", "\udc00\ud800"]}'), "$.input.s[1]"),  # halves swapped
        (run_body(r'{"s": "\ud800\ud800"}'), "$.input.s"),  # two high halves
        (run_body(r'{"\ud83d": 1}'), "$.input (a key)"),
        (run_body("{}", scenario_id=r'"test_continue\udbff"'), "$.scenario_id"),
    ],
    ids=["high", "low", "swapped", "two-high", "key", "scenario_id"],
)
def test_lone_surrogates_are_400_naming_where(
    client: Any, r: redis.Redis, broker: redis.Redis, body: str, path: str
) -> None:
    error = assert_error(post_raw(client, body), 400)
    assert "surrogate" in error["message"] and path in error["message"], error
    assert [d["path"] for d in error["details"]] == [path]
    assert_nothing_created(r, broker)


@pytest.mark.parametrize(
    "body",
    [
        b'{"scenario_id": "test_continue", "input": {"s": "\xed\xa0\x80"}}',  # UTF-8 of U+D800
        '{"scenario_id": "test_continue", "input": {}}'.encode("utf-16"),
        b'\xef\xbb\xbf{"scenario_id": "test_continue", "input": {}}',  # a byte order mark
        b'{"scenario_id": "test_continue", "input": {"s": "caf\xe9"}}',  # Latin-1
    ],
    ids=["encoded-surrogate", "utf-16", "bom", "latin-1"],
)
def test_bodies_that_are_not_utf8_json_text_are_400(
    client: Any, r: redis.Redis, broker: redis.Redis, body: bytes
) -> None:
    assert_error(post_raw(client, body), 400)
    assert_nothing_created(r, broker)


def test_unusual_but_valid_json_is_kept_exactly(client: Any) -> None:
    """What strictness must not refuse: astral characters as surrogate pairs, text that
    only looks like an escape, U+2028/U+2029/U+0085 raw or escaped, integers a double
    holds only approximately (kept exact), the largest and tiniest doubles."""
    run_input = (
        r'{"pair": "\ud83d\ude00", "looks": "\\ud800", "seps": "a' + "\u2028\u2029\u0085"
        r'b\u2028\u2029\u0085", "big": 9007199254740993, "neg": -18446744073709551617,'
        r' "max": 1.7976931348623157e308, "tiny": 1e-400, "zero": -0}'
    )
    response = post_raw(client, run_body(run_input).encode())
    assert response.status_code == 202, response.get_data(as_text=True)
    snapshot = client.get(f"/api/runs/{response.get_json()['run_id']}")
    assert snapshot.get_data().isascii()  # everything beyond ASCII is escaped
    got = strict_loads(snapshot.get_data())["input"]
    assert got == json.loads(run_input)
    assert got["pair"] == "😀" and got["looks"] == "\\ud800"
    assert got["seps"] == "a\u2028\u2029\u0085b\u2028\u2029\u0085"
    assert got["big"] == 2**53 + 1 and got["neg"] == -(2**64) - 1


def test_values_stored_before_strictness_are_served_as_strict_json(
    client: Any, r: redis.Redis
) -> None:
    """A run stored with values strict JSON cannot carry (written before the API refused
    them) is still served, with those values replaced, and breaks no listing."""
    good = create_run(client)
    old = create_run(client)
    r.hset(f"stepstream:run:{{{old}}}", "input", '{"x": Infinity, "y": [NaN], "s": "a\\ud800"}')
    for path in ("/api/runs", f"/api/runs/{old}", f"/api/runs/{old}/events"):
        response = client.get(path, headers=JSON)
        assert response.status_code == 200, path
        strict_loads(response.get_data())
    listed = client.get("/api/runs").get_json()["runs"]
    assert [run["run_id"] for run in listed] == [old, good]
    assert client.get(f"/api/runs/{old}").get_json()["input"] == {
        "x": None,
        "y": [None],
        "s": "a\ufffd",
    }


def test_unknown_scenario_filter_is_400(client: Any) -> None:
    create_run(client)
    error = assert_error(client.get("/api/runs", query_string={"scenario_id": "no_such"}), 400)
    assert "no_such" in error["message"]
    # A known scenario without runs is an empty page, not an error.
    assert client.get("/api/runs?scenario_id=fan_out_join").get_json()["runs"] == []
