"""Bearer-token auth for `/api`, when `STEPSTREAM_API_TOKEN` is set.

Browsers cannot set headers on a WebSocket or an EventSource, so `access_token` in the
query string is accepted too; `RedactTokens` keeps it out of request logs.
"""

from __future__ import annotations

import hmac
import logging
import re

from flask import request

from .errors import Unauthorized

_TOKEN_IN_QUERY = re.compile(r"(access_token=)[^&\s\"]*")


def check_token(expected: str) -> None:
    """Raise Unauthorized unless the request carries the expected token."""
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() != "bearer" or not supplied:
        supplied = request.args.get("access_token", "")
    if not supplied:
        raise Unauthorized("missing bearer token")
    if not hmac.compare_digest(supplied.strip().encode(), expected.encode()):
        raise Unauthorized("invalid bearer token")


class RedactTokens(logging.Filter):
    """Replace `access_token=...` in log records with `access_token=[redacted]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = _TOKEN_IN_QUERY.sub(r"\1[redacted]", record.msg)
        return True
