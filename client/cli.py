"""`stepstream`: the command line client of the HTTP API (SPEC §10)."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import click
import httpx
from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape
from rich.table import Table

from tasks.statuses import EventType, RunStatus
from tasks.strict_json import sanitized

from .live_view import RunView
from .sse import SSEDecoder, SSEMessage

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
#: Answers after which following a run is worth trying again (the server or its Redis
#: is restarting); any other error status ends the command.
RETRYABLE = frozenset({502, 503, 504})
#: The longest pause between two reconnection attempts.
MAX_PAUSE_S = 5.0


def read_event(message: SSEMessage) -> dict[str, Any] | str:
    """The event a message carries, or why it cannot be read.

    Values strict JSON cannot carry (NaN, a lone surrogate, which no terminal can print)
    are replaced as the API replaces them, so that a sloppy event is still shown.
    """
    try:
        event = sanitized(json.loads(message.data))
    except (ValueError, RecursionError) as exc:
        return f"not JSON ({exc})"
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return "not an event object"
    return event


# -- the API -------------------------------------------------------------------------------


class Api:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {self.http.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise click.ClickException(error_text(response))
        return sanitized(response.json())

    def events(
        self, run_id: str, after: str | None, run_token: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Follow a run over SSE to its `run_finished`. A dropped or cut-short stream,
        or a server that is restarting, is retried with the last id seen, so every
        event is yielded once.

        With `run_token` (the run's `stream_token`) the stream is read with it rather
        than with the API token, which is then only used again if the run token is
        refused (it expired while the run went on)."""
        last = after
        base_pause = pause = 0.2
        while True:
            params = {"after": last} if last else {}
            headers = {"Accept": "text/event-stream"}
            if run_token:
                headers["Authorization"] = f"Bearer {run_token}"
            try:
                with self.http.stream(
                    "GET",
                    f"/api/runs/{run_id}/events",
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(30, read=60),
                ) as response:
                    if response.status_code == 204:
                        return  # the run has finished and nothing follows `last`
                    if response.status_code == 401 and run_token:
                        response.read()
                        run_token = None  # expired: the API token (if any) from now on
                        continue
                    if response.status_code >= 400:
                        response.read()
                        if response.status_code not in RETRYABLE:
                            raise click.ClickException(error_text(response))
                        problem = error_text(response)
                    else:
                        decoder = SSEDecoder()
                        for message in decoder.messages(response.iter_bytes()):
                            event = read_event(message)
                            last = message.id or last
                            if isinstance(event, str):
                                # One bad event must not stop the others: say so, go on.
                                click.echo(f"skipped event {message.id or '?'}: {event}", err=True)
                                if message.event == EventType.RUN_FINISHED:
                                    return
                                continue
                            pause = base_pause
                            yield event
                            if event["type"] == EventType.RUN_FINISHED:
                                return
                        if decoder.retry_ms is not None:  # the server's own wish
                            base_pause = min(decoder.retry_ms / 1000, MAX_PAUSE_S)
                            pause = max(pause, base_pause)
                        problem = "the stream ended early"
            except httpx.TransportError as exc:
                problem = f"connection lost ({exc})"
            where = f"after {last}" if last else "from the start"
            click.echo(f"{problem}; reconnecting {where} in {pause:g} s", err=True)
            time.sleep(pause)  # back off before reconnecting
            pause = min(pause * 2, MAX_PAUSE_S)


def error_text(response: httpx.Response) -> str:
    try:
        error = sanitized(response.json())["error"]
        detail = str(error["message"])
        if error.get("details"):
            detail += "\n" + json.dumps(error["details"], indent=2)
    except (ValueError, KeyError, TypeError, RecursionError):
        detail = sanitized(response.text)
    return f"{response.status_code}: {detail}"


