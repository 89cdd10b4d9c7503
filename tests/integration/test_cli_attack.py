"""The command line on a bad day: a terminal too narrow for anything, a terminal that
is not UTF-8, values that are not plain ASCII."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from clients import submit
from conftest import LiveServer

#: The command line as a process of its own, from this checkout.
STEPSTREAM = [sys.executable, "-m", "client.cli"]
ROOT = Path(__file__).resolve().parents[2]
LONG = "test_long_names_a_scenario_id_as_long_as_sixty_four_characters_x"


def stepstream(server: LiveServer, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STEPSTREAM, "--url", server.url, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        cwd=ROOT,
        env=os.environ | env,
        timeout=60,
    )


def test_a_terminal_that_is_not_utf8_shows_cut_values_instead_of_a_traceback(
    live_server: LiveServer,
) -> None:
    # A cut value ends with '…', which ASCII and Latin-1 cannot encode.
    run_id = submit(live_server.url, LONG, {})["run_id"]
    for encoding in ("ascii", "latin-1"):
        done = stepstream(live_server, "runs", COLUMNS="60", PYTHONIOENCODING=encoding)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split()[:3] == ["run", "status", "scenario"]
        row = next(line for line in lines if line.startswith(run_id[:8]))
        assert "test_long_names" in row and "?" in row, row
        assert all(len(line) <= 60 for line in lines), lines


def test_a_20_column_terminal_keeps_the_titles_and_8_characters_of_each_run_id(
    live_server: LiveServer,
) -> None:
    # Too narrow for the columns' floors: Rich squeezed every column to a letter and
    # '…' ("…  s…  scen…  creat…"), run ids included. The floors hold; the line is longer.
    run_id = submit(live_server.url, LONG, {})["run_id"]
    done = stepstream(live_server, "runs", COLUMNS="20")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["run", "status", "scenario", "created", "(UTC)"]
    assert len(lines) == 2, lines
    assert lines[1].split()[0] == run_id[:8]
    assert "cut to 8 characters" in done.stderr
