"""The supervision behind ``make up``: honcho's Manager, extended.

Stock honcho stops everything when one process exits, SIGTERMs each process group and
SIGKILLs it 5 s later. Here:

- A service added with ``restart=True`` (the worker) is started again when it exits on
  its own, after a backoff that doubles with each quick crash; the others keep running.
- SIGTERM goes to each service's main process only (its command is ``exec``-ed, so
  that is the service itself): the worker's pool children are the worker's to stop,
  after its running steps finish or are handed back. Services added with
  ``stop_last=True`` (the web, Flower) are stopped once the others have ended, so the
  UI shows the last steps finish. The groups are SIGKILLed only after ``kill_wait``.
- A second stop signal stops everything at once: a service's ``hurry`` signal (the
  worker's cold shutdown, which hands its running steps back) or SIGKILL.
- Lines a service prints with ``STATUS_PREFIX`` are a status line (the worker's
  shutdown countdown), shown in place rather than as output.
- ``ready`` is polled until it returns the line that says everything answers.
- ``reload(names, reason)`` restarts or signals services (``make up``'s code watcher).
- A stop asked for by a signal is a success; a service without ``restart`` dying on
  its own is a failure, and stops the rest.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from honcho.manager import Manager
from honcho.printer import Message, Printer

from devtools.terminal import Terminal
from devtools.up_worker import STATUS_PREFIX

#: Each stops everything cleanly; SIGHUP is the terminal closing under ``make up``.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Seconds after a second Ctrl-C (or a reload's hurry signal) before SIGKILL.
HURRY_WAIT_S = 10.0
#: Seconds the services stopped last get before SIGKILL.
LAST_STAGE_WAIT_S = 15.0
#: The first restart waits this long, each quick crash after it twice as long as the one
#: before, up to BACKOFF_MAX_S; a service that ran STABLE_S starts over at the first.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0
#: How often ``ready`` is asked.
READY_POLL_S = 0.5
SYSTEM = "system"


def backoff(crashes: int) -> float:
    """Seconds to wait before restarting a service that crashed ``crashes`` times in a row."""
    return float(min(BACKOFF_FIRST_S * 2 ** max(crashes - 1, 0), BACKOFF_MAX_S))


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


@dataclass
class Service:
    """How the supervisor treats one process."""

    name: str
    restart: bool = False
    stop_last: bool = False
    #: Sent on a second Ctrl-C instead of SIGKILL, and before a reload's restart.
    hurry: signal.Signals | None = None
    #: On ``reload``: None to restart the service, else the signal that reloads it.
    reload_signal: signal.Signals | None = None
    started_at: float = 0.0
    crashes: int = 0
    #: When a pending restart is due.
    restart_at: float | None = None
    #: Why the service is being restarted on purpose (a reload), if it is.
    reloading: str | None = None
    #: When the service, hurried, gets SIGKILL.
    kill_at: float | None = None


class Supervisor(Manager):  # type: ignore[misc]
    """honcho's Manager, with restarts, staged stops and a countdown (see the module)."""

    def __init__(
        self, kill_wait: float, printer: Printer | None = None, terminal: Terminal | None = None
    ) -> None:
        super().__init__(printer)
        self.kill_wait = kill_wait
        self.terminal = terminal
        #: Polled until it returns the ready line, printed once.
        self.ready: Callable[[], str | None] | None = None
        #: Set by the first stop signal (SIGINT, SIGTERM or SIGHUP).
        self.interrupted = False
        self._services: dict[str, Service] = {}
        self._deadline: float | None = None
        self._last_stage_started = False
        self._hurried = False
        self._killed = False
        self._failed_rc: int | None = None
        self._signals: list[signal.Signals] = []
        self._relays: list[multiprocessing.Process] = []
        self._helpers: list[multiprocessing.Process] = []
        self._announced = False
        self._next_ready_poll = 0.0

    def add_process(
        self,
        name: str,
        cmd: str,
        quiet: bool = False,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        *,
        restart: bool = False,
        stop_last: bool = False,
        hurry: signal.Signals | None = None,
        reload_signal: signal.Signals | None = None,
    ) -> Any:
        proc = super().add_process(name, cmd, quiet=quiet, env=env, cwd=cwd)
        self._services[name] = Service(name, restart, stop_last, hurry, reload_signal)
        return proc

    def add_helper(self, start: Callable[[Any], multiprocessing.Process]) -> None:
        """A process that posts messages to the event queue (the code watcher); it is
        started with the services and killed when they have stopped."""
        self._helpers.append(start(self.events))

    def loop(self) -> int:
        """Run every process until all have stopped; return the exit status for ``make``."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        self._start()
        while True:
            # A relay exits only after its last message is in the queue: once all are
            # gone before a read, an empty read means everything has been printed.
            relays_alive = any(relay.is_alive() for relay in self._relays)
            try:
                msg = self.events.get(timeout=0.1)
            except queue.Empty:
                if not relays_alive and not self._restart_pending():
                    break
            else:
                self._handle(msg)
            while self._signals:
                self._react(self._signals.pop(0))
            self._tick()
        for relay in self._relays:
            relay.join()
        for helper in self._helpers:
            helper.kill()
            helper.join()
        # Nothing of a service may outlive make up (a pool child whose parent died, say).
        self._signal_groups(signal.SIGKILL, quiet=True)
        if self.interrupted:
            return 0
        return self._failed_rc or 1

    def kill(self) -> None:
        self._killed = True
        self._signal_groups(signal.SIGKILL)

    def reload(self, names: Sequence[str], reason: str) -> None:
        """Restart (or signal, per ``reload_signal``) the named services."""
        if self._deadline is not None:
            return
        for name in names:
            service, p = self._services[name], self._processes[name]
            if service.reload_signal is not None:
                if p.get("pid") is not None and "returncode" not in p:
                    self._system_print(f"reloading {name} ({reason})\n")
                    _send(p["pid"], service.reload_signal, group=False)
                continue
            if service.reloading is not None:
                continue  # already on its way down: a second signal would be a hard stop
            self._system_print(f"restarting {name} ({reason})\n")
            if "returncode" in p or p.get("pid") is None:
                service.restart_at = time.monotonic()  # down (or starting): now
                service.crashes = 0
                continue
            service.reloading = reason
            if service.hurry is not None:
                _send(p["pid"], service.hurry, group=False)
                service.kill_at = time.monotonic() + HURRY_WAIT_S
            else:
                _send(p["pid"], signal.SIGKILL, group=True)

    def _start(self) -> None:
        for name in self._processes:
            self._start_one(name)

    def _start_one(self, name: str) -> None:
        p = self._processes[name]
        for key in ("pid", "returncode"):
            p.pop(key, None)
        relay = multiprocessing.Process(name=name, target=p["obj"].run, args=(self.events, True))
        relay.start()
        p["process"] = relay
        self._relays.append(relay)

    def _handle(self, msg: Any) -> None:
        if msg.type == "line":
            text = msg.data.decode("utf-8", "replace") if isinstance(msg.data, bytes) else msg.data
            if text.startswith(STATUS_PREFIX):
                self._status(text[len(STATUS_PREFIX) :].rstrip("\n"))
            else:
                self._printer.write(msg)
        elif msg.type == "start":
            self._started(msg.name, msg.data["pid"])
        elif msg.type == "stop":
            self._stopped(msg.name, msg.data["returncode"])
        elif msg.type == "reload":
            names, reason = msg.data
            self.reload(names, reason)

    def _started(self, name: str, pid: int) -> None:
        p, service = self._processes[name], self._services[name]
        p["pid"] = pid
        service.started_at = time.monotonic()
        self._system_print(f"{name} started (pid={pid})\n")
        if self._deadline is not None:  # started after the shutdown began
            _send(pid, signal.SIGTERM, group=False)

    def _stopped(self, name: str, rc: int) -> None:
        p, service = self._processes[name], self._services[name]
        p["returncode"] = rc
        service.kill_at = None
        self._status(None)
        # Its pool children, say, go with it: a new one must not find them.
        if p.get("pid") is not None:
            _send(p["pid"], signal.SIGKILL, group=True)
        if self._deadline is not None:
            self._system_print(f"{name} stopped\n")
            return
        now = time.monotonic()
        if service.reloading is not None:
            service.reloading = None
            service.restart_at = now
        elif service.restart:
            if now - service.started_at >= STABLE_S:
                service.crashes = 0
            service.crashes += 1
            delay = backoff(service.crashes)
            service.restart_at = now + delay
            self._system_print(
                f"{name} exited on its own ({describe_exit(rc)}); restarting it in {delay:g} s\n"
            )
        else:
            self._system_print(f"{name} exited on its own ({describe_exit(rc)}); stopping\n")
            if self._failed_rc is None:
                self._failed_rc = rc if rc > 0 else 1
            self._shut_down()

    def _tick(self) -> None:
        now = time.monotonic()
        for name, service in self._services.items():
            if service.restart_at is not None and now >= service.restart_at:
                service.restart_at = None
                if self._deadline is None:
                    self._start_one(name)
            if service.kill_at is not None and now >= service.kill_at:
                service.kill_at = None
                pid = self._processes[name].get("pid")
                if pid is not None:
                    _send(pid, signal.SIGKILL, group=True)
        if self._deadline is not None:
            if not self._last_stage_started and self._first_stage_done():
                self._start_last_stage()
            if not self._killed and now > self._deadline:
                self._system_print("still running after the time allowed: killing\n")
                self.kill()
        elif self.ready is not None and not self._announced and now >= self._next_ready_poll:
            self._next_ready_poll = now + READY_POLL_S
            line = self.ready()
            if line is not None:
                self._announced = True
                self._system_print(line + "\n")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only note it: printing from a handler can hit a write already under way.
        self._signals.append(signal.Signals(signum))

    def _react(self, signum: signal.Signals) -> None:
        if not self.interrupted:
            self.interrupted = True
            self._system_print(f"{signum.name} received, stopping (Ctrl-C again to stop at once)\n")
            self._shut_down()
        elif not self._hurried and not self._killed:
            self._system_print(f"{signum.name} received again, stopping at once\n")
            self._hurry()

    def _shut_down(self) -> None:
        if self._deadline is not None:
            return
        self._deadline = time.monotonic() + self.kill_wait
        self._terminating = True
        for service in self._services.values():
            service.restart_at = None
        for name, p in self._running():
            if not self._services[name].stop_last:
                _send(p["pid"], signal.SIGTERM, group=False)

    def _first_stage_done(self) -> bool:
        return all(
            "returncode" in p
            for name, p in self._processes.items()
            if not self._services[name].stop_last and p.get("pid") is not None
        )

    def _start_last_stage(self) -> None:
        self._last_stage_started = True
        if not self._hurried:
            self._deadline = min(self._deadline or 0.0, time.monotonic()) + LAST_STAGE_WAIT_S
        for name, p in self._running():
            if self._services[name].stop_last:
                _send(p["pid"], signal.SIGTERM, group=False)

    def _hurry(self) -> None:
        self._hurried = True
        self._deadline = time.monotonic() + HURRY_WAIT_S
        for name, p in self._running():
            hurry = self._services[name].hurry
            if hurry is not None:
                _send(p["pid"], hurry, group=False)
            else:
                _send(p["pid"], signal.SIGKILL, group=True)

    def _running(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (name, p)
            for name, p in self._processes.items()
            if p.get("pid") is not None and "returncode" not in p
        ]

    def _restart_pending(self) -> bool:
        return any(s.restart_at is not None for s in self._services.values())

    def _status(self, text: str | None) -> None:
        if self.terminal is None:
            if text is not None:
                self._system_print(text + "\n")
            return
        if text is None:
            self.terminal.status(None)
            return
        when = self._clock.now().strftime(self._printer.time_format)
        self.terminal.status(f"{when} {SYSTEM.ljust(self._printer.width)} | {text}")

    def _signal_groups(self, signum: signal.Signals, quiet: bool = False) -> None:
        for name, p in self._processes.items():
            if p.get("pid") is None:
                continue
            if not quiet and "returncode" not in p:
                self._system_print(f"sending {signum.name} to {name} (pid {p['pid']})\n")
            _send(p["pid"], signum, group=True)

    def _system_print(self, data: str) -> None:
        self._printer.write(
            Message(type="line", data=data, time=self._clock.now(), name=SYSTEM, colour=None)
        )


def _send(pid: int, signum: signal.Signals, *, group: bool) -> None:
    try:
        # honcho starts each service in a session of its own: pid == its process group.
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
