"""The tools every stepstream installation has: echo, sleep, fail and http_request.

Each function takes the context positionally-only, so an input key named `ctx` cannot
collide with it. The schemas forbid unknown keys for the tools with fixed parameters,
so input that validates can always be passed as keyword arguments.
"""

from __future__ import annotations

import codecs
import json as jsonlib
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import httpx

from tasks import egress
from tasks.errors import StepCancelled, ToolFailure
from tasks.tools.context import ToolContext
from tasks.tools.registry import Tool, tool

#: How long `sleep` naps between looks at `ctx.cancelled`: the cancellation latency.
CANCEL_POLL_S = 0.1

#: The most `http_request` reads of a response body; larger bodies fail the step
#: rather than filling a worker's memory and the event log.
MAX_BODY_BYTES = 10 * 1024 * 1024

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@tool(
    "echo",
    description="Return the input object unchanged.",
    input_schema={"type": "object"},
)
def echo(ctx: ToolContext, /, **values: Any) -> dict[str, Any]:
    return dict(values)


@tool(
    "sleep",
    description=(
        "Wait for a number of seconds, reporting progress in equal ticks; "
        "stops early when the run is cancelled (the step is then cancelled)."
    ),
    input_schema={
        "type": "object",
        "required": ["seconds"],
        "additionalProperties": False,
        "properties": {
            "seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": 3600,
                "description": "How long to wait.",
            },
            "ticks": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10000,
                "default": 10,
                "description": "How many progress updates to report along the way.",
            },
        },
    },
)
def sleep(ctx: ToolContext, /, *, seconds: float, ticks: int = 10) -> dict[str, Any]:
    ticks = int(ticks)  # JSON Schema accepts 10.0 as an integer
    started = time.monotonic()
    for tick in range(1, ticks + 1):
        # Deadlines from the start, not slice lengths, so naps do not add up to drift.
        if not _wait_until(started + seconds * tick / ticks, ctx):
            slept = time.monotonic() - started
            raise StepCancelled(f"cancelled after sleeping {slept:.3f} of {seconds:g} s")
        ctx.progress(tick / ticks, f"{tick}/{ticks}")
    return {"slept": seconds}


def _wait_until(deadline: float, ctx: ToolContext) -> bool:
    """Nap until `deadline` (monotonic); False as soon as the run is cancelled."""
    while not ctx.cancelled:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        time.sleep(min(CANCEL_POLL_S, remaining))
    return False


@tool(
    "fail",
    description="Fail the step with the given message.",
    input_schema={
        "type": "object",
        "required": ["message"],
        "additionalProperties": False,
        "properties": {
            "message": {"type": "string", "description": "Why the step fails."},
        },
    },
)
def fail(ctx: ToolContext, /, *, message: str) -> NoReturn:
    raise ToolFailure(message)


# Distinguishes "no body" from an explicit JSON `null` body.
_NO_BODY: Any = object()


@tool(
    "http_request",
    description=(
        "Send an HTTP request and return the status, headers and body (parsed when the "
        "response is JSON). Any status is a result; only transport errors, timeouts and "
        "addresses the egress policy refuses (not public, unless STEPSTREAM_HTTP_ALLOW "
        "opens them) fail the step."
    ),
    input_schema={
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "url": {
                "type": "string",
                "format": "uri",
                # `format` is only an annotation in draft 2020-12; the pattern enforces it.
                "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+",
                "description": "Absolute http:// or https:// URL.",
            },
            "method": {"enum": list(HTTP_METHODS), "default": "GET"},
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Request headers.",
            },
            "json": {
                "description": "Request body, sent as JSON with Content-Type application/json.",
            },
            "timeout_s": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 300,
                "default": 30,
                "description": "Give up after this many seconds.",
            },
            "follow_redirects": {
                "type": "boolean",
                "default": True,
                "description": (
                    f"Follow 3xx redirects (at most {egress.MAX_REDIRECTS}, each checked "
                    "like the first URL) instead of returning them."
                ),
            },
        },
    },
)
def http_request(
    ctx: ToolContext,
    /,
    *,
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    json: Any = _NO_BODY,
    timeout_s: float = 30,
    follow_redirects: bool = True,
) -> dict[str, Any]:
    target = _parse_url(url)
    shown = f"{method} {_without_credentials(target)}"
    request_headers, content = _request_parts(shown, headers, json)
    policy = egress.default_policy()  # read from the environment on first use
    started = time.monotonic()
    try:
        # The policy's client resolves each host once, refuses what is not allowed and
        # connects to the addresses it checked; it ignores proxy variables.
        with policy.client(timeout=timeout_s) as client:
            request = client.build_request(method, target, headers=request_headers, content=content)
            response, body = _exchange(
                client,
                request,
                shown,
                follow_redirects=follow_redirects,
                deadline=started + timeout_s,
                timeout_s=timeout_s,
            )
    except httpx.TimeoutException as exc:
        raise ToolFailure(f"{shown} failed: {_timed_out(timeout_s)}") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ToolFailure(f"{shown} failed: {str(exc) or type(exc).__name__}") from exc
    elapsed_ms = round((time.monotonic() - started) * 1000)
    ctx.log(f"{shown} -> {response.status_code} in {elapsed_ms} ms")
    return {
        "status": response.status_code,
        # httpx lowercases names and joins repeated headers with ", ".
        "headers": dict(response.headers.items()),
        "body": _decode_body(response, body),
    }


