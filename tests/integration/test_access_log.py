"""Tokens never reach the logs of the web as production runs it: gunicorn with its own
access log on (`--access-logfile -`, usual in containers), SPEC §6 and §14.

Every spelling of `access_token` a client may send (percent-encoded, in any case) is
redacted; the access-log line is still written, and no logging error prints the record
(with the token) instead.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from conftest import WebProcess, start_web, wait_for

TOKEN = "Tok3n-never-logged"
#: Every spelling of the parameter's name that a client could send.
SPELLINGS = [
    "access_token",
    "access%5Ftoken",
    "access%5ftoken",
    "%61ccess_token",
    "%61%63%63%65%73%73%5F%74%6F%6B%65%6E",
    "ACCESS_TOKEN",
    "Access%5FToken",
]
#: What the formats log: gunicorn's default, and one with every atom that can carry
#: the query string or the Authorization header.
FORMATS = [
    pytest.param((), id="default-format"),
    pytest.param(
        (
            "--access-logformat",
            '%(h)s "%(r)s" %(s)s q=%(q)s uri=%({raw_uri}e)s qs=%({query_string}e)s '
            "auth=%({authorization}i)s env=%({http_authorization}e)s",
        ),
        id="query-and-header-atoms",
    ),
]


@pytest.fixture(params=FORMATS)
def logged_web(
    request: pytest.FixtureRequest, base_env: dict[str, str], tmp_path: Path, r: redis.Redis
) -> Iterator[WebProcess]:
    env = {**base_env, "STEPSTREAM_API_TOKEN": TOKEN}
    args = ("--access-logfile", "-", *request.param)
    web = start_web(env, tmp_path, "web-logged", gunicorn_args=args)
    try:
        yield web
    finally:
        web.kill()


def raw_get(url: str, target: str, headers: dict[str, str] | None = None) -> int:
    """GET `target` exactly as written (httpx would normalise its escapes); the status."""
    conn = http.client.HTTPConnection(httpx.URL(url).host, httpx.URL(url).port, timeout=10)
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.slow
def test_gunicorn_access_log_redacts_every_spelling(logged_web: WebProcess) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    created = httpx.post(
        f"{logged_web.url}/api/runs",
        json={"scenario_id": "hello_sequence", "input": {"name": "x"}},
        headers=auth,
        timeout=10,
    )
    assert created.status_code == 202, created.text
    run_id = created.json()["run_id"]
    sent = []
    for n, name in enumerate(SPELLINGS):
        # The streaming route (where a query token is read), a route where it is refused,
        # and the token among other parameters: each request marked to find its line.
        targets = [
            f"/api/runs/{run_id}/events?{name}={TOKEN}&mark=a{n}",
            f"/api/scenarios?mark=b{n}&{name}={TOKEN}",
            f"/api/runs/nope?x=1&{name}={TOKEN}&mark=c{n}",
            # A `=` in the path must not make the query behind it look like its value.
            f"/api/runs/a=b/events?{name}={TOKEN}&mark=d{n}",
        ]
        for target in targets:
            raw_get(logged_web.url, target, {"Accept": "application/json", **auth})
            sent.append(target.rsplit("mark=", 1)[1].split("&")[0])

    def log() -> str:
        return logged_web.log_path.read_text(errors="replace")

    # Every request has its access-log line ...
    wait_for(lambda: all(f"mark={m}" in log() for m in sent), what="an access-log line per request")
    text = log()
    # ... none of them with the token, and no logging error in its place.
    assert TOKEN not in text
    assert "Logging error" not in text and "Traceback" not in text
    lines = [line for line in text.splitlines() if "mark=" in line]
    assert len(lines) >= len(sent)
    assert all("[redacted]" in line for line in lines), lines
