"""`stepstream`: the command line client of the HTTP API (SPEC §10), built on the client
library (`client.api`, `client.follow`)."""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tasks.statuses import RunStatus

from .errors import ClientError
from .live_view import RunView
from .outcome import ending
from .tables import Col, ago, console_for, fitted, short_time, table_width

if TYPE_CHECKING:
    from .api import Api

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
#: How much of a run id a narrow table shows: enough to tell runs apart.
SHORT_ID = 8


def follow(
    api: Api,
    run_id: str,
    after: str | None,
    as_json: bool,
    cancel: bool = False,
    run_token: str | None = None,
) -> int:
    """Print a run's events until it ends; returns the exit code (SPEC §10).

    A dropped or cut-short stream, or a server that is restarting, is followed on from
    the last event seen, for as long as it takes (Ctrl-C stops it)."""
    events = api.follow(
        run_id,
        after=after,
        run_token=run_token,
        retry_for=None,
        on_retry=lambda text: click.echo(text, err=True),
        # One bad event must not stop the others: say so, go on.
        on_skip=lambda event_id, why: click.echo(f"skipped event {event_id}: {why}", err=True),
        on_trimmed=lambda count: click.echo(
            f"the run's first {count} events are no longer kept (trimmed); from what is", err=True
        ),
    )
    try:
        if as_json:
            for event in events:
                click.echo(json.dumps(event))
        else:
            with RunView(Console()) as view:
                for event in events:
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
            api.cancel(run_id)
            click.echo(f"interrupted: run {run_id} is being cancelled", err=True)
        except ClientError as exc:
            click.echo(f"interrupted; could not cancel run {run_id}: {exc}", err=True)
        return EXIT_INTERRUPTED
    # Followed from its last event (or an unreadable run_finished): the run's own
    # record says how it ended.
    status = events.final.get("status") if events.final else api.run(run_id).get("status")
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
        # Imported here: `stepstream --help` needs no HTTP client (httpx is most of it).
        from .api import Api

        target = click.get_current_context().find_object(Target)
        assert target is not None  # set by main()
        with Api(target.url, target.token) as api:
            try:
                return command(api, *args, **kwargs)
            except ClientError as exc:
                raise click.ClickException(str(exc)) from None

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
    # A terminal that is not UTF-8 (LANG=C on an old system, PYTHONIOENCODING=latin-1)
    # gets '?' for what it cannot show, a table's '…' included, instead of a traceback.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")


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


def read_inputs(source: Iterable[str]) -> list[tuple[int, dict[str, Any]]]:
    """The run inputs of a JSON Lines file, one JSON object a line (blank lines are
    skipped); every line is read before anything is sent, and a bad one is an error
    naming its line number."""
    name = getattr(source, "name", "-")
    inputs: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise click.BadParameter(
                f"{name} line {number}: not JSON: {exc}", param_hint="--inputs"
            ) from None
        if not isinstance(data, dict):
            raise click.BadParameter(
                f"{name} line {number}: must be a JSON object, not {type(data).__name__}",
                param_hint="--inputs",
            )
        inputs.append((number, data))
    if not inputs:
        raise click.BadParameter(f"{name} holds no input", param_hint="--inputs")
    return inputs


def submit_inputs(api: Api, scenario: str, source: Iterable[str]) -> None:
    """Start one run of `scenario` per line of `source`, in batches of BATCH_MAX
    (`POST /api/runs/batch`); print each run id as its batch is accepted, then a summary
    on stderr. An entry the server refuses is reported by its line number."""
    from .api import BATCH_MAX
    from .errors import ApiError

    inputs = read_inputs(source)
    started = 0
    for first in range(0, len(inputs), BATCH_MAX):
        chunk = inputs[first : first + BATCH_MAX]
        try:
            runs = api.submit_batch([(scenario, data) for _, data in chunk])
        except ApiError as exc:
            by_line = []
            for detail in exc.details if isinstance(exc.details, list) else []:
                index = detail.get("index") if isinstance(detail, dict) else None
                if isinstance(index, int) and 0 <= index < len(chunk):
                    where = f"line {chunk[index][0]}: {detail.get('path', '$')}"
                    by_line.append(f"  {where}: {detail.get('message', '')}")
            # Errors named by line stand for the server's details, index by index.
            head = f"{exc.message} ({exc.status} {exc.code})" if by_line else str(exc)
            lines = [head, *by_line]
            if started:
                lines.append(f"{started} runs were started before this batch (ids above)")
            raise click.ClickException("\n".join(lines)) from None
        for run in runs:
            click.echo(run["run_id"])
        started += len(runs)
    requests = (len(inputs) + BATCH_MAX - 1) // BATCH_MAX
    many = "request" if requests == 1 else "requests"
    click.echo(f"started {started} runs of {scenario} ({requests} {many})", err=True)