def _exchange(
    client: httpx.Client,
    request: httpx.Request,
    shown: str,
    *,
    follow_redirects: bool,
    deadline: float,
    timeout_s: float,
) -> tuple[httpx.Response, bytes]:
    """Send `request`, following redirects here (so each hop is named in a refusal)."""
    first = request.url
    for _ in range(egress.MAX_REDIRECTS + 1):
        try:
            response = client.send(request, stream=True)
        except egress.EgressRefused as exc:
            hop = _without_credentials(request.url)
            if request.url != first:
                hop += f" (redirected from {_without_credentials(first)})"
            raise ToolFailure(
                f"http_request refused {hop}: {exc.reason}; {egress.ALLOW_VARIABLE} opens it"
            ) from exc
        try:
            # httpx builds the next request (method, body and headers as a browser
            # would) whenever the response redirects; only following it is left here.
            if not (follow_redirects and response.next_request is not None):
                return response, _read_body(response, shown, deadline=deadline, timeout_s=timeout_s)
            request = response.next_request
        finally:
            response.close()
    raise ToolFailure(f"{shown} failed: more than {egress.MAX_REDIRECTS} redirects")


def _parse_url(url: str) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ToolFailure(f"invalid url: {exc}") from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise ToolFailure("url must be an absolute http:// or https:// URL")
    return target


def _without_credentials(url: httpx.URL) -> str:
    # Messages end up in logs and the event stream; passwords in URLs must not.
    if url.userinfo:
        url = url.copy_with(username=None, password=None)
    return str(url)


def _request_parts(
    shown: str, headers: Mapping[str, str] | None, body: Any
) -> tuple[httpx.Headers, bytes | None]:
    try:
        request_headers = httpx.Headers(dict(headers or {}))
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError for non-ASCII values
        raise ToolFailure(f"{shown} failed: invalid headers: {exc}") from exc
    if body is _NO_BODY:
        return request_headers, None
    try:
        content = jsonlib.dumps(
            body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise ToolFailure(f"{shown} failed: body is not JSON: {exc}") from exc
    request_headers.setdefault("content-type", "application/json")
    return request_headers, content


def _read_body(response: httpx.Response, shown: str, *, deadline: float, timeout_s: float) -> bytes:
    too_large = f"{shown} failed: response body exceeds {MAX_BODY_BYTES} bytes"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ToolFailure(too_large)
    chunks: list[bytes] = []
    size = 0
    # Counted after decompression, so a small gzip bomb cannot slip past the cap.
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ToolFailure(too_large)
        # httpx's timeout is per read; a server trickling bytes must not hold the step.
        if time.monotonic() > deadline:
            raise ToolFailure(f"{shown} failed: {_timed_out(timeout_s)}")
        chunks.append(chunk)
    return b"".join(chunks)


def _timed_out(timeout_s: float) -> str:
    return f"timed out after {timeout_s:g} s"


def _decode_body(response: httpx.Response, body: bytes) -> Any:
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            return jsonlib.loads(body, parse_constant=_reject_constant)
        except ValueError:
            pass  # mislabelled or truncated: the text is still worth returning
    return body.decode(_charset(response), errors="replace")


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity parse in Python but would make the step output invalid JSON.
    raise ValueError(f"{name} is not JSON")


def _charset(response: httpx.Response) -> str:
    charset = response.charset_encoding or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        return "utf-8"
    return charset


BUILTIN_TOOLS: tuple[Tool, ...] = (echo, sleep, fail, http_request)
