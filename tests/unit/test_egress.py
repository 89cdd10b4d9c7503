"""The egress policy (tasks/egress/), and `http_request` under it, against real servers.

The machine has no outside network: public addresses are checked at the policy level
(literals, or a resolver the test passes in) and never connected to; everything that
is connected to is a loopback HTTP server started here, which records each request so
a test can prove that nothing reached it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks import egress
from tasks.config import Settings
from tasks.egress import Allowlist, EgressPolicy, EgressRefused
from tasks.errors import ToolFailure
from tasks.tools import BUILTIN_TOOLS, LocalContext, ToolRegistry

# -- local servers ----------------------------------------------------------------------

Route = tuple[int, dict[str, str], bytes]


@dataclass
class Server:
    """A loopback HTTP(S) server answering `routes` and recording every request."""

    url: str
    port: int
    routes: dict[str, Route]
    #: (path, Host header) of every request received, in order.
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: The SNI names TLS clients sent.
    sni: list[str | None] = field(default_factory=list)


@contextlib.contextmanager
def serve(
    host: str = "127.0.0.1",
    routes: dict[str, Route] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Server]:
    record = Server("", 0, dict(routes or {}))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.requests.append((self.path, self.headers.get("Host", "")))
            status, headers, body = record.routes.get(self.path, (200, {}, b"ok"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    if tls is not None:
        tls.sni_callback = lambda sock, name, ctx: record.sni.append(name)  # type: ignore[assignment,misc]
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    record.port = server.server_address[1]
    record.url = f"{'https' if tls else 'http'}://{host}:{record.port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No allowlist and no proxy from the environment, and a policy read afresh."""
    monkeypatch.delenv(egress.ALLOW_VARIABLE, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    egress.reset_default_policy()
    yield
    egress.reset_default_policy()


def allow(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Start this process's policy again, with `STEPSTREAM_HTTP_ALLOW=value`."""
    monkeypatch.setenv(egress.ALLOW_VARIABLE, value)
    egress.reset_default_policy()


def http_request(**input: Any) -> Any:
    tool = ToolRegistry(BUILTIN_TOOLS).get("http_request")
    assert tool.input_errors(input) == []
    return tool.func(LocalContext(), **input)


def resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    return lambda host, port: table[host]


# -- address classes, every spelling ----------------------------------------------------

REFUSED = [
    # loopback, in every spelling the resolver accepts
    ("127.0.0.1", "127.0.0.1 is a loopback address"),
    ("127.255.0.9", "is a loopback address"),
    ("2130706433", "2130706433 resolves to 127.0.0.1, which is a loopback address"),
    ("127.1", "127.1 resolves to 127.0.0.1, which is a loopback address"),
    ("0177.0.0.1", "resolves to 127.0.0.1, which is a loopback address"),
    ("0x7f.1", "resolves to 127.0.0.1, which is a loopback address"),
    ("0x7f000001", "resolves to 127.0.0.1, which is a loopback address"),
    ("017700000001", "resolves to 127.0.0.1, which is a loopback address"),
    # A name's address is not shown (the refusal must not map the internal network).
    ("localhost", "localhost resolves to a loopback address"),
    ("::1", "::1 is a loopback address"),
    ("::ffff:127.0.0.1", "an IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("::ffff:7f00:1", "an IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("::127.0.0.1", "an IPv4-compatible form of 127.0.0.1, a loopback address"),
    ("64:ff9b::7f00:1", "a NAT64 form of 127.0.0.1, a loopback address"),
    ("2002:7f00:1::", "a 6to4 form of 127.0.0.1, a loopback address"),
    # private and shared
    ("10.0.0.1", "10.0.0.1 is a private address"),
    ("172.16.0.1", "is a private address"),
    ("172.31.255.254", "is a private address"),
    ("192.168.1.1", "is a private address"),
    ("::ffff:10.0.0.1", "an IPv4-mapped form of 10.0.0.1, a private address"),
    ("100.64.0.1", "is a shared (CGNAT) address"),
    ("100.127.255.254", "is a shared (CGNAT) address"),
    # link-local and cloud metadata
    ("169.254.169.254", "169.254.169.254 is a link-local address (cloud metadata)"),
    ("2852039166", "resolves to 169.254.169.254, which is a link-local address (cloud"),
    ("::ffff:169.254.169.254", "mapped form of 169.254.169.254, a link-local address"),
    ("64:ff9b::a9fe:a9fe", "a NAT64 form of 169.254.169.254, a link-local address"),
    ("169.254.1.1", "is a link-local address"),
    ("fe80::1", "is a link-local address"),
    # multicast, unspecified, broadcast, reserved
    ("224.0.0.1", "is a multicast address"),
    ("239.255.255.250", "is a multicast address"),
    ("ff02::1", "is a multicast address"),
    ("0.0.0.0", "is an unspecified address"),
    ("0", "resolves to 0.0.0.0, which is an unspecified address"),
    ("::", ":: is an unspecified address"),
    ("255.255.255.255", "is a broadcast address"),
    ("240.0.0.1", "is a reserved address"),
    ("::8.8.8.8", "is a reserved address"),  # IPv4-compatible: deprecated, never routed
    # IPv6 local ranges
    ("fc00::1", "is a unique local address"),
    ("fd00:ec2::254", "is a unique local address"),
    ("fec0::1", "is a site-local address"),
    ("64:ff9b:1::1", "is a local-use NAT64 address"),
    # and the rest that is not globally reachable
    ("192.0.2.1", "is a special-purpose address"),
    ("198.18.0.1", "is a special-purpose address"),
    ("2001:db8::1", "is a special-purpose address"),
    ("0.1.2.3", "is a special-purpose address"),
]


@pytest.mark.parametrize(("host", "reason"), REFUSED, ids=[host for host, _ in REFUSED])
def test_non_public_addresses_are_refused_in_every_spelling(host: str, reason: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        EgressPolicy().addresses(host, 80)
    assert reason in refused.value.reason
    assert refused.value.message.endswith("; STEPSTREAM_HTTP_ALLOW opens it")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/", "127.0.0.1 is a loopback address"),
        ("https://2130706433/", "2130706433 resolves to 127.0.0.1, which is a loopback"),
        ("http://[::ffff:127.0.0.1]:81/x", "IPv4-mapped form of 127.0.0.1, a loopback"),
        ("http://user:secret@169.254.169.254/latest/meta-data/", "(cloud metadata)"),
    ],
)
def test_check_url_refuses_before_connecting_and_hides_credentials(url: str, reason: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        egress.check_url(url)
    assert reason in refused.value.reason
    assert refused.value.target == url.replace("user:secret@", "")
    assert "secret" not in refused.value.message


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert EgressPolicy().addresses(address, 443) == (ipaddress.ip_address(address),)


def test_a_name_is_allowed_only_if_every_address_it_resolves_to_is() -> None:
    policy = EgressPolicy(
        resolver=resolver(
            {"example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]}
        )
    )
    assert [str(ip) for ip in policy.check_url("https://example.com/")] == [
        "93.184.215.14",
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    ]
    mixed = EgressPolicy(resolver=resolver({"example.com": ["93.184.215.14", "10.0.0.7"]}))
    with pytest.raises(EgressRefused, match=re.escape("example.com resolves to a private address")):
        mixed.check_url("https://example.com/")


# -- the allowlist ----------------------------------------------------------------------


def test_the_allowlist_opens_exactly_the_hosts_addresses_and_networks_it_names() -> None:
    names = {"internal.test": ["10.9.9.9"], "other.test": ["10.9.9.9"]}
    policy = EgressPolicy(
        Allowlist.parse("127.0.0.1, 10.1.0.0/16, Internal.Test."),
        resolver=lambda host, port: names.get(host) or [str(socket.gethostbyname(host))],
    )
    for opened in ("127.0.0.1", "2130706433", "10.1.0.1", "10.1.255.254", "internal.test"):
        assert policy.addresses(opened, 80)
    for closed in ("127.0.0.2", "10.2.0.1", "10.0.0.1", "other.test", "169.254.169.254"):
        with pytest.raises(EgressRefused):
            policy.addresses(closed, 80)
    assert EgressPolicy(Allowlist.parse("127.0.0.1")).addresses("::ffff:127.0.0.1", 80)
    with pytest.raises(EgressRefused, match="::1 is a loopback"):
        EgressPolicy(Allowlist.parse("127.0.0.1")).addresses("::1", 80)


def test_allowlist_entries_are_normalised_and_bad_ones_stop_the_settings() -> None:
    raw = " Internal.Test. ,10.1.0.0/16,,[::1], 127.0.0.1 ,internal.test"
    expected = ("internal.test", "10.1.0.0/16", "::1", "127.0.0.1")
    assert egress.parse_allow(raw) == expected
    assert Settings.from_env({"STEPSTREAM_HTTP_ALLOW": raw}).http_allow == expected
    assert Settings.from_env({}).http_allow == ()
    for bad in ("10.0.0.0/33", "10.0.0.1/8", "http://x", "a b", "*", "127.1", "0x7f.1", "-x"):
        with pytest.raises(
            ValueError, match="^" + re.escape(f"STEPSTREAM_HTTP_ALLOW: '{bad}' is not a")
        ):
            Settings.from_env({"STEPSTREAM_HTTP_ALLOW": f"ok.test,{bad}"})


# -- connections go where the check said ------------------------------------------------


def test_dns_rebinding_cannot_move_the_connection_to_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name resolves to a public address once, then to loopback: the connection
    goes to the public address that was checked, and the loopback server sees nothing."""
    answers: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        answer = "93.184.215.14" if not answers else "127.0.0.1"
        answers.append(answer)
        return [answer]

    connected: list[tuple[str, int]] = []
    real_connect = socket.create_connection

    def record_connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address)
        if address[0] == "93.184.215.14":
            raise ConnectionRefusedError("no outside network here")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", record_connect)
    with serve() as loopback:
        url = f"http://rebind.test:{loopback.port}/"
        with EgressPolicy(resolver=rebinding).client(timeout=5) as client:
            with pytest.raises(httpx.ConnectError):
                client.get(url)
            assert connected == [("93.184.215.14", loopback.port)]
            # Later connections resolve again, and are checked again.
            with pytest.raises(
                EgressRefused, match=re.escape("rebind.test resolves to a loopback address")
            ):
                client.get(url)
        assert answers == ["93.184.215.14", "127.0.0.1"]
        assert connected == [("93.184.215.14", loopback.port)]
        assert loopback.requests == []


CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBbjCCAROgAwIBAgIBATAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJzdGVwc3Ry
ZWFtIHRlc3QgQ0EwIBcNMjAwMTAxMDAwMDAwWhgPMjEyMDAxMDEwMDAwMDBaMB0x
GzAZBgNVBAMMEnN0ZXBzdHJlYW0gdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABJmeFiQ6WtANronew+K4J3nIlTMYTGL29XqQbaJs89UuCVJdX90ti9E8
GN9ETqJedOdo9vbcW3//pm+a69dnCAejQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYD
VR0PAQH/BAQDAgEGMB0GA1UdDgQWBBSfU1bL8N+9QvN/rIrdR489cgqvhTAKBggq
hkjOPQQDAgNJADBGAiEAyC+tj84xc9O+Zs9fW3/uQLCMxtD04cEyM2V/WRTZ+okC
IQDz7E6LvOCNTlkHanvITqOeKgZju/S2TLd4nFt+fjV6lQ==
-----END CERTIFICATE-----
"""
LEAF_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBgzCCASigAwIBAgIBAjAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJzdGVwc3Ry
ZWFtIHRlc3QgQ0EwIBcNMjAwMTAxMDAwMDAwWhgPMjEyMDAxMDEwMDAwMDBaMBYx
FDASBgNVBAMMC3Bpbm5lZC50ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
lET5JQQW6CXvO1+CA9NARfNBs40rTh9krlzLU3ElFJ2wk8q2OM/GTW797WGusmp1
J4hu0uTvW67lPVRtPWZmWKNeMFwwFgYDVR0RBA8wDYILcGlubmVkLnRlc3QwDAYD
VR0TAQH/BAIwADATBgNVHSUEDDAKBggrBgEFBQcDATAfBgNVHSMEGDAWgBSfU1bL
8N+9QvN/rIrdR489cgqvhTAKBggqhkjOPQQDAgNJADBGAiEAuxnHjRdKfGEcYDa/
ynTOyD2Algm1qDR+d9n4dWXT5IYCIQCr5BK2+bCkENiqlwL6uMOi1n+Jm+aMOLKP
pezqc33kwg==
-----END CERTIFICATE-----
"""
LEAF_KEY = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZFBngx/ZZkEK4Hm7
0cweO6qNrACvI5xaIj9FajC4faehRANCAASURPklBBboJe87X4ID00BF80GzjStO
H2SuXMtTcSUUnbCTyrY4z8ZNbv3tYa6yanUniG7S5O9bruU9VG09ZmZY
-----END PRIVATE KEY-----
"""


def test_a_pinned_tls_connection_still_verifies_the_certificate_for_the_host_name(
    tmp_path: Path,
) -> None:
    """The TCP connection goes to the checked address; SNI, Host and the certificate
    check keep the URL's name."""
    (tmp_path / "leaf.pem").write_text(LEAF_PEM + LEAF_KEY)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tmp_path / "leaf.pem")
    client_tls = ssl.create_default_context(cadata=CA_PEM)
    with serve(tls=server_tls) as server:
        names = {"pinned.test": ["127.0.0.1"], "wrong.test": ["127.0.0.1"]}
        policy = EgressPolicy(Allowlist.parse("127.0.0.1"), resolver=resolver(names))
        with policy.client(verify=client_tls, timeout=5) as client:
            response = client.get(f"https://pinned.test:{server.port}/hello")
            assert (response.status_code, response.text) == (200, "ok")
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                client.get(f"https://wrong.test:{server.port}/hello")
        assert server.requests == [("/hello", f"pinned.test:{server.port}")]
        assert server.sni[0] == "pinned.test"


# -- http_request under the policy -------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "reason"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("2130706433", "2130706433 resolves to 127.0.0.1, which is a loopback address"),
        ("127.1", "127.1 resolves to 127.0.0.1, which is a loopback address"),
        ("0x7f.1", "0x7f.1 resolves to 127.0.0.1, which is a loopback address"),
        ("localhost", "localhost resolves to a loopback address"),
        (
            "[::ffff:127.0.0.1]",
            "::ffff:127.0.0.1 resolves to ::ffff:7f00:1, which is an IPv4-mapped form of"
            " 127.0.0.1, a loopback address",
        ),
    ],
)
def test_http_request_refuses_loopback_by_default(spelling: str, reason: str) -> None:
    with serve() as server:
        url = f"http://{spelling}:{server.port}/"
        with pytest.raises(ToolFailure) as refused:
            http_request(url=url)
        message = refused.value.message
        assert message.startswith(f"http_request refused {url}: {reason}"), message
        assert message.endswith("a loopback address; STEPSTREAM_HTTP_ALLOW opens it"), message
        assert server.requests == []


@pytest.mark.parametrize("spelling", ["127.0.0.2", "2130706434"])
def test_a_redirect_to_a_loopback_address_not_allowed_is_refused(
    monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    allow(monkeypatch, "127.0.0.1")
    with serve("127.0.0.2") as secret, serve() as front:
        target = f"http://{spelling}:{secret.port}/secret"
        front.routes["/start"] = (302, {"Location": "/hop"}, b"")
        front.routes["/hop"] = (307, {"Location": target}, b"")
        with pytest.raises(ToolFailure) as refused:
            http_request(url=f"{front.url}/start")
        assert refused.value.message.startswith(
            f"http_request refused {target} (redirected from {front.url}/start): "
        )
        assert "resolves to 127.0.0.2, which is a loopback" in refused.value.message or (
            "127.0.0.2 is a loopback address" in refused.value.message
        )
        assert [path for path, _ in front.requests] == ["/start", "/hop"]
        assert secret.requests == []
        # Not following redirects returns the redirect itself.
        assert http_request(url=f"{front.url}/hop", follow_redirects=False)["status"] == 307
        assert secret.requests == []


def test_redirects_are_followed_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    allow(monkeypatch, "127.0.0.1")
    with serve() as server:
        for n in range(egress.MAX_REDIRECTS + 1):
            server.routes[f"/{n}"] = (302, {"Location": f"/{n + 1}"}, b"")
        server.routes[f"/{egress.MAX_REDIRECTS}"] = (200, {}, b"arrived")
        assert http_request(url=f"{server.url}/0")["body"] == "arrived"
        server.requests.clear()
        server.routes["/loop"] = (302, {"Location": "/loop"}, b"")
        with pytest.raises(ToolFailure, match=r"^GET .*/loop failed: more than 10 redirects$"):
            http_request(url=f"{server.url}/loop")
        assert len(server.requests) == egress.MAX_REDIRECTS + 1


def test_the_allowlist_opens_one_host_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    allow(monkeypatch, "127.0.0.2")
    with serve("127.0.0.2") as opened, serve() as closed:
        assert http_request(url=f"{opened.url}/x")["body"] == "ok"
        with pytest.raises(ToolFailure, match=re.escape("127.0.0.1 is a loopback address")):
            http_request(url=f"{closed.url}/x")
        assert [path for path, _ in opened.requests] == ["/x"]
        assert closed.requests == []


def test_proxy_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    allow(monkeypatch, "127.0.0.1")
    with serve() as proxy, serve() as server:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        assert http_request(url=f"{server.url}/direct")["status"] == 200
        assert [path for path, _ in server.requests] == ["/direct"]
        assert proxy.requests == []


@pytest.mark.parametrize("address", ["192.0.0.8", "192.0.0.100", "192.0.0.200", "2001:2::1"])
def test_special_purpose_blocks_are_refused_whatever_the_python(address: str) -> None:
    """IANA's special-purpose blocks come from the policy's own table: the running
    Python's `ipaddress` table lacked most of 192.0.0.0/24 before 3.11.10 / 3.12.4."""
    assert egress.non_public(ipaddress.ip_address(address)) is not None
    policy = egress.EgressPolicy(resolver=lambda host, port: [address])
    with pytest.raises(egress.EgressRefused):
        policy.check_url("http://dummy.example/")


@pytest.mark.parametrize("address", ["192.0.0.9", "192.0.0.10", "8.8.8.8", "2001:4860::8888"])
def test_globally_reachable_addresses_in_or_near_those_blocks_pass(address: str) -> None:
    assert egress.non_public(ipaddress.ip_address(address)) is None
