"""The README's screenshots of a run page: desktop and phone width, light and dark.

Run as ``python -m devtools.screenshots`` from the repository root (Chromium at
/usr/bin/chromium, as ``make browser`` installs it). It starts a Redis of its own, a
worker and the web server, runs ``fan_out_join``, opens the run's page with its ``join``
step selected, and writes ``docs/run-page-<width>-<scheme>.png``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import httpx
from playwright.sync_api import sync_playwright

from client.follow import Follower
from devtools.celery_worker import start_worker
from devtools.redis_server import RedisServer
from devtools.web_server import start_web

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
#: Name, viewport and the step panel's place: beside the graph, or a drawer over it.
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
SCHEMES: tuple[Literal["light", "dark"], ...] = ("light", "dark")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch, RedisServer() as redis:
        env = {
            "STEPSTREAM_REDIS_URL": redis.url.rsplit("/", 1)[0] + "/0",
            "STEPSTREAM_BROKER_URL": redis.url.rsplit("/", 1)[0] + "/1",
            "STEPSTREAM_SCENARIOS_DIR": str(ROOT / "scenarios"),
            "STEPSTREAM_HEARTBEAT_S": "1",
        }
        logs = Path(scratch)
        worker = start_worker(env, "screenshots", logs)
        web = start_web(env, logs, "web")
        try:
            response = httpx.post(
                f"{web.url}/api/runs",
                json={"scenario_id": "fan_out_join", "input": {"label": "screenshot"}},
            )
            run_id = response.raise_for_status().json()["run_id"]
            for _ in Follower(web.url, run_id, "sse", read_timeout=60):
                pass  # to run_finished
            shoot(f"{web.url}/runs/{run_id}", args.out)
        finally:
            web.kill()
            worker.stop()
    return 0


def shoot(url: str, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            for width, (w, h) in WIDTHS.items():
                for scheme in SCHEMES:
                    context = browser.new_context(
                        viewport={"width": w, "height": h}, color_scheme=scheme
                    )
                    page = context.new_page()
                    page.goto(url)
                    page.locator('#run-status [data-status="succeeded"]').wait_for()
                    page.locator('.step[data-step="join"]').click()
                    page.locator("#attempts").wait_for()
                    # The header above the drawer on a phone, not the box clicked.
                    page.evaluate("window.scrollTo(0, 0)")
                    path = out / f"run-page-{width}-{scheme}.png"
                    page.screenshot(path=str(path), full_page=width == "desktop")
                    print(path)
                    context.close()
        finally:
            browser.close()


if __name__ == "__main__":
    raise SystemExit(main())
