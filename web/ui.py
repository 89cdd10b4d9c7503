"""The browser UI: one page, served for `/` and `/runs/<run_id>` (a link anyone can
share), that talks to the API like any other client. Its script and styles are plain
files under `static/`: nothing to build, nothing fetched from elsewhere.

Any other path outside `/api` is answered with a page saying so (404), with links back
into the UI; the API keeps its JSON errors."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request
from werkzeug.exceptions import NotFound

from .errors import error_response
from .services import services

bp = Blueprint("ui", __name__)


@bp.get("/")
@bp.get("/runs/<run_id>")
def page(run_id: str | None = None) -> str:
    # The page itself holds no data, so it needs no token: the API asks for one.
    return render_template("index.html", flower_url=services().settings.flower_url)


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


@bp.app_errorhandler(NotFound)
def not_found(exc: NotFound) -> Response:
    """An HTML page for a person who followed a bad link; JSON for the API's clients."""
    if is_api(request.path):
        return error_response(404, "not_found", exc.description or "Not Found")
    html = render_template("not_found.html", path=request.path)
    return Response(html, status=404, mimetype="text/html")
