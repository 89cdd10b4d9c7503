"""The browser UI: one page, served for `/` and `/runs/<run_id>` (a link anyone can
share), that talks to the API like any other client. Its script and styles are plain
files under `static/`: nothing to build, nothing fetched from elsewhere."""

from __future__ import annotations

from flask import Blueprint, render_template

from .services import services

bp = Blueprint("ui", __name__)


@bp.get("/")
@bp.get("/runs/<run_id>")
def page(run_id: str | None = None) -> str:
    # The page itself holds no data, so it needs no token: the API asks for one.
    return render_template("index.html", flower_url=services().settings.flower_url)