def follow(
    api: Api,
    run_id: str,
    after: str | None,
    as_json: bool,
    cancel: bool = False,
    run_token: str | None = None,
) -> int:
    """Print a run's events until it ends; returns the exit code (SPEC §10)."""
    status = None
    try:
        if as_json:
            for event in api.events(run_id, after, run_token):
                click.echo(json.dumps(event))
                if event["type"] == EventType.RUN_FINISHED:
                    status = event.get("status")
        else:
            with RunView(Console()) as view:
                for event in api.events(run_id, after, run_token):
                    if event["type"] == EventType.RUN_FINISHED:
                        status = event.get("status")
                    try:
                        view.show(event)
                    except (KeyError, TypeError, ValueError, MarkupError) as exc:
                        # An event without the fields its type promises: report, go on.
                        click.echo(
                            f"could not show event {event.get('id', '?')}: {exc!r}", err=True
                        )
    except KeyboardInterrupt:
        if not cancel:
            click.echo(
                f"interrupted: run {run_id} goes on (stepstream tail {run_id} to follow it)",
                err=True,
            )
            return EXIT_INTERRUPTED
        try:
            api.call("POST", f"/api/runs/{run_id}/cancel")
            click.echo(f"interrupted: run {run_id} is being cancelled", err=True)
        except click.ClickException as exc:
            click.echo(f"interrupted; could not cancel run {run_id}: {exc.message}", err=True)
        return EXIT_INTERRUPTED
    if status is None:
        # Followed from its last event: the run's own record says how it ended.
        status = api.call("GET", f"/api/runs/{run_id}").get("status")
    return EXIT_OK if status == RunStatus.SUCCEEDED else EXIT_FAILED


@dataclass
class Target:
    """The server to talk to: set by the group's options, then by the command's."""

    url: str
    token: str | None


URL_HELP = "Base URL of the stepstream web server."
TOKEN_HELP = "Bearer token, when the server requires one."

P = ParamSpec("P")
R = TypeVar("R")


