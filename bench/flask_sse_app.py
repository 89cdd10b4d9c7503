"""The peer stepstream's streaming is compared with: flask-sse (Redis pub/sub, one
subscription per client), served by the same gunicorn configuration as stepstream."""

from __future__ import annotations

import os

from flask import Flask
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["STEPSTREAM_REDIS_URL"]
app.register_blueprint(sse, url_prefix="/stream")


@app.get("/healthz")
def healthz() -> str:
    return "ok"
