"""What a tool sees of the step it runs in: identity, progress, log and cancellation.

Tools depend on the `ToolContext` protocol only, so the same tool runs inside a Celery
worker (where progress and log become stream events) and in a test or a script with
`LocalContext`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@runtime_checkable
class ToolContext(Protocol):
    """The step a tool is running in, and the channel back to whoever watches it."""

    # Declared as read-only properties so frozen implementations satisfy the protocol
    # as well as plain attributes do; tools only ever read them.
    @property
    def run_id(self) -> str: ...

    @property
    def step(self) -> str: ...

    @property
    def attempt(self) -> int: ...

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the step is, `fraction` in 0..1."""

    def log(self, message: str) -> None:
        """Add a line to the step's log."""

    @property
    def cancelled(self) -> bool:
        """True once the run is being cancelled; long tools check it and stop early."""


@dataclass
class LocalContext:
    """A `ToolContext` that records what a tool reports, for tests and running tools by hand.

    `cancel()` may be called from any thread; the tool sees it through `cancelled`.
    """

    run_id: str = "local"
    step: str = "local"
    attempt: int = 1
    #: Every `progress()` call, in order, as `(fraction, message)`.
    progress_updates: list[tuple[float, str]] = field(default_factory=list)
    #: Every `log()` message, in order.
    logs: list[str] = field(default_factory=list)
    _cancel_event: threading.Event = field(
        default_factory=threading.Event, init=False, repr=False, compare=False
    )

    def progress(self, fraction: float, message: str = "") -> None:
        # Strict here so a tool that reports nonsense fails its tests, not the UI later.
        if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within 0..1, got {fraction!r}")
        self.progress_updates.append((fraction, message))

    def log(self, message: str) -> None:
        self.logs.append(message)

    def cancel(self) -> None:
        """Ask the running tool to stop."""
        self._cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel_event.is_set()