def _override(field: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        target = ctx.find_object(Target)
        if value is not None and target is not None:
            setattr(target, field, value)

    return callback


def with_api(command: Callable[Concatenate[Api, P], R]) -> Callable[P, R]:
    """Give the command an Api, and accept `--url` and `--token` after its name too
    (`stepstream run x --url ...`): given there, they win over those before it."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        target = click.get_current_context().find_object(Target)
        assert target is not None  # set by main()
        return command(Api(target.url, target.token), *args, **kwargs)

    for name, help_text in (("token", TOKEN_HELP), ("url", URL_HELP)):
        option = click.option(
            f"--{name}", default=None, expose_value=False, callback=_override(name), help=help_text
        )
        wrapper = option(wrapper)
    return wrapper


@click.group()
@click.option(
    "--url",
    envvar="STEPSTREAM_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help=URL_HELP,
)
@click.option("--token", envvar="STEPSTREAM_API_TOKEN", default=None, help=TOKEN_HELP)
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None) -> None:
    """Run stepstream scenarios and follow them live."""
    ctx.obj = Target(url, token)


def parse_input(raw: str | None, pairs: tuple[str, ...]) -> dict[str, Any]:
    data: Any = {}
    if raw:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
        if not isinstance(data, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--input")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="-i")
        try:
            data[key] = json.loads(value)
        except ValueError:
            data[key] = value  # a bare word is a string
    return dict(data)


@main.command(name="run")
@click.argument("scenario")
@click.option("--input", "raw_input", help="The run input as a JSON object.")
@click.option("-i", "pairs", multiple=True, help="One input field, key=value (repeatable).")
@click.option("--follow", "follow_run", is_flag=True, help="Follow the run until it ends.")
@click.option("--json", "as_json", is_flag=True, help="With --follow: events as JSON lines.")
@click.option(
    "--cancel-on-interrupt",
    is_flag=True,
    help="With --follow: cancel the run on Ctrl-C (by default it goes on).",
)
@with_api
def run_command(
    api: Api,
    scenario: str,
    raw_input: str | None,
    pairs: tuple[str, ...],
    follow_run: bool,
    as_json: bool,
    cancel_on_interrupt: bool,
) -> None:
    """Start a run of SCENARIO; with --follow, watch it to the end.

    With --follow, exits 0 when the run succeeded, 1 when it failed or was cancelled,
    130 when interrupted.
    """
    body = {"scenario_id": scenario, "input": parse_input(raw_input, pairs)}
    summary = api.call("POST", "/api/runs", json=body)
    if not follow_run:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"run {summary['run_id']} queued", err=True)
    # Watching needs no more than the run's own token, when the server hands one out.
    run_token = summary.get("stream_token")
    run_token = run_token if isinstance(run_token, str) else None
    code = follow(api, summary["run_id"], None, as_json, cancel_on_interrupt, run_token)
    sys.exit(code)


@main.command()
@click.argument("run_id")
@click.option("--after", default=None, help="Start after this event id.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
@with_api
def tail(api: Api, run_id: str, after: str | None, as_json: bool) -> None:
    """Follow RUN_ID's events (from the beginning unless --after) until it ends."""
    sys.exit(follow(api, run_id, after, as_json))


@main.command()
@click.option("--status", default=None)
@click.option("--scenario", "scenario_id", default=None)
@click.option("--limit", default=20, show_default=True)
@with_api
def runs(api: Api, status: str | None, scenario_id: str | None, limit: int) -> None:
    """List runs, newest first."""
    params = {k: v for k, v in (("status", status), ("scenario_id", scenario_id)) if v}
    page = api.call("GET", "/api/runs", params={**params, "limit": limit})
    table = Table(box=None)
    # Ids are for copying: never cut them short, whatever the terminal's width.
    table.add_column("run", no_wrap=True, min_width=36)
    table.add_column("status", no_wrap=True)
    table.add_column("scenario", overflow="fold")
    table.add_column("created", overflow="fold")
    for r in page["runs"]:
        table.add_row(*(plain(r[k]) for k in ("run_id", "status", "scenario_id", "created_at")))
    Console().print(table)


@main.command()
@click.argument("run_id")
@with_api
def show(api: Api, run_id: str) -> None:
    """Print RUN_ID's snapshot as JSON."""
    click.echo(json.dumps(api.call("GET", f"/api/runs/{run_id}"), indent=2))


@main.command()
@click.argument("run_id")
@with_api
def cancel(api: Api, run_id: str) -> None:
    """Cancel RUN_ID: no new step starts, running steps are asked to stop."""
    api.call("POST", f"/api/runs/{run_id}/cancel")
    click.echo(f"run {run_id} is being cancelled")


@main.command()
@with_api
def scenarios(api: Api) -> None:
    """List the scenarios the server offers."""
    table = Table(box=None)
    table.add_column("scenario", no_wrap=True)
    table.add_column("steps", justify="right")
    table.add_column("name", overflow="fold")
    for s in api.call("GET", "/api/scenarios"):
        table.add_row(plain(s["scenario_id"]), plain(s["step_count"]), plain(s["name"]))
    Console().print(table)


@main.command()
@click.option("--refresh", is_flag=True, help="ask the server to list its MCP servers again first")
@with_api
def tools(api: Api, refresh: bool) -> None:
    """List the tools steps can call: Python tools and those of MCP servers."""
    if refresh:
        api.call("POST", "/api/tools/refresh")
        click.echo("asked the server to list its MCP servers again; listed below is what it knew")
    table = Table(box=None)
    table.add_column("tool", no_wrap=True)
    table.add_column("source")
    table.add_column("description", overflow="fold")
    for t in api.call("GET", "/api/tools"):
        source = plain(t.get("source", "python"))
        if not t.get("available", True):
            source = f"[red]{source}: unavailable[/] ({plain(t.get('error', ''))})"
        table.add_row(plain(t["name"]), source, plain(t["description"]))
    Console().print(table)


@main.command()
@with_api
def workers(api: Api) -> None:
    """List the workers the registry knows, alive or not."""
    table = Table(box=None)
    table.add_column("worker", no_wrap=True)
    for title in ("status", "last heartbeat", "active runs", "processed"):
        table.add_column(title, overflow="fold")
    colours = {"ok": "green", "stale": "red", "unknown": "yellow"}
    for w in api.call("GET", "/api/workers"):
        table.add_row(
            plain(w["name"]),
            f"[{colours.get(w['status'], 'white')}]{plain(w['status'])}[/]",
            plain(w["last_heartbeat"] or "never"),
            plain(w["active_runs"]),
            plain(w["processed"]),
        )
    Console().print(table)


def plain(value: object) -> str:
    """Data from the server as it is: `[bold]` in a name is text, not Rich markup."""
    return escape(str(value))


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
