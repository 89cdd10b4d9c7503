"""A run's events drawn on a terminal: one progress bar per running step, and a line for
every step that ends, retries or logs.

On a terminal the bars redraw in place; anywhere else (a pipe, a CI log) the bars are
left out and only the lines are printed, so the same code serves both.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from tasks.statuses import EventType, RunStatus, StepStatus

#: How each final step status is shown.
MARKS = {
    StepStatus.SUCCEEDED: "[green]✔[/]",
    StepStatus.FAILED: "[red]✘[/]",
    StepStatus.CANCELLED: "[yellow]■[/]",
    StepStatus.SKIPPED: "[dim]-[/]",
}
#: The colour of each final run status (any other: yellow).
COLOURS = {RunStatus.SUCCEEDED: "green", RunStatus.FAILED: "red"}


class RunView:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.fields[step]}[/]"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=True,
        )
        self.bars: dict[str, TaskID] = {}
        #: The status of the run once its `run_finished` arrived.
        self.status: str | None = None

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def show(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        step = escape(str(event.get("step", "")))
        if kind == EventType.STEP_STARTED:
            self._drop_bar(step)
            label = step if event["attempt"] == 1 else f"{step} (attempt {event['attempt']})"
            self.bars[step] = self.progress.add_task("", total=1.0, step=label, note="")
        elif kind == EventType.STEP_PROGRESS:
            if step in self.bars:
                note = escape(str(event.get("message") or ""))
                self.progress.update(self.bars[step], completed=event["progress"], note=note)
        elif kind == EventType.STEP_LOG:
            self._print(f"  [dim]{step}: {escape(str(event['message']))}[/]")
        elif kind == EventType.STEP_RETRYING:
            self._drop_bar(step)
            self._print(
                f"[yellow]↻[/] {step} attempt {event['attempt']} failed: "
                f"{escape(str(event['message']))}; retrying in {event['delay_s']:g} s"
            )
        elif kind == EventType.STEP_FINISHED:
            self._drop_bar(step)
            self._print(self._finished_line(step, event))
        elif kind == EventType.RUN_RESUMED:
            worker, reason = escape(str(event["worker"])), escape(str(event["reason"]))
            self._print(f"[yellow]↻[/] run resumed on {worker} ({reason})")
        elif kind == EventType.RUN_STARTED:
            self._print(f"[dim]run started on {escape(str(event.get('worker', '')))}[/]")
        elif kind == EventType.RUN_FINISHED:
            self.status = event["status"]
            colour = COLOURS.get(event["status"], "yellow")
            message = f": {escape(str(event['message']))}" if event.get("message") else ""
            self._print(f"[bold {colour}]run {escape(str(event['status']))}[/]{message}")

    def _finished_line(self, step: str, event: dict[str, Any]) -> str:
        status = event["status"]
        line = f"{MARKS.get(status, '?')} {step} {escape(str(status))}"
        if event.get("duration_ms") is not None:
            line += f" in {_duration(float(event['duration_ms']))}"
        if event.get("message"):
            line += f" — {escape(str(event['message']))}"
        return line

    def _drop_bar(self, step: str) -> None:
        task = self.bars.pop(step, None)
        if task is not None:
            self.progress.remove_task(task)

    def _print(self, markup: str) -> None:
        # Printed through the progress' console so the lines stay above the bars.
        self.progress.console.print(markup, highlight=False)


def _duration(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{int(ms // 60_000)} min {ms % 60_000 / 1000:.0f} s"
