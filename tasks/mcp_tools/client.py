"""One MCP session per server per process, used from synchronous code.

The SDK is asynchronous and a Celery pool process is not, so each process runs one
event loop in a daemon thread and every session lives there. A session is opened on
first use and kept: a stdio server is started once per worker process, not once per
step. A session that fails (the server exited, the connection broke) is dropped and the
next call opens a new one.

Each session is held open by a task of its own, because the SDK's sessions must be
closed by the task that opened them; calls come from other tasks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import httpx2  # the SDK's HTTP client
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, CallToolResult, LoggingMessageNotificationParams
from mcp.types import Tool as McpToolInfo

from .config import HttpServer, ServerConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long opening a session (starting a stdio server, the handshake) may take.
CONNECT_TIMEOUT_S = 20.0
#: How long listing a server's tools may take.
LIST_TIMEOUT_S = 20.0
#: How long a session may take to close before it is cut short. Longer than the SDK's
#: own bounded shutdown of a stdio server (end of input, SIGTERM, then SIGKILL).
CLOSE_TIMEOUT_S = 10.0
#: How often a waiting call checks whether it should stop.
POLL_S = 0.1

ProgressSink = Callable[[float, float | None, str | None], None]
LogSink = Callable[[str, Any], None]


class McpUnavailable(Exception):
    """The server could not be reached, or broke off; the message says which and why."""


class McpCallFailed(Exception):
    """The server answered a call with a protocol error (the session is still good)."""


class CallStopped(Exception):
    """`should_stop` asked a call to stop; the call was cancelled on the server's side."""


@dataclass
class _Session:
    client: Client
    #: Set to close the session; its holder task then leaves the SDK's context.
    close: asyncio.Event
    holder: asyncio.Task[None]
    #: Where the log messages of the call in progress go (one call at a time per step).
    log_sink: list[LogSink | None] = field(default_factory=lambda: [None])

    @property
    def alive(self) -> bool:
        return not self.holder.done()


