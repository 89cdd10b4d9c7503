"""The system under measurement: its own Redis, a Celery worker and the web app."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from devtools.celery_worker import start_worker
from devtools.redis_server import RedisServer
from tasks.config import Settings
from web import create_app

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
#: The stack's worker's name (its log is `<log_dir>/<name>.log`).
WORKER = "bench"
#: The repository's example MCP configuration: the test server, as `demo`.
MCP_CONFIG = Path(__file__).resolve().parent.parent / "mcp.yaml"


@dataclass(frozen=True)
class Stack:
    settings: Settings
    app: Any
    url: str
    #: The environment the worker was started with: more workers join with it.
    env: dict[str, str]
    #: Where worker logs go (a temporary directory, removed with the stack).
    log_dir: Path
    #: The worker's concurrency (prefork children).
    concurrency: int
    #: Everything but the workers that a figure was measured on.
    environment: str

    @property
    def setup(self) -> str:
        """Said with every figure: what it was measured on."""
        return f"1 prefork worker x{self.concurrency}, {self.environment}"

    def redis_url(self, db: int) -> str:
        """The same Redis server, another logical database."""
        base, _, _ = self.settings.redis_url.rpartition("/")
        return f"{base}/{db}"


def host() -> str:
    return f"{os.cpu_count()} CPUs"


@contextlib.contextmanager
def running_stack(concurrency: int = 2, mcp: bool = False) -> Iterator[Stack]:
    """The stack; with `mcp`, its worker and web know the suite's MCP server as `demo`."""
    with tempfile.TemporaryDirectory() as tmp, RedisServer(port=0, data_dir=tmp) as redis:
        env = {
            "STEPSTREAM_REDIS_URL": redis.url,
            "STEPSTREAM_SCENARIOS_DIR": str(SCENARIOS),
            "STEPSTREAM_HEARTBEAT_S": "1",
        }
        if mcp:
            env["STEPSTREAM_MCP_CONFIG"] = str(MCP_CONFIG)
        settings = Settings.from_env(env)
        worker = start_worker(env, WORKER, Path(tmp), concurrency=concurrency)
        app = create_app(settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Stack(
                settings,
                app,
                f"http://127.0.0.1:{server.server_port}",
                env,
                Path(tmp),
                concurrency,
                "Redis broker and store on loopback, werkzeug threaded server in the "
                f"bench process, {host()}",
            )
        finally:
            server.shutdown()
            worker.stop()
