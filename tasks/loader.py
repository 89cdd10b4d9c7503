"""Load every scenario file of a directory, leaving out (and reporting) the bad ones.

One broken file must not take the others down with it, so nothing here raises for a
file's content: each problem becomes a LoadError naming the file and the reason, and is
logged as a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Container, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import ScenarioError
from tasks.references import json_kind
from tasks.scenario import Scenario, parse_scenario

logger = logging.getLogger(__name__)

#: File name endings read as scenarios; anything else in the directory is ignored.
SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class LoadError:
    """A file left out, and why; `scenario_id` when the file names one that can be read."""

    path: str
    reason: str
    scenario_id: str | None = None


@dataclass(frozen=True)
class LoadResult:
    """The scenarios that loaded, by id in file-name order, and the files that did not."""

    scenarios: dict[str, Scenario]
    errors: tuple[LoadError, ...]


class _Loader(yaml.SafeLoader):
    """`yaml.safe_load` minus two surprises.

    Duplicate keys are an error rather than "the last one wins", which would silently
    drop half a step. Timestamps stay strings: a `2024-01-01` in a step's input would
    otherwise reach the tool as a date object, which is not JSON.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [entry for entry in resolvers if entry[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _SyntaxError(Exception):
    """A file that is not valid YAML or JSON; the message says where."""


def _parse_text(path: Path, text: str) -> object:
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise _SyntaxError(
                f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    try:
        # _Loader derives from SafeLoader: no arbitrary Python objects.
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or "syntax error"
        if exc.context:
            what += f" ({exc.context})"
        raise _SyntaxError(f"invalid YAML{where}: {what}") from None
    except yaml.YAMLError as exc:
        raise _SyntaxError(f"invalid YAML: {exc}") from None


def _read_file(path: Path) -> dict[str, Any]:
    """One file's content; raises ScenarioError or _SyntaxError with the reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read the file: {exc}") from None
    data = _parse_text(path, text)
    if data is None and path.suffix != ".json":
        raise ScenarioError("the file holds no scenario (it is empty or only comments)")
    if not isinstance(data, dict):
        raise ScenarioError(f"the top level must be a mapping, not {json_kind(data)}")
    return data


def _named_id(data: dict[str, Any]) -> str | None:
    """The `scenario_id` a file names, if it is a string (whether valid or not)."""
    value = data.get("scenario_id")
    return value if isinstance(value, str) else None


def _scenario_files(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix in SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def load_scenarios(directory: Path, known_tools: Container[str]) -> LoadResult:
    """Load every `*.yaml`, `*.yml` and `*.json` file directly inside `directory`.

    Two files claiming the same `scenario_id` are both left out and reported: which of
    them would win is no choice to make silently (a copied file that kept its
    original's id would otherwise replace it, or be ignored, without a word).
    """
    loaded: dict[str, list[tuple[Path, Scenario]]] = {}
    errors: list[LoadError] = []

    def report(path: Path, reason: str, scenario_id: str | None = None) -> None:
        errors.append(LoadError(str(path), reason, scenario_id))
        logger.warning("scenario file %s left out: %s", path, reason)

    try:
        files = _scenario_files(directory)
    except OSError as exc:
        reason = (
            "the scenarios directory does not exist"
            if isinstance(exc, FileNotFoundError)
            else f"cannot list the scenarios directory: {exc.strerror or exc}"
        )
        report(directory, reason)
        return LoadResult({}, tuple(errors))

    for path in files:
        data: dict[str, Any] | None = None
        try:
            data = _read_file(path)
            scenario = parse_scenario(data, known_tools)
        except (ScenarioError, _SyntaxError) as exc:
            report(path, str(exc), _named_id(data) if data is not None else None)
            continue
        except RecursionError:
            report(path, "nested too deeply")
            continue
        loaded.setdefault(scenario.scenario_id, []).append((path, scenario))

    scenarios: dict[str, Scenario] = {}
    for scenario_id, claims in loaded.items():
        if len(claims) == 1:
            scenarios[scenario_id] = claims[0][1]
            continue
        for path, _ in claims:
            others = ", ".join(other.name for other, _ in claims if other != path)
            report(path, f"duplicate scenario_id {scenario_id!r} (also in {others})", scenario_id)
    errors.sort(key=lambda error: error.path)
    return LoadResult(scenarios, tuple(errors))
