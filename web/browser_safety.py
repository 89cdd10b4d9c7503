"""What keeps a web page from using the API through its visitor's browser (SPEC §14).

With no API token (the `make up` default) anything that reaches the port may use the
API, and a browser on the same machine reaches it on behalf of any page it shows. Four
checks close what such a page can do:

- **Content type (CSRF).** An HTML form, or a `fetch` without CORS, can send a POST
  only as `text/plain`, `application/x-www-form-urlencoded` or `multipart/form-data`,
  to any site and without asking. A POST that declares a type must therefore declare
  `application/json` (with no charset or `charset=utf-8`), which a browser sends across
  origins only after a CORS preflight that this server never grants; else 415. A POST
  with no body needs no type (`curl -X POST .../cancel`); but an empty body under a type
  that is not JSON is 415 too, since an empty form is all it takes to cancel a run.
- **Host (DNS rebinding).** A page whose own name is made to resolve to this server's
  address reads the API as its own origin; only its `Host` header gives it away. A
  `Host` must be one of `allowed_hosts` (by default localhost, 127.0.0.1 and ::1), or
  the IP address the connection came in on (the bound address: a page that reaches
  the server by its address is not rebinding anything); else 400. `*` allows every
  host (for deployments behind a proxy that checks it). The probes answer whatever
  the `Host`: orchestrators call them by a pod's address, and they reveal nothing.
- **Origin.** A WebSocket upgrade (which no CORS rule covers) or an unsafe method that
  carries an `Origin` must come from the web's own origin (the `Origin` whose host
  and port are the request's `Host`) or one of `allowed_origins` (`*`: any); else 403,
  before any upgrade. Requests without an `Origin` (curl, servers) are allowed.
- **Headers.** Every response says: only this server's own scripts, styles and
  connections (no inline code), never in a frame, no content sniffing, no referrer.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, request
from werkzeug.http import parse_options_header

from tasks.config import Settings
from tasks.errors import StepstreamError

from . import errors

#: Methods that change nothing, and so need no Origin check (SPEC §14: "unsafe method").
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Answer whatever the Host: orchestrators call them by address, and they reveal nothing.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
DEFAULT_PORTS = {"http": 80, "https": 443}

#: Only the server's own scripts, styles, images and connections (`'self'` covers its
#: ws: and wss: URLs too); no inline code, no plugins, no <base>, never in a frame.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors, for browsers that predate it
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

#: A Host header: a bracketed IPv6 address or a name, then an optional port.
_HOST = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<name>[^:\[\]]*))(?::(?P<port>[0-9]{1,5}))?")


class HostNotAllowed(StepstreamError):
    code = "host_not_allowed"


class OriginNotAllowed(StepstreamError):
    code = "origin_not_allowed"


class UnsupportedMediaType(StepstreamError):
    code = "unsupported_media_type"


errors.STATUS.update({HostNotAllowed: 400, OriginNotAllowed: 403, UnsupportedMediaType: 415})


def register(app: Flask, settings: Settings) -> None:
    """Check every request before anything else looks at it; add the headers to every
    response. Call before any other `before_request` is registered."""

    @app.before_request
    def _check() -> None:
        check_host(settings.allowed_hosts)
        check_origin(settings.allowed_origins)
        check_content_type()

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


# -- Host ------------------------------------------------------------------------------


def split_host(value: str) -> tuple[str, int | None] | None:
    """`(name, port)` of a Host header, the name lowercased without a final dot; None
    when it is not one."""
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    name = match["v6"] if match["v6"] is not None else match["name"].rstrip(".")
    if not name:
        return None
    port = int(match["port"]) if match["port"] else None
    return name, port


def as_ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def local_address() -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address this request's connection came in on: the bound address, or, for a
    server bound to every interface (0.0.0.0), the one the client used. None when the
    server does not say (a Unix socket, a test client)."""
    environ = request.environ
    sock: Any = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    try:
        address = sock.getsockname()
    except (AttributeError, OSError):
        return None
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return None
    return as_ip(address[0])


def host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    if "*" in allowed or name in allowed:
        return True
    ip = as_ip(name)
    if ip is None:
        return False
    return ip == local_address() or any(as_ip(entry) == ip for entry in allowed)


def check_host(allowed: tuple[str, ...]) -> None:
    if request.path in PROBES:
        return
    raw = request.environ.get("HTTP_HOST")
    if raw is None:
        return  # HTTP/1.0 without a Host: no browser sends that
    parsed = split_host(raw)
    if parsed is None or not host_allowed(parsed[0], allowed):
        raise HostNotAllowed(
            f"this server does not answer to the host {raw[:200]!r}; "
            "list it in STEPSTREAM_ALLOWED_HOSTS"
        )


# -- Origin ----------------------------------------------------------------------------


def split_origin(value: str) -> tuple[str, str, int] | None:
    """`(scheme, host, port)` of an http(s) origin, the port made explicit; None for
    `null` and anything that is not one."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.rstrip(".")
    return parts.scheme, host, port or DEFAULT_PORTS[parts.scheme]


def is_own_origin(origin: tuple[str, str, int]) -> bool:
    """Whether the Origin names this very server: its host and port are the request's
    Host (a Host without a port has its scheme's default, as a browser writes it)."""
    host = split_host(request.environ.get("HTTP_HOST", ""))
    if host is None:
        return False
    scheme, name, port = origin
    return name == host[0] and port == (host[1] or DEFAULT_PORTS[scheme])


def origin_allowed(raw: str, allowed: tuple[str, ...]) -> bool:
    if "*" in allowed or raw.strip().lower() in allowed:
        return True  # `null` only when listed as such
    origin = split_origin(raw)
    if origin is None:
        return False
    return is_own_origin(origin) or any(split_origin(entry) == origin for entry in allowed)


def is_websocket() -> bool:
    return "websocket" in request.headers.get("Upgrade", "").lower()


def check_origin(allowed: tuple[str, ...]) -> None:
    raw = request.headers.get("Origin")
    if raw is None or (request.method in SAFE_METHODS and not is_websocket()):
        return
    if not origin_allowed(raw, allowed):
        what = "a WebSocket" if is_websocket() else f"a {request.method[:20]}"
        raise OriginNotAllowed(
            f"{what} from the origin {raw[:200]!r} is refused; "
            "list it in STEPSTREAM_ALLOWED_ORIGINS"
        )


# -- Content type ----------------------------------------------------------------------


def is_json_type(value: str) -> bool:
    mimetype, options = parse_options_header(value)
    charset = options.get("charset", "utf-8").lower()
    return mimetype.lower() == "application/json" and charset == "utf-8"


def has_body() -> bool:
    return bool(request.content_length) or "HTTP_TRANSFER_ENCODING" in request.environ


def check_content_type() -> None:
    """POST bodies are JSON (SPEC §14); a POST with no body may leave the type out."""
    if request.method != "POST" or request.url_rule is None:
        return  # a route that does not exist answers 404 or 405 as before
    declared = request.headers.get("Content-Type")
    if declared is None and not has_body():
        return
    if declared is not None and is_json_type(declared):
        return
    raise UnsupportedMediaType(
        "a POST body must be sent as Content-Type: application/json (charset utf-8, if "
        "any); a POST without a body needs no Content-Type",
        {"content_type": None if declared is None else declared[:200]},
    )
