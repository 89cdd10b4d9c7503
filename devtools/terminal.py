"""``make up``'s terminal: stdout with one status line that updates in place, and the
foreground process group."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from typing import TextIO

#: Back to the start of the line, and clear it.
_CLEAR = "\r\x1b[K"
#: Off a terminal a status line is printed anew only this often, or when it says
#: something other than a new number of seconds.
PIPE_STATUS_EVERY_S = 5.0
#: What changes every second in a countdown: "(28 s)".
_SECONDS = re.compile(r"\b\d+ s\b")


class Terminal:
    """stdout that shrugs off a closed terminal or pipe, so shutdown still completes,
    and that keeps a status line (a countdown) below the output.

    On a terminal the status line is redrawn in place, and cleared and redrawn around
    every other line. Elsewhere (a pipe, a log file) it is printed as a line of its own
    when its gist (all but the seconds left) changes, and every ``PIPE_STATUS_EVERY_S``
    seconds otherwise.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._broken = False
        self._tty = self._is_tty()
        self._status: str | None = None
        self._status_shown = False
        self._last_gist: str | None = None
        self._last_printed = 0.0

    def write(self, text: str) -> int:
        if self._status_shown:
            self._raw(_CLEAR)
            self._status_shown = False
        self._raw(text)
        if self._status is not None and text.endswith("\n"):
            self._draw()
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self._tty

    def status(self, text: str | None) -> None:
        """Show ``text`` as the status line; None removes it."""
        if not self._tty:
            if text is not None:
                gist = _SECONDS.sub("", text)
                now = time.monotonic()
                if gist != self._last_gist or now - self._last_printed >= PIPE_STATUS_EVERY_S:
                    self._last_gist, self._last_printed = gist, now
                    self._raw(text + "\n")
            else:
                self._last_gist = None
            return
        self._status = text
        if text is None:
            if self._status_shown:
                self._raw(_CLEAR)
                self._status_shown = False
            return
        self._draw()

    def _draw(self) -> None:
        assert self._status is not None
        self._raw(_CLEAR + self._status)
        self._status_shown = True

    def _raw(self, text: str) -> None:
        if self._broken:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self._broken = True

    def _is_tty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False


@contextlib.contextmanager
def foreground() -> Iterator[None]:
    """Make this process the terminal's foreground process group for the duration.

    Under ``make up`` a Ctrl-C goes to every process of the foreground group: make too,
    which then reports "*** [up] Interrupt" and fails, however cleanly the services
    stop. As the group of its own that the terminal signals, this process alone hears
    Ctrl-C (and Ctrl-Z, ignored meanwhile: make's shell would not notice a stop).
    Nothing changes without a terminal, or when run in the background.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield
        return
    previous = None
    try:
        if os.tcgetpgrp(fd) == os.getpgrp():
            previous = os.getpgrp()
            with contextlib.suppress(OSError):  # EPERM: a session leader already leads
                os.setpgid(0, 0)
            _hand_terminal(fd, os.getpgrp())
            signal.signal(signal.SIGTSTP, signal.SIG_IGN)
        yield
    finally:
        if previous is not None and previous != os.getpgrp():
            with contextlib.suppress(OSError):
                _hand_terminal(fd, previous)
        os.close(fd)


def _hand_terminal(fd: int, pgrp: int) -> None:
    # A process that is not in the foreground group gets SIGTTOU for tcsetpgrp.
    before = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgrp)
    finally:
        signal.signal(signal.SIGTTOU, before)