@main.command(name="run")
@click.argument("scenario")
@click.option("--input", "raw_input", help="The run input as a JSON object.")
@click.option("-i", "pairs", multiple=True, help="One input field, key=value (repeatable).")
@click.option(
    "--inputs",
    "inputs_file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help=(
        "Start one run per line of this JSON Lines file (one input object a line; - for "
        "stdin), in batches of 1,000; prints the run ids, one a line."
    ),
)
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
    inputs_file: Any,
    follow_run: bool,
    as_json: bool,
    cancel_on_interrupt: bool,
) -> None:
    """Start a run of SCENARIO; with --follow, watch it to the end.

    With --follow, exits 0 when the run succeeded, 1 when it failed or was cancelled,
    130 when interrupted. With --inputs FILE.jsonl, starts one run per line instead.
    """
    if inputs_file is not None:
        if raw_input or pairs or follow_run:
            raise click.UsageError("--inputs cannot be combined with --input, -i or --follow")
        submit_inputs(api, scenario, inputs_file)
        return
    summary = api.submit(scenario, parse_input(raw_input, pairs))
    if not follow_run:
        click.echo(json.dumps(summary, indent=2))
        return
    # The page to watch it on, or to share: one click from the terminal.
    click.echo(f"run {summary['run_id']} queued: {api.url}/runs/{summary['run_id']}", err=True)
    # Watching needs no more than the run's own token, when the server hands one out.
    run_token = summary.get("stream_token")
    run_token = run_token if isinstance(run_token, str) else None
    code = follow(api, summary["run_id"], None, as_json, cancel_on_interrupt, run_token)
    if code != EXIT_INTERRUPTED:
        # In --json mode stdout is events only: how it ended goes to stderr.
        print_ending(api, summary, err=as_json)
    sys.exit(code)


def print_ending(api: Api, summary: dict[str, Any], *, err: bool) -> None:
    """How the run ended: its output or what failed, and its page (`client.outcome`)."""
    run_id = summary["run_id"]
    try:
        snapshot = api.run(run_id)
        definition = api.scenario(summary["scenario_id"]) if snapshot.get("steps") else None
    except ClientError as exc:
        click.echo(f"could not read how run {run_id} ended: {exc}", err=True)
        return
    pretty = (sys.stderr if err else sys.stdout).isatty()
    for line in ending(snapshot, definition, f"{api.url}/runs/{run_id}", pretty=pretty):
        click.echo(line, err=err)


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
    page = api.runs(status=status, scenario_id=scenario_id, limit=limit)
    rows = [
        [str(r["run_id"]), str(r["status"]), str(r["scenario_id"]), short_time(r["created_at"])]
        for r in page["runs"]
    ]
    columns = [
        Col("run"),
        Col("status"),
        Col("scenario", give=2, floor=12),
        Col("created (UTC)", give=1, floor=10),
    ]
    console = console_for(table_width(columns, rows))
    # Ids are for copying: whole when they fit, else their first 8 characters, which
    # tell runs apart; a scenario id is cut before them.
    cut = table_width(columns, rows) > console.width
    if cut:
        rows = [[row[0][:SHORT_ID], *row[1:]] for row in rows]
    console.print(fitted(columns, rows, console.width), crop=False)
    if cut and rows:
        click.echo(f"(run ids cut to {SHORT_ID} characters to fit the terminal)", err=True)


@main.command()
@click.argument("run_id")
@with_api
def show(api: Api, run_id: str) -> None:
    """Print RUN_ID's snapshot as JSON (and, on stderr, why it waits, if it does)."""
    snapshot = api.run(run_id)
    click.echo(json.dumps(snapshot, indent=2))
    if snapshot.get("queued_reason"):
        click.echo(f"run {run_id} is waiting: {snapshot['queued_reason']}", err=True)


