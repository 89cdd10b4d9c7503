"""Fixtures that start real parts: a Redis server, Celery workers, a web server.

Nothing here touches a Redis it did not start. Asynchronous results are awaited on the
event or state expected, with a timeout, never with a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from stacks import Databases, Stack, events_until_finished, layout, wait_for_event
from werkzeug.serving import make_server

from devtools.celery_worker import WorkerProcess, start_worker
from devtools.redis_server import RedisServer
from devtools.web_server import WebProcess, start_web
from tasks.config import Settings
from tasks.scenario import parse_scenario

__all__ = [
    "Stack",
    "WebProcess",
    "WorkerProcess",
    "events_until_finished",
    "start_web",
    "start_worker",
    "wait_for",
    "wait_for_event",
]

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
TEST_SCENARIOS = Path(__file__).resolve().parent / "scenarios"
#: Test-only tools with a hand-written dist-info declaring them in `stepstream.tools`:
#: on sys.path here so web apps built in this process find them through the real
#: entry-point mechanism, and on PYTHONPATH in `base_env` so worker subprocesses do.
TEST_TOOLS = Path(__file__).resolve().parent / "tools"
if str(TEST_TOOLS) not in sys.path:
    sys.path.append(str(TEST_TOOLS))


#: The smallest scenario: one echo step, for tests that drive the store by hand.
ONE_STEP = parse_scenario(
    {
        "schema_version": "1",
        "scenario_id": "s",
        "name": "S",
        "steps": [{"name": "only", "tool": "echo"}],
    },
    {"echo"},
)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout`.

    For a run's events, block on its stream instead: `wait_for_event`,
    `events_until_finished`."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)  # polling interval, not a wait for the result itself
        delay = min(delay * 2, 0.1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(port=0, data_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def databases(redis_server: RedisServer) -> Databases:
    """The session Redis' databases past the fixed rows (tests/stacks.py), each
    handed out once."""
    return Databases(redis_server.url)


@pytest.fixture(scope="session")
def scenarios_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped scenarios plus the test-only ones, in one directory."""
    target = tmp_path_factory.mktemp("scenarios")
    for source in (SCENARIOS, TEST_SCENARIOS):
        for path in source.glob("*.yaml"):
            shutil.copy(path, target / path.name)
    return target


@pytest.fixture(scope="session")
def base_env(redis_server: RedisServer, scenarios_dir: Path) -> dict[str, str]:
    store_url, broker_url = layout(redis_server.url)
    return {
        "STEPSTREAM_REDIS_URL": store_url,
        "STEPSTREAM_BROKER_URL": broker_url,
        "STEPSTREAM_SCENARIOS_DIR": str(scenarios_dir),
        "STEPSTREAM_HEARTBEAT_S": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(TEST_TOOLS), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }


@pytest.fixture(scope="session")
def settings(base_env: dict[str, str]) -> Settings:
    return Settings.from_env(base_env)


@pytest.fixture
def r(settings: Settings) -> Iterator[redis.Redis]:
    """A client of the test Redis; the store's database is emptied before each test."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def worker(
    base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[WorkerProcess]:
    """One prefork worker shared by the session."""
    w = start_worker(base_env, "w1", tmp_path_factory.mktemp("logs"))
    yield w
    w.stop()


@pytest.fixture(scope="session")
def app_factory(settings: Settings) -> Callable[..., Any]:
    from web import create_app

    def make(**overrides: Any) -> Any:
        return create_app(replace(settings, **overrides))

    return make


@pytest.fixture
def app(app_factory: Callable[..., Any], r: redis.Redis) -> Any:
    return app_factory()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def url_of(client: redis.Redis) -> str:
    """The redis:// URL a client was made for."""
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


@pytest.fixture
def isolated_stack(databases: Databases, base_env: dict[str, str]) -> Stack:
    """A store database and a broker database of this test's own, emptied: workers
    started on `.env` take only this test's runs, and no other worker sweeps them."""
    return databases.stack(base_env)


@pytest.fixture
def quiet_db(databases: Databases) -> str:
    """The URL of an empty database of this test's own: a store no worker sweeps or
    beats in, or a broker no worker consumes."""
    return databases.fresh_url()


@pytest.fixture(scope="session")
def idle_broker_url(databases: Databases) -> str:
    """A broker database no worker consumes: runs sent there stay queued. Shared by
    the tests that count what an app publishes (the `broker` fixture) and the web
    processes they drive."""
    return databases.fresh_url()


@pytest.fixture
def broker(idle_broker_url: str) -> Iterator[redis.Redis]:
    """The idle broker, emptied before each test: runs sent there stay queued, and the
    messages an app publishes can be counted."""
    client = redis.Redis.from_url(idle_broker_url)
    client.flushdb()
    yield client
    client.close()


@dataclass
class LiveServer:
    url: str
    app: Any

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]


@contextlib.contextmanager
def serve(app: Any) -> Iterator[LiveServer]:
    """`app` on a real threaded HTTP server, for WebSocket and SSE clients."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # A short poll: `shutdown()` waits for the loop to see it, 0.5 s by default, and
    # most tests stop a server.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", app)
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def live_server(app: Any) -> Iterator[LiveServer]:
    with serve(app) as server:
        yield server


#: Debian's Chromium, which `make browser` installs: the browser tests download none.
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Playwright, for the tests in tests/browser/."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package "
            "where it can (apt-get, as root); install it to run the browser tests"
        )
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install -e '.[test]')"
    )
    with playwright_api.sync_playwright() as p:
        # --no-sandbox: the suite may run as root, where Chromium's sandbox refuses.
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


#: How long a browser test waits for anything on a page.
BROWSER_TIMEOUT_MS = 20_000


def new_page(browser: Any, **options: Any) -> Iterator[Any]:
    """A page in a context of its own (1280 by 900 unless `options` say otherwise); the
    test fails if a script on it raised."""
    options.setdefault("viewport", {"width": 1280, "height": 900})
    context = browser.new_context(**options)
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A desktop-sized page of the browser tests, failing the test on script errors."""
    yield from new_page(browser)
