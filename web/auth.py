"""Who may call `/api` (SPEC §6 and §14), and keeping their tokens out of the logs.

With `STEPSTREAM_API_TOKEN` set, every `/api` route needs a credential:

- the API token, as `Authorization: Bearer <token>`; on the two streaming routes (SSE
  and WebSocket, where a browser cannot set that header) also as `?access_token=`;
- a run token (`stream_token`, see `run_tokens`), on GET of its own run's snapshot,
  events page, SSE and WebSocket only, as a bearer or `?access_token=`.

`redact` and `RedactTokens` keep `access_token` (in any spelling a client may send) and
bearer credentials out of log lines: Werkzeug's request log, gunicorn's access and
error logs.
"""

from __future__ import annotations

import copy
import hmac
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from flask import request

from .errors import Unauthorized
from .run_tokens import RunTokenExpired, RunTokens

#: The query parameter browsers pass a token in.
QUERY_NAME = "access_token"
#: Paths of one run a run token may read, and which of them stream.
_RUN_PATH = re.compile(r"^/api/runs/(?P<run_id>[^/]+)(?P<stream>/events|/ws)?$")
#: One `name=value` of a query string, wherever it appears in a line of text. The name
#: is undecoded (`%61ccess%5Ftoken`); the value runs to the next `&`, `?` or whitespace,
#: so that a `=` in the path (`/runs/a=b/events?access_token=…`) cannot swallow the
#: query behind it.
_PARAM = re.compile(r"(?P<name>[^\s=&;?/\"'#<>]+)=(?P<value>[^&?\s]*)")
#: A bearer credential as an Authorization header or a log line shows it.
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
REDACTED = "[redacted]"


def check_request(api_token: str, run_tokens: RunTokens | None) -> None:
    """Raise Unauthorized unless the request may go on (an `/api` request)."""
    supplied, in_query = _supplied()
    if not supplied:
        raise Unauthorized("missing bearer token")
    run_path = _RUN_PATH.match(request.path)
    streaming = bool(run_path and run_path["stream"]) and request.method == "GET"
    if hmac.compare_digest(supplied.encode(), api_token.encode()):
        if in_query and not streaming:
            raise Unauthorized(
                f"the API token is accepted in the query string ({QUERY_NAME}) only on "
                "the streaming routes; send it as Authorization: Bearer"
            )
        return
    if run_tokens is None:
        raise Unauthorized("invalid bearer token")
    try:
        granted = run_tokens.run_of(supplied)
    except RunTokenExpired:
        raise Unauthorized(
            "run token expired: ask for a new one (an Idempotency-Key replay answers one)"
        ) from None
    if granted is None:
        raise Unauthorized("invalid bearer token")
    if run_path is None or run_path["run_id"] != granted or request.method not in ("GET", "HEAD"):
        raise Unauthorized("a run token only reads its own run: its snapshot and events")


def _supplied() -> tuple[str, bool]:
    """The credential the request carries, and whether it came in the query string."""
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() == "bearer" and supplied.strip():
        return supplied.strip(), False
    return request.args.get(QUERY_NAME, "").strip(), True


# -- nothing leaks ---------------------------------------------------------------------------


def _redact_param(match: re.Match[str]) -> str:
    # Decoded as Werkzeug decodes a query string (`%5F`, `%5f`, `+`), compared in any case.
    if unquote_plus(match["name"]).strip().lower() == QUERY_NAME:
        return f"{match['name']}={REDACTED}"
    return match[0]


def redact(text: str) -> str:
    """`text` with every `access_token=` value and bearer credential replaced."""
    if "=" in text:
        text = _PARAM.sub(_redact_param, text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


def _redact_value(key: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if isinstance(key, str) and "authorization" in key.lower():
        return REDACTED  # gunicorn's `%({authorization}i)s`, `%({http_authorization}e)s`
    return redact(value)


def redact_atoms(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """gunicorn's access-log atoms (`r`, `q`, `{name}i`, `{name}e`, ...) redacted."""
    return {key: _redact_value(key, value) for key, value in atoms.items()}


class RedactTokens(logging.Filter):
    """Redacts a record's message and arguments, whatever their shape: a tuple (Werkzeug,
    most loggers) or a mapping (gunicorn's access log formats `%(r)s`-style atoms), which
    is copied with its type so that lookups of atoms it lacks still work."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping):
            redacted = copy.copy(args)
            for key, value in args.items():
                redacted[key] = _redact_value(key, value)  # type: ignore[index]
            record.args = redacted
        elif isinstance(args, tuple):
            record.args = tuple(_redact_value(None, a) for a in args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True
