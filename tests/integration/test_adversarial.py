"""Hostile requests, one table: what each sends and the status it must get (SPEC §6, §14).

To add a case, add a row to CASES. Every case goes over real HTTP to a real server; the
answer must have the expected status, and its body must be strict JSON (no NaN or
Infinity, nothing beyond ASCII: U+2028 and the like escaped) in the standard error shape
when it is an error. A refused `POST /api/runs` must leave nothing behind.

`{run_id}` in a path is a fresh queued run of the test. A status given as a tuple
accepts any of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
from conftest import LiveServer, serve, url_of

RUNS = "/api/runs"
#: The routes that take a POST body; only the first reads it (the others ignore it).
BODY_ROUTES = {RUNS: 400, "/api/runs/{run_id}/cancel": 202, "/api/tools/refresh": 202}
JSON_TYPE = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: bytes | None = None
    status: int | tuple[int, ...] = 400
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_TYPE))


def run_body(input_json: str, scenario_id: str = '"test_continue"') -> bytes:
    return ('{"scenario_id": ' + scenario_id + ', "input": ' + input_json + "}").encode(
        "utf-8", "surrogatepass"
    )


#: JSON texts SPEC §14 refuses, each as a run's input.
REFUSED_INPUTS = {
    "depth-65": '{"a": ' * 63 + "[1]" + "}" * 63,
    "depth-100k-arrays": "[" * 100_000 + "]" * 100_000,
    "depth-100k-objects": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "depth-100k-unterminated": "[" * 100_000,
    "1e400": '{"x": 1e400}',
    "-1e400": '{"x": -1e400}',
    "1E+309": '{"x": 1E+309}',
    "int-beyond-double": '{"x": 1' + "0" * 400 + "}",
    "NaN": '{"x": NaN}',
    "Infinity": '{"x": Infinity}',
    "-Infinity": '{"x": -Infinity}',
    "lone-high": r'{"x": "\ud800"}',
    "lone-low": r'{"x": "a\udc00"}',
    "swapped-pair": r'{"x": "\ude00\ud83d"}',
    "lone-in-key": r'{"\udbff": 1}',
}
#: Odd but valid: accepted, and served back escaped.
KEPT_INPUTS = {
    "u2028-raw": '{"x": "a\u2028b\u2029c\u0085d"}',
    "u2028-escaped": r'{"x": "a\u2028b\u2029c\u0085d"}',
    "surrogate-pair": r'{"x": "\ud83d\ude00"}',
    "escaped-backslash-u": r'{"x": "\\ud800"}',
    "2**53+1": '{"x": 9007199254740993}',
    "-2**64-1": '{"x": -18446744073709551617}',
    "max-double": '{"x": 1.7976931348623157e308}',
    "underflow": '{"x": 1e-400}',
    "depth-64": '{"a": ' * 62 + "[1]" + "}" * 62,
    "markup": '{"x": "[bold [/] [/red] \\\\"}',
}

CASES: list[Case] = [
    # Each refused JSON class at every body route: 400 where the body is read, and the
    # route's usual answer where it is not.
    *(
        Case(f"{name}@{route}", "POST", route, run_body(text), status)
        for name, text in REFUSED_INPUTS.items()
        for route, status in BODY_ROUTES.items()
    ),
    *(
        Case(f"kept-{name}", "POST", RUNS, run_body(text), 202)
        for name, text in KEPT_INPUTS.items()
    ),
    # A refused value as the whole body, and in the scenario_id.
    Case("whole-1e400", "POST", RUNS, b"1e400"),
    Case("whole-deep", "POST", RUNS, b"[" * 200_000 + b"]" * 200_000),
    Case("scenario_id-lone", "POST", RUNS, run_body("{}", r'"test_continue\ud800"')),
    Case("scenario_id-u2028", "POST", RUNS, run_body("{}", '"test_continue\u2028"'), 404),
    # Not UTF-8 JSON text.
    Case("latin-1", "POST", RUNS, run_body('{"x": "caf\u00e9"}').replace(b"\xc3\xa9", b"\xe9")),
    Case("encoded-surrogate", "POST", RUNS, b'{"scenario_id": "test_continue\xed\xa0\x80"}'),
    Case("utf-16", "POST", RUNS, '{"scenario_id": "test_continue"}'.encode("utf-16")),
    Case("bom", "POST", RUNS, b"\xef\xbb\xbf" + run_body("{}")),
    Case("empty", "POST", RUNS, b""),
    Case("nul", "POST", RUNS, b"\x00"),
    # Wrong content types (SPEC §14: 415, whatever the body).
    *(
        Case(
            f"type-{ctype or 'none'}",
            "POST",
            RUNS,
            run_body("{}"),
            415,
            {"Content-Type": ctype},
        )
        for ctype in ("text/plain", "", "application/json; charset=latin-1", "text/json")
    ),
    Case(
        "type-form",
        "POST",
        RUNS,
        b"scenario_id=test_continue",
        415,
        {"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case(
        "type-multipart",
        "POST",
        RUNS,
        b"--x\r\n\r\n--x--\r\n",
        415,
        {"Content-Type": "multipart/form-data; boundary=x"},
    ),
    Case("type-plain-deep", "POST", RUNS, b"[" * 100_000, 415, {"Content-Type": "text/plain"}),
    # Query strings and paths with the same classes.
    Case("filter-unknown", "GET", "/api/runs?scenario_id=no_such"),
    Case("filter-u2028", "GET", "/api/runs?scenario_id=%E2%80%A8"),
    Case("filter-not-utf8", "GET", "/api/runs?scenario_id=%ED%A0%80"),
    Case("filter-known", "GET", "/api/runs?scenario_id=test_continue", status=200),
    Case("limit-1e400", "GET", "/api/runs?limit=1e400"),
    Case("limit-huge", "GET", "/api/runs?limit=" + "9" * 5000),
    Case(
        "after-1e400",
        "GET",
        "/api/runs/{run_id}/events?after=1e400",
        headers={"Accept": "application/json"},
    ),
    Case("run-u2028", "GET", "/api/runs/%E2%80%A8", status=404),
    Case("run-not-utf8", "GET", "/api/runs/%ED%A0%80", status=404),
    Case("scenario-u2028", "GET", "/api/scenarios/%E2%80%A8", status=404),
    Case("scenario-markup", "GET", "/api/scenarios/%5B%2F%5D", status=404),
]


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_loads(content: bytes) -> Any:
    """What a strict client accepts: ASCII-only text here, no NaN or Infinity."""
    assert content.isascii(), content[:200]
    return json.loads(content, parse_constant=_refuse)


@pytest.fixture
def server(
    app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis
) -> Iterator[LiveServer]:
    # The idle broker: the runs the cases create stay queued.
    with serve(app_factory(broker_url=url_of(broker))) as live:
        yield live


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request(
    case: Case, server: LiveServer, r: redis.Redis, broker: redis.Redis
) -> None:
    path = case.path
    if "{run_id}" in path:
        created = httpx.post(f"{server.url}{RUNS}", json={"scenario_id": "test_continue"})
        assert created.status_code == 202, created.text
        path = path.format(run_id=created.json()["run_id"])
    response = httpx.request(
        case.method, f"{server.url}{path}", content=case.body, headers=case.headers, timeout=30
    )
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert response.status_code in expected, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = strict_loads(response.content)
    if response.status_code >= 400:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["message"], body
        if case.method == "POST" and path == RUNS:
            assert r.zcard("stepstream:runs") == 0 and broker.llen("stepstream") == 0
    elif path == RUNS and case.method == "POST":
        # What was accepted is served back exactly, as strict JSON.
        snapshot = httpx.get(f"{server.url}{RUNS}/{body['run_id']}", timeout=10)
        sent = json.loads(case.body or b"")
        assert strict_loads(snapshot.content)["input"] == sent.get("input", {})