class McpClients:
    """Sessions to the configured servers, for this process (re-created after a fork).

    `errlog` receives the stderr of stdio servers (default: this process's real stderr,
    which is the worker's log).
    """

    def __init__(self, servers: dict[str, ServerConfig], errlog: TextIO | None = None) -> None:
        self.servers = servers
        self.errlog = errlog
        self._lock = threading.Lock()
        self._pid = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[str, _Session] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        #: Every session's holder, open or closing: close() waits for them all.
        self._holders: set[asyncio.Task[None]] = set()

    # -- the loop thread -------------------------------------------------------------

    def _run(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> T:
        """Run `coro` on the loop and wait for it: TimeoutError after `timeout`,
        CallStopped once `should_stop()` is true. Whatever ends the wait (these, or a
        soft time limit raised in this thread) cancels `coro` on the loop too."""
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    return future.result(POLL_S)
                except concurrent.futures.TimeoutError:
                    if should_stop is not None and should_stop():
                        raise CallStopped() from None
                    if deadline is not None and time.monotonic() > deadline:
                        raise
        except BaseException:
            future.cancel()
            raise

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._pid != os.getpid() or self._loop is None:
                # A forked child inherits neither the thread nor usable sessions.
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="stepstream-mcp", daemon=True
                ).start()
                self._loop, self._pid = loop, os.getpid()
                self._sessions, self._opening, self._holders = {}, {}, set()
            return self._loop

    # -- sessions ----------------------------------------------------------------------

    async def _session(self, server: str) -> tuple[_Session, bool]:
        """The server's session, and whether it was opened just now."""
        session = self._sessions.get(server)
        if session is not None and session.alive:
            return session, False
        lock = self._opening.setdefault(server, asyncio.Lock())
        async with lock:
            session = self._sessions.get(server)
            if session is not None and session.alive:
                return session, False
            session = await self._open(server)
            self._sessions[server] = session
            return session, True

    async def _open(self, server: str) -> _Session:
        config = self.servers[server]
        opened: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        close = asyncio.Event()
        sinks: list[LogSink | None] = [None]

        async def on_log(params: LoggingMessageNotificationParams) -> None:
            sink = sinks[0]
            if sink is not None:
                sink(params.level, params.data)

        client = Client(self._target(config), logging_callback=on_log, log_level="debug")

        async def hold() -> None:
            try:
                async with client:
                    opened.set_result(client)
                    await close.wait()
            except asyncio.CancelledError:
                if not opened.done():
                    opened.cancel()
            except BaseException as exc:
                if not opened.done():
                    opened.set_exception(exc)
                else:
                    log.warning("MCP server %r: session ended: %s", server, _reason(exc))

        holder = asyncio.create_task(hold(), name=f"mcp-session-{server}")
        self._holders.add(holder)
        holder.add_done_callback(self._holders.discard)
        try:
            await asyncio.wait_for(asyncio.shield(opened), CONNECT_TIMEOUT_S)
        except BaseException as exc:
            # Timed out, failed, or the caller stopped waiting: whatever the holder may
            # still open is closed, so no server is left running unowned.
            self._shut(close, holder)
            if isinstance(exc, TimeoutError):
                raise McpUnavailable(
                    f"MCP server {server!r} ({config.describe()}) did not answer within "
                    f"{CONNECT_TIMEOUT_S:g} s"
                ) from None
            if isinstance(exc, Exception):
                raise McpUnavailable(
                    f"MCP server {server!r} ({config.describe()}) is unreachable: {_reason(exc)}"
                ) from None
            raise
        log.info("MCP server %r: session opened (%s)", server, config.describe())
        return _Session(client, close, holder, sinks)

    def _target(self, config: ServerConfig) -> Any:
        """What `Client` connects to: a URL, or a transport (headers, a command)."""
        if isinstance(config, HttpServer):
            return _http_with_headers(config) if config.headers else config.url
        params = StdioServerParameters(
            command=config.command, args=config.args, env=config.env or None, cwd=config.cwd
        )
        return stdio_client(params, errlog=self.errlog or _real_stderr())

    @staticmethod
    def _shut(close: asyncio.Event, holder: asyncio.Task[None]) -> None:
        # Left to close in order (a stdio server is told to exit), cut short if it hangs.
        close.set()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, holder.cancel)

    def _drop(self, server: str, session: _Session) -> None:
        if self._sessions.get(server) is session:
            del self._sessions[server]
        self._shut(session.close, session.holder)

    # -- what callers use --------------------------------------------------------------

    def list_tools(self, server: str) -> list[McpToolInfo]:
        """The server's tools (every page); raises McpUnavailable."""
        return self._run(self._list_tools(server))

    async def _list_tools(self, server: str) -> list[McpToolInfo]:
        session = await self._checked_session(server)
        tools: list[McpToolInfo] = []
        cursor: str | None = None
        try:
            while True:
                page = await asyncio.wait_for(
                    session.client.list_tools(cursor=cursor, cache_mode="refresh"),
                    LIST_TIMEOUT_S,
                )
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return tools
        except Exception as exc:
            self._drop(server, session)
            raise McpUnavailable(
                f"MCP server {server!r} could not list its tools: {_reason(exc)}"
            ) from None

    def call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        on_progress: ProgressSink,
        on_log: LogSink,
        should_stop: Callable[[], bool],
    ) -> CallToolResult:
        """Call `tool`; raises McpUnavailable, McpCallFailed, or CallStopped once
        `should_stop()` is true.

        The wait can also be interrupted from outside (a Celery soft time limit): the
        call is then cancelled on the loop as well.
        """
        call = self._call_tool(server, tool, arguments, on_progress, on_log)
        return self._run(call, should_stop=should_stop)

    async def _call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        on_progress: ProgressSink,
        on_log: LogSink,
    ) -> CallToolResult:
        async def progress(progress: float, total: float | None, message: str | None) -> None:
            on_progress(progress, total, message)

        session = await self._checked_session(server)
        session.log_sink[0] = on_log
        call = asyncio.ensure_future(
            session.client.call_tool(tool, arguments, progress_callback=progress)
        )
        try:
            # The call ends first, or the session does (the server exited mid-call).
            await asyncio.wait({call, session.holder}, return_when=asyncio.FIRST_COMPLETED)
            if not call.done():
                call.cancel()
                raise McpUnavailable(
                    f"MCP server {server!r} failed during the call to {tool!r}: "
                    "the server went away"
                )
            return call.result()
        except asyncio.CancelledError:
            call.cancel()
            raise
        except Exception as exc:
            if isinstance(exc, MCPError) and not _closed(exc):
                # The server refused this call; the session itself is fine.
                raise McpCallFailed(f"{tool}: {exc.message}") from None
            # The session is broken. The call is never sent again: the server may have
            # acted on it before it went away.
            self._drop(server, session)
            if isinstance(exc, McpUnavailable):
                raise
            raise McpUnavailable(
                f"MCP server {server!r} failed during the call to {tool!r}: {_reason(exc)}"
            ) from None
        finally:
            session.log_sink[0] = None

    async def _checked_session(self, server: str) -> _Session:
        """The server's session, reopened first if its connection has closed since its
        last use (a stdio server that exited between steps): a call is never sent
        twice, so a dead session must be noticed before, not after."""
        session, fresh = await self._session(server)
        if fresh or not _connection_closed(session.client):
            return session
        self._drop(server, session)
        session, _ = await self._session(server)
        return session

    def close(self) -> None:
        """Close every session and wait until each is closed (stdio servers exit)."""
        if self._loop is None or self._pid != os.getpid():
            return

        async def close_all() -> None:
            for server, session in list(self._sessions.items()):
                self._drop(server, session)
            if self._holders:
                await asyncio.wait(set(self._holders), timeout=CLOSE_TIMEOUT_S + 1)

        try:
            self._run(close_all(), timeout=CLOSE_TIMEOUT_S + 5)
        except Exception as exc:
            log.warning("MCP sessions did not all close: %s", _reason(exc))


@asynccontextmanager
async def _http_with_headers(config: HttpServer) -> AsyncIterator[Any]:
    # The SDK's default client, plus the headers: the same generous read timeout (a
    # server may stream a long call), and closed with the session.
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=config.headers, timeout=timeout) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams


def _real_stderr() -> TextIO:
    # Not sys.stderr: a Celery worker replaces it with a logging proxy that has no file
    # descriptor, and a child process needs one.
    return sys.__stderr__ or open(os.devnull, "w")


def _connection_closed(client: Client) -> bool:
    """Whether the SDK has seen the session's connection end (the server's output
    closed). The SDK offers no public way to ask, so this reads its dispatcher's flag;
    should that change, sessions are simply assumed open, as before."""
    dispatcher = getattr(getattr(client, "_session", None), "_dispatcher", None)
    return getattr(dispatcher, "_closed", False) is True


def _closed(exc: BaseException) -> bool:
    """Whether `exc` says the connection to the server is closed."""
    return isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED


def _reason(exc: BaseException) -> str:
    """A readable cause, looking inside the exception groups anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
