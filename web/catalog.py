"""The scenarios the web serves: loaded at start and reloaded when the files change."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container
from pathlib import Path

from tasks.loader import LoadError, load_scenarios
from tasks.scenario import Scenario

#: Seconds between checks of the directory for changed files.
RECHECK_S = 1.0


class Catalog:
    """Scenarios by id; a changed, added or removed file is picked up within a second."""

    def __init__(
        self,
        directory: Path,
        tools: Container[str],
        tools_version: Callable[[], object] = lambda: None,
    ) -> None:
        self.directory = directory
        self.tools = tools
        #: Changes when the set of known tools does: the files are then checked again.
        self.tools_version = tools_version
        self._lock = threading.Lock()
        self._signature: tuple[object, ...] | None = None
        self._checked_at = 0.0
        self._scenarios: dict[str, Scenario] = {}
        self._errors: tuple[LoadError, ...] = ()
        self.refresh(force=True)

    def _current_signature(self) -> tuple[object, ...]:
        signature: list[object] = [self.tools_version()]
        try:
            files = sorted(self.directory.iterdir())
        except OSError:
            return tuple(signature)
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                continue
            signature.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(signature)

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked_at < RECHECK_S:
                return
            self._checked_at = now
            signature = self._current_signature()
            if not force and signature == self._signature:
                return
            result = load_scenarios(self.directory, self.tools)
            self._scenarios, self._errors = result.scenarios, result.errors
            self._signature = signature

    def get(self, scenario_id: str) -> Scenario | None:
        self.refresh()
        return self._scenarios.get(scenario_id)

    def list(self) -> list[Scenario]:
        self.refresh()
        return [self._scenarios[k] for k in sorted(self._scenarios)]

    @property
    def errors(self) -> tuple[LoadError, ...]:
        self.refresh()
        return self._errors
