"""``make up``'s code watcher: which Python files to watch, and a process watching them.

Workers import tool code once, at start, so an edited tool runs only in a new worker.
The web lists the tools too (``GET /api/tools``, and scenarios are checked against
them), so it reloads as well; gunicorn's SIGHUP starts new web processes and lets the
old ones finish, without closing the port. Scenario files need neither: the web reads
them again when they change (``web/catalog.py``), and a run carries its scenario to
the workers.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import signal
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from honcho.printer import Message

#: Where installed packages declare tools (tasks/tools/registry.py). Not imported from
#: there: the supervisor must start even while that code is being edited.
ENTRY_POINT_GROUP = "stepstream.tools"
#: The repository's packages the services run.
PACKAGES = ("tasks", "worker", "web")
#: Milliseconds of quiet before a burst of changes (an editor's save, a git checkout)
#: is reported as one.
DEBOUNCE_MS = 300


@dataclass(frozen=True)
class Watched:
    """Directories to watch (recursively) and, in them, the Python files that count."""

    #: Every ``.py`` file under these counts.
    trees: tuple[Path, ...]
    #: Single modules (a plugin that is one file): only these files count.
    files: tuple[Path, ...]

    @property
    def roots(self) -> list[Path]:
        """What the watcher is given: the trees, and the directory of each single file."""
        roots = list(self.trees)
        for file in self.files:
            if not any(file.is_relative_to(tree) for tree in self.trees):
                roots.append(file.parent)
        return sorted(set(roots))

    def counts(self, path: Path) -> bool:
        if path.suffix != ".py" or "__pycache__" in path.parts:
            return False
        return path in self.files or any(path.is_relative_to(tree) for tree in self.trees)


def plugin_sources(group: str = ENTRY_POINT_GROUP) -> tuple[list[Path], list[Path]]:
    """The packages (directories) and single modules (files) behind the tool entry
    points, found without importing them; installed copies (site-packages) are left
    out: they change by a reinstall, not by an edit."""
    installed = _installed_dirs()
    trees: list[Path] = []
    files: list[Path] = []
    for entry_point in entry_points(group=group):
        top = entry_point.module.split(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:
            found = [Path(p).resolve() for p in spec.submodule_search_locations]
            target = trees
        elif spec.origin and spec.origin.endswith(".py"):
            found = [Path(spec.origin).resolve()]
            target = files
        else:
            continue
        for path in found:
            if not any(path.is_relative_to(d) for d in installed) and path not in target:
                target.append(path)
    return trees, files


def watched(root: Path, extra: Iterable[Path] = ()) -> Watched:
    """The repository's packages, the tool plugins' sources, and ``extra`` directories."""
    trees = [root / name for name in PACKAGES if (root / name).is_dir()]
    plugin_trees, plugin_files = plugin_sources()
    for path in [*plugin_trees, *(Path(p).resolve() for p in extra)]:
        if path.is_dir() and not any(path.is_relative_to(t) for t in trees):
            trees.append(path)
    files = [f for f in plugin_files if not any(f.is_relative_to(t) for t in trees)]
    # A single module right in the repository's root would have the watcher walk .venv.
    files = [f for f in files if f.parent != root]
    return Watched(tuple(trees), tuple(files))


def shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def start_watcher(
    what: Watched, route: Callable[[list[Path]], Sequence[str]], root: Path
) -> Callable[[Any], multiprocessing.Process]:
    """For ``Supervisor.add_helper``: a process that posts a ``reload`` message, naming
    the services ``route`` picks for the changed files, after each burst of changes."""

    def start(events: Any) -> multiprocessing.Process:
        process = multiprocessing.Process(
            target=_watch, args=(what, route, root, events), name="reload", daemon=True
        )
        process.start()
        return process

    return start


def _watch(
    what: Watched, route: Callable[[list[Path]], Sequence[str]], root: Path, events: Any
) -> None:
    import watchfiles

    # The supervisor stops this process; Ctrl-C on the terminal is the supervisor's.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)

    def counts(change: watchfiles.Change, path: str) -> bool:
        return what.counts(Path(path))

    for changes in watchfiles.watch(
        *what.roots, watch_filter=counts, debounce=DEBOUNCE_MS, raise_interrupt=False
    ):
        paths = sorted({Path(path) for _, path in changes})
        names = list(route(paths))
        if not names:
            continue
        listed = ", ".join(shown(p, root) for p in paths[:3])
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        reason = f"{listed}{more} changed"
        events.put(Message("reload", (names, reason), datetime.now(), "reload", None))


def _installed_dirs() -> list[Path]:
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs.update(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.USER_SITE:
        dirs.add(site.USER_SITE)
    dirs.add(sys.base_prefix)
    return [Path(d).resolve() for d in dirs]
