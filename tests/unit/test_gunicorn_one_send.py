"""gunicorn.conf.py's response: headers leave with the first body bytes, in one send."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


@pytest.fixture(scope="module")
def one_send() -> Any:
    original = wsgi.Response
    spec = importlib.util.spec_from_file_location("gunicorn_conf", CONF)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # installs the response class, as gunicorn does
    yield module.OneSendResponse
    wsgi.Response = original


class Sock:
    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.files: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        file.seek(offset)
        data = file.read(count)
        self.files.append(data)
        self.sends.append(data)
        return len(data)


def serve(request: bytes, app: Callable[..., Iterable[bytes]], sock: Sock | None = None) -> Sock:
    """One request through gunicorn's own parsing, response and writing, as its
    workers do (`wsgi.create`, then write each item the app returns, then close)."""
    cfg = Config()
    req = next(iter(RequestParser(cfg, iter([request]), ("127.0.0.1", 1))))
    sock = sock or Sock()
    resp, environ = wsgi.create(req, sock, ("127.0.0.1", 1), ("127.0.0.1", 8000), cfg)
    body = app(environ, resp.start_response)
    if isinstance(body, wsgi.FileWrapper) and resp.sendfile(body):
        pass
    else:
        for item in body:
            resp.write(item)
    resp.close()
    return sock


def json_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = b'{"run_id":"x"}'
    start_response(
        "202 ACCEPTED", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def test_a_json_answer_is_one_send_with_its_headers(one_send: Any) -> None:
    sock = serve(b"POST /api/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", json_app)
    assert len(sock.sends) == 1
    head, _, body = sock.sends[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202 ACCEPTED\r\n")
    assert b"Content-Length: 14" in head
    assert body == b'{"run_id":"x"}'


def test_a_head_request_gets_its_headers_and_no_body(one_send: Any) -> None:
    sock = serve(b"HEAD /api/runs HTTP/1.1\r\nHost: x\r\n\r\n", json_app)
    assert len(sock.sends) == 1
    assert sock.sends[0].startswith(b"HTTP/1.1 202 ACCEPTED\r\n")
    assert sock.sends[0].endswith(b"\r\n\r\n")


def test_an_empty_answer_still_sends_its_headers(one_send: Any) -> None:
    def no_content(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("204 NO CONTENT", [])
        return []

    sock = serve(b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n", no_content)
    assert b"".join(sock.sends).startswith(b"HTTP/1.1 204 NO CONTENT\r\n")
    assert b"".join(sock.sends).endswith(b"\r\n\r\n")


def test_a_stream_sends_its_headers_first_then_well_framed_chunks(one_send: Any) -> None:
    def stream(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    sock = serve(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n", stream)
    wire = b"".join(sock.sends)
    head, _, body = wire.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"


def test_a_file_sent_whole_follows_its_headers(one_send: Any, tmp_path: Path) -> None:
    path = tmp_path / "app.js"
    path.write_bytes(b"console.log(1)")

    def file_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Length", "14")])
        return environ["wsgi.file_wrapper"](path.open("rb"))

    sock = serve(b"GET /static/app.js HTTP/1.1\r\nHost: x\r\n\r\n", file_app)
    assert sock.files == [b"console.log(1)"]
    assert sock.sends[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert sock.sends[-1] == b"console.log(1)"


def test_an_empty_first_write_sends_the_headers_at_once(one_send: Any) -> None:
    """A streaming app may yield b"" to have its headers sent before its first event."""
    sock = Sock()
    sent_before_next: list[int] = []

    def stream(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        yield b""
        sent_before_next.append(len(sock.sends))
        yield b"data: 1\n\n"

    serve(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n", stream, sock)
    assert sent_before_next == [1]
    assert sock.sends[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"".join(sock.sends).endswith(b"9\r\ndata: 1\n\n\r\n0\r\n\r\n")


def test_a_reloaded_configuration_still_sends_its_headers(one_send: Any) -> None:
    """gunicorn runs its configuration file again on SIGHUP: the response class it
    installs then must still be gunicorn's own plus one layer, or headers get lost."""
    spec = importlib.util.spec_from_file_location("gunicorn_conf_again", CONF)
    assert spec is not None and spec.loader is not None
    again = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(again)
    assert again.OneSendResponse.__mro__[1] is one_send.gunicorn_response
    sock = serve(b"POST /api/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", json_app)
    assert len(sock.sends) == 1
    assert sock.sends[0].startswith(b"HTTP/1.1 202 ACCEPTED\r\n")
    assert sock.sends[0].endswith(b'\r\n\r\n{"run_id":"x"}')
