"""A TCP proxy to a real Redis that can turn into a black hole and back.

In black-hole mode it accepts connections and never answers them, and what clients
send on the connections it already forwards goes nowhere: the shape of a Redis behind
a partition, a failover in progress or a paused VM, where nothing is refused and
nothing is closed. Connections caught by a black hole stay dead after it ends (as TCP
connections across a partition do); new ones are forwarded again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        #: Set when a black hole caught this connection: nothing crosses it any more.
        self.dead = upstream is None
        #: Set while replies are lost: requests still reach Redis.
        self.mute = False

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


class BlackHoleProxy:
    """Forwards 127.0.0.1:<port> to `upstream_port` until `black_hole()` is called."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._holes = False
        self._mute = False
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self._thread.start()

    def url(self, db: int | str = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def black_hole(self) -> None:
        """From now on nothing is answered, on old connections and on new ones."""
        with self._lock:
            self._holes = True
            for pair in self._pairs:
                pair.dead = True

    def lose_replies(self) -> None:
        """From now on requests reach Redis, which acts on them, but no reply comes back:
        the client cannot tell whether what it asked was done."""
        with self._lock:
            self._mute = True
            for pair in self._pairs:
                pair.mute = True

    def forward(self) -> None:
        """New connections reach Redis again (those the black hole caught stay dead)."""
        with self._lock:
            self._holes = False
            self._mute = False
            for pair in self._pairs:
                if pair.mute:
                    pair.dead = True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pairs, self._pairs = self._pairs, []
        self._listener.close()
        for pair in pairs:
            pair.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    client.close()
                    return
                holes = self._holes
            upstream = None if holes else socket.create_connection((HOST, self.upstream_port))
            pair = _Pair(client, upstream)
            pair.mute = self._mute
            with self._lock:
                self._pairs.append(pair)
            if upstream is None:
                # Accepted and never read: the client's bytes sit in the kernel's buffer.
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                if not pair.dead:
                    pair.close()  # a real hang-up goes through; a dead link hides it
                elif src is pair.client and pair.upstream is not None:
                    with contextlib.suppress(OSError):
                        pair.upstream.close()  # Redis' end only: the client hears nothing
                return
            if pair.dead or (pair.mute and src is pair.upstream):
                continue  # swallowed by the black hole
            try:
                dst.sendall(data)
            except OSError:
                pair.close()
                return
