"""`stepstream`: the command line client of the HTTP API (SPEC §10)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import click
import httpx

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


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
            try:
                error = response.json()["error"]
                detail = f"{error['message']}"
                if error.get("details"):
                    detail += "\n" + json.dumps(error["details"], indent=2)
            except (ValueError, KeyError, TypeError):
                detail = response.text
            raise click.ClickException(f"{response.status_code}: {detail}")
        return response.json()

    def events(self, run_id: str, after: str | None) -> Iterator[dict[str, Any]]:
        """Follow a run over SSE, reconnecting with the last id after a dropped stream."""
        last = after
        while True:
            params = {"after": last} if last else {}
            try:
                with self.http.stream(
                    "GET",
                    f"/api/runs/{run_id}/events",
                    params=params,
                    timeout=httpx.Timeout(30, read=60),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        self.call("GET", f"/api/runs/{run_id}/events", params=params)
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            event: dict[str, Any] = json.loads(line[5:])
                            last = event["id"]
                            yield event
                            if event["type"] == "run_finished":
                                return
            except httpx.TransportError as exc:
                click.echo(f"connection lost ({exc}); resuming after {last}", err=True)


def describe(event: dict[str, Any]) -> str:
    kind = str(event["type"])
    step = event.get("step", "")
    if kind == "step_progress":
        return f"{step}: {float(event['progress']):.0%} {event.get('message', '')}"
    if kind == "step_finished":
        line = f"{step}: {event['status']} in {event.get('duration_ms') or 0:.0f} ms"
        return line + (f" — {event['message']}" if event.get("message") else "")
    if kind == "run_finished":
        return f"run {event['status']}" + (f": {event['message']}" if event["message"] else "")
    if kind in ("step_started", "step_log", "step_retrying"):
        return f"{step}: {kind.removeprefix('step_')} {event.get('message', '')}".rstrip()
    return kind.replace("_", " ")


def follow(api: Api, run_id: str, after: str | None, as_json: bool) -> int:
    status = "failed"
    try:
        for event in api.events(run_id, after):
            click.echo(json.dumps(event) if as_json else describe(event))
            if event["type"] == "run_finished":
                status = event["status"]
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK if status == "succeeded" else EXIT_FAILED


@click.group()
@click.option(
    "--url",
    envvar="STEPSTREAM_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Base URL of the stepstream web server.",
)
@click.option(
    "--token",
    envvar="STEPSTREAM_API_TOKEN",
    default=None,
    help="Bearer token, when the server requires one.",
)
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None) -> None:
    """Run stepstream scenarios and follow them live."""
    ctx.obj = Api(url, token)


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
@click.pass_obj
def run_command(
    api: Api,
    scenario: str,
    raw_input: str | None,
    pairs: tuple[str, ...],
    follow_run: bool,
    as_json: bool,
) -> None:
    """Start a run of SCENARIO; with --follow, watch it to the end."""
    body = {"scenario_id": scenario, "input": parse_input(raw_input, pairs)}
    summary = api.call("POST", "/api/runs", json=body)
    if not follow_run:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"run {summary['run_id']} queued", err=True)
    sys.exit(follow(api, summary["run_id"], None, as_json))


@main.command()
@click.argument("run_id")
@click.option("--after", default=None, help="Start after this event id.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
@click.pass_obj
def tail(api: Api, run_id: str, after: str | None, as_json: bool) -> None:
    """Follow RUN_ID's events (from the beginning unless --after) until it ends."""
    sys.exit(follow(api, run_id, after, as_json))


@main.command()
@click.option("--status", default=None)
@click.option("--scenario", "scenario_id", default=None)
@click.option("--limit", default=20, show_default=True)
@click.pass_obj
def runs(api: Api, status: str | None, scenario_id: str | None, limit: int) -> None:
    """List runs, newest first."""
    params = {k: v for k, v in (("status", status), ("scenario_id", scenario_id)) if v}
    page = api.call("GET", "/api/runs", params={**params, "limit": limit})
    for r in page["runs"]:
        click.echo(f"{r['run_id']}  {r['status']:<9}  {r['scenario_id']}  {r['created_at']}")


@main.command()
@click.argument("run_id")
@click.pass_obj
def show(api: Api, run_id: str) -> None:
    """Print RUN_ID's snapshot as JSON."""
    click.echo(json.dumps(api.call("GET", f"/api/runs/{run_id}"), indent=2))


@main.command()
@click.pass_obj
def scenarios(api: Api) -> None:
    """List the scenarios the server offers."""
    for s in api.call("GET", "/api/scenarios"):
        click.echo(f"{s['scenario_id']:<28} {s['step_count']:>3} steps  {s['name']}")


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