@main.command()
@click.argument("run_id")
@with_api
def cancel(api: Api, run_id: str) -> None:
    """Cancel RUN_ID: no new step starts, running steps are asked to stop."""
    api.cancel(run_id)
    click.echo(f"run {run_id} is being cancelled")


@main.command()
@with_api
def scenarios(api: Api) -> None:
    """List the scenarios the server offers."""
    rows = [[str(s["scenario_id"]), str(s["step_count"]), str(s["name"])] for s in api.scenarios()]
    columns = [
        Col("scenario", give=1, floor=20),
        Col("steps", justify="right"),
        Col("name", give=2, floor=24),
    ]
    console = console_for(table_width(columns, rows))
    console.print(fitted(columns, rows, console.width), crop=False)
    problems = api.scenario_problems()
    if problems:
        files = "file" if len(problems) == 1 else "files"
        console.print(f"\n[yellow]{len(problems)} scenario {files} left out:[/]")
        for problem in problems:
            console.print(f"  {plain(problem['path'])}: {plain(problem['reason'])}")


@main.command()
@click.option("--refresh", is_flag=True, help="ask the server to list its MCP servers again first")
@with_api
def tools(api: Api, refresh: bool) -> None:
    """List the tools steps can call: Python tools and those of MCP servers, and those a
    worker must restart for (changed or installed on disk since it started)."""
    if refresh:
        api.refresh_tools()
        click.echo("asked the server to list its MCP servers again; listed below is what it knew")
    table = Table(box=None)
    table.add_column("tool", no_wrap=True)
    table.add_column("source")
    table.add_column("description", overflow="fold")
    restarts = []
    for t in api.tools():
        source = plain(t.get("source", "python"))
        if t.get("restart_needed"):
            restarts.append(t)
            source = f"[yellow]{source}: restart needed[/]"
        elif t.get("loaded") is False:
            source = f"{source}: [yellow]not loaded by a worker[/]"
        elif not t.get("available", True):
            source = f"[red]{source}: unavailable[/] ({plain(t.get('error', ''))})"
        table.add_row(plain(t["name"]), source, plain(t["description"]))
    console = Console()
    console.print(table)
    if restarts:
        console.print(f"\n[yellow]restart needed for {len(restarts)} tool(s):[/]")
        for t in restarts:
            console.print(f"  {plain(t['name'])}: {plain(t.get('reason') or '')}")


@main.command()
@with_api
def workers(api: Api) -> None:
    """List the workers the registry knows, alive or not, and what each is doing."""
    colours = {"ok": "green", "stale": "red", "unknown": "yellow"}
    rows: list[list[str | Text]] = []
    for w in api.workers():
        queues = w.get("queues")
        concurrency = w.get("concurrency")
        steps = [step_line(s) for s in w.get("current_steps") or [] if isinstance(s, dict)]
        rows.append(
            [
                str(w["name"]),
                Text(str(w["status"]), style=colours.get(w["status"], "white")),
                ", ".join(map(str, queues)) if isinstance(queues, list) else "?",
                f"{w.get('busy', 0)}/{concurrency if concurrency is not None else '?'}",
                ", ".join(steps) or "-",
                ago(w.get("seconds_since")) or short_time(w["last_heartbeat"] or "never"),
                str(w["processed"]),
            ]
        )
    columns = [
        Col("worker", give=2, floor=14),
        Col("status"),
        Col("queues", give=3, floor=8),
        Col("slots"),
        Col("current steps", give=4, floor=14),
        Col("heartbeat", give=1, floor=9),
        Col("processed", justify="right"),
    ]
    console = console_for(table_width(columns, [[str(c) for c in row] for row in rows]))
    console.print(fitted(columns, rows, console.width), crop=False)


def step_line(step: dict[str, Any]) -> str:
    """A step a worker runs: `<run id's first 8 characters> <step> #<attempt>`."""
    return f"{str(step.get('run_id'))[:SHORT_ID]} {step.get('step')} #{step.get('attempt')}"


def plain(value: object) -> str:
    """Data from the server as it is: `[bold]` in a name is text, not Rich markup."""
    return escape(str(value))


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
