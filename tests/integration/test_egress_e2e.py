"""The egress policy end to end: the shipped `http_fetch` scenario, run by real workers,
against a loopback HTTP server that records every request it receives.

A worker started without `STEPSTREAM_HTTP_ALLOW` (the suite's shared one) refuses the
loopback server; a worker started with `STEPSTREAM_HTTP_ALLOW=127.0.0.1`, on a queue of
its own so that only it runs these steps, fetches from it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from clients import submit, ws_events
from conftest import LiveServer, WorkerProcess, serve, start_worker

#: Workers of their own per egress policy: left out of `make test-fast`.
pytestmark = pytest.mark.slow


@contextlib.contextmanager
def recording_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering 200 with JSON; yields its URL and the paths asked."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = b'{"secret": "only for the worker\'s own network"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_http_fetch(server: LiveServer, url: str) -> list[dict[str, Any]]:
    run = submit(server.url, "http_fetch", {"url": url})
    events, code = ws_events(server.ws_url, run["run_id"])
    assert code == 1000, events
    assert events[-1]["type"] == "run_finished", events
    return events


def test_a_worker_refuses_loopback_by_default(
    live_server: LiveServer, worker: WorkerProcess
) -> None:
    with recording_server() as (url, paths):
        events = run_http_fetch(live_server, url)
    final = events[-1]
    assert final["status"] == "failed" and final["reason"] == "step_failed", final
    refusal = (
        f"http_request refused {url}: 127.0.0.1 is a loopback address; "
        "STEPSTREAM_HTTP_ALLOW opens it"
    )
    finished = [e for e in events if e["type"] == "step_finished" and e["step"] == "fetch"]
    assert [(e["status"], e["message"]) for e in finished] == [("failed", refusal)]
    assert refusal in final["message"]
    assert paths == []


@pytest.fixture
def open_worker(
    base_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    r: redis.Redis,  # flush the store before this worker's heartbeat, not after
) -> Iterator[WorkerProcess]:
    """A worker with loopback opened, alone on the queue `egress_open`."""
    env = {**base_env, "STEPSTREAM_HTTP_ALLOW": "127.0.0.1", "STEPSTREAM_QUEUE": "egress_open"}
    w = start_worker(env, "egress_open", tmp_path_factory.mktemp("egress_logs"), concurrency=1)
    yield w
    w.stop()


def test_a_worker_reaches_what_the_allowlist_opens(
    app_factory: Callable[..., Any], open_worker: WorkerProcess
) -> None:
    with recording_server() as (url, paths), serve(app_factory(queue="egress_open")) as server:
        events = run_http_fetch(server, url)
    final = events[-1]
    assert final["status"] == "succeeded", final
    report = [e for e in events if e["type"] == "step_finished" and e["step"] == "report"]
    assert report[0]["output"] == {"url": url, "status": 200}
    assert paths == ["/"]
