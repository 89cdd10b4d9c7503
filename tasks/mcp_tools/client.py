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
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, LoggingMessageNotificationParams
from mcp.types import Tool as McpToolInfo

from .config import HttpServer, ServerConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long opening a session (starting a stdio server, the handshake) may take.
CONNECT_TIMEOUT_S = 20.0
#: How long listing a server's tools may take.
LIST_TIMEOUT_S = 20.0
#: How long a session may take to close before it is abandoned.
CLOSE_TIMEOUT_S = 5.0
#: How often a waiting call checks whether it should stop.
POLL_S = 0.1

ProgressSink = Callable[[float, float | None, str | None], None]
LogSink = Callable[[str, Any], None]


class McpUnavailable(Exception):
    """The server could not be reached, or broke off; the message says which and why."""


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
    """Sessions to the configured servers, for this process (re-created after a fork)."""

    def __init__(self, servers: dict[str, ServerConfig]) -> None:
        self.servers = servers
        self._lock = threading.Lock()
        self._pid = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[str, _Session] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    # -- the loop thread -------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        except BaseException:
            # A soft time limit (or anything else) interrupting the wait stops the call too.
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
                self._sessions, self._opening = {}, {}
            return self._loop

    # -- sessions ----------------------------------------------------------------------

    async def _session(self, server: str) -> _Session:
        session = self._sessions.get(server)
        if session is not None and session.alive:
            return session
        lock = self._opening.setdefault(server, asyncio.Lock())
        async with lock:
            session = self._sessions.get(server)
            if session is not None and session.alive:
                return session
            session = await self._open(server)
            self._sessions[server] = session
            return session

    async def _open(self, server: str) -> _Session:
        config = self.servers[server]
        opened: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        close = asyncio.Event()
        sinks: list[LogSink | None] = [None]

        async def on_log(params: LoggingMessageNotificationParams) -> None:
            sink = sinks[0]
            if sink is not None:
                sink(params.level, params.data)

        client = Client(_target(config), logging_callback=on_log, log_level="debug")

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
        try:
            await asyncio.wait_for(asyncio.shield(opened), CONNECT_TIMEOUT_S)
        except TimeoutError:
            close.set()
            holder.cancel()
            raise McpUnavailable(
                f"MCP server {server!r} ({config.describe()}) did not answer within "
                f"{CONNECT_TIMEOUT_S:g} s"
            ) from None
        except Exception as exc:
            raise McpUnavailable(
                f"MCP server {server!r} ({config.describe()}) is unreachable: {_reason(exc)}"
            ) from None
        log.info("MCP server %r: session opened (%s)", server, config.describe())
        return _Session(client, close, holder, sinks)

    async def _drop(self, server: str, session: _Session) -> None:
        if self._sessions.get(server) is session:
            del self._sessions[server]
        # Left to close in order (a stdio server is told to exit), and cut short if not.
        session.close.set()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, session.holder.cancel)

    # -- what callers use --------------------------------------------------------------

    def list_tools(self, server: str) -> list[McpToolInfo]:
        """The server's tools (every page); raises McpUnavailable."""
        return self._run(self._list_tools(server))

    async def _list_tools(self, server: str) -> list[McpToolInfo]:
        session = await self._session(server)
        tools: list[McpToolInfo] = []
        cursor: str | None = None
        try:
            while True:
                page = await asyncio.wait_for(
                    session.client.list_tools(cursor=cursor, cache_mode="refresh"), LIST_TIMEOUT_S
                )
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return tools
        except Exception as exc:
            await self._drop(server, session)
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
        """Call `tool`; raises McpUnavailable, or CallStopped once `should_stop()` is true.

        The wait can also be interrupted from outside (a Celery soft time limit): the
        call is then cancelled on the loop as well.
        """
        future = asyncio.run_coroutine_threadsafe(
            self._call_tool(server, tool, arguments, on_progress, on_log), self._ensure_loop()
        )
        try:
            while True:
                try:
                    return future.result(POLL_S)
                except concurrent.futures.TimeoutError:
                    if should_stop():
                        future.cancel()
                        raise CallStopped() from None
        except BaseException:
            future.cancel()
            raise

    async def _call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        on_progress: ProgressSink,
        on_log: LogSink,
    ) -> CallToolResult:
        session = await self._session(server)

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            on_progress(progress, total, message)

        session.log_sink[0] = on_log
        call = asyncio.ensure_future(
            session.client.call_tool(tool, arguments, progress_callback=progress)
        )
        try:
            # The call ends first, or the session does (the server exited mid-call).
            await asyncio.wait({call, session.holder}, return_when=asyncio.FIRST_COMPLETED)
            if call.done():
                return call.result()
            call.cancel()
            raise McpUnavailable(
                f"MCP server {server!r} failed during the call to {tool!r}: the server went away"
            )
        except asyncio.CancelledError:
            call.cancel()
            raise
        except McpUnavailable:
            await self._drop(server, session)
            raise
        except Exception as exc:
            await self._drop(server, session)
            raise McpUnavailable(
                f"MCP server {server!r} failed during the call to {tool!r}: {_reason(exc)}"
            ) from None
        finally:
            session.log_sink[0] = None

    def close(self) -> None:
        """Close every session (stdio servers exit); for tests and orderly shutdown."""
        if self._loop is None or self._pid != os.getpid():
            return

        async def close_all() -> None:
            for server, session in list(self._sessions.items()):
                await self._drop(server, session)
                await asyncio.wait({session.holder}, timeout=CLOSE_TIMEOUT_S + 1)

        self._run(close_all(), timeout=2 * CLOSE_TIMEOUT_S)


def _target(config: ServerConfig) -> Any:
    """What `Client` connects to: a URL, a transport with headers, or a command."""
    if isinstance(config, HttpServer):
        return _http_with_headers(config) if config.headers else config.url
    return StdioServerParameters(
        command=config.command, args=config.args, env=config.env or None, cwd=config.cwd
    )


def _http_with_headers(config: HttpServer) -> Any:
    import httpx2  # the SDK's HTTP client
    from mcp.client.streamable_http import streamable_http_client

    return streamable_http_client(
        config.url, http_client=httpx2.AsyncClient(headers=config.headers)
    )


def _reason(exc: BaseException) -> str:
    """A readable cause, looking inside the exception groups anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
