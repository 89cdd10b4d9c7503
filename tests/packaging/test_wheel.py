"""The wheel, installed as the image installs it, runs every command the image runs.

The wheel is built from exactly what the Dockerfile's first stage copies, installed
into a fresh venv (no checkout, no editable install, no user site on its path) the two
ways the Dockerfile installs it: the pins of constraints.txt, then the wheel with its
`server` extra from no index. Then, from a directory that holds only what the image's
/app holds (gunicorn.conf.py and the scenarios), every command of docker-compose.yml and
the image's CMD runs against the test Redis, each word for word, configured only by
environment variables as the containers are: the worker answers `celery inspect ping`,
Flower answers behind basic auth, gunicorn serves `/healthz` and the compose health
check passes, and the command line client runs a scenario through them end to end.

A fresh venv with the whole dependency set rather than the wheel alone over the
suite's venv: the suite's venv holds every test and dev tool, so a dependency missing
from pyproject.toml (or from the `server` extra) would go unnoticed there, and a module
left out of the wheel would be imported from the checkout. Installed from the pip cache
and the lock, the fresh venv costs about 20 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from stacks import Databases

from devtools.processes import default_signals
from devtools.redis_server import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
CONSTRAINTS = ROOT / "constraints.txt"
#: The services built from the image, each with the command the test runs for it.
IMAGE_SERVICES = ("web", "worker", "flower")
#: The packages the wheel must hold, each importable alone from the install.
PACKAGES = ("tasks", "web", "worker", "client")
TOKEN = "wheel-test-token"
FLOWER_AUTH = ("admin", "wheel-test-password")
#: pip, quiet, and never stopping to ask.
PIP = ["-m", "pip", "--disable-pip-version-check", "--no-input", "--quiet"]
START_TIMEOUT_S = 60.0


# -- what the Dockerfile and docker-compose.yml say --------------------------------


@dataclass
class Stage:
    name: str
    #: Its instructions, continuation lines joined, comments dropped.
    instructions: list[tuple[str, str]]

    def args(self, keyword: str) -> list[str]:
        return [rest for key, rest in self.instructions if key == keyword]

    def copies(self) -> list[tuple[list[str], str]]:
        """`COPY src... dest` from the build context (not `--from` another stage)."""
        found = []
        for rest in self.args("COPY"):
            words = shlex.split(rest)
            if words[0].startswith("--from="):
                continue
            assert not any(w.startswith("--") for w in words), f"COPY with options: {rest}"
            found.append((words[:-1], words[-1]))
        return found


def dockerfile_stages() -> list[Stage]:
    text = DOCKERFILE.read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    stages: list[Stage] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            name = rest.split(" AS ")[-1].strip() if " AS " in rest else str(len(stages))
            stages.append(Stage(name, []))
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def dockerfile_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in stage.args("ENV"):
        for word in shlex.split(rest):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def image_cmd() -> list[str]:
    cmd = json.loads(dockerfile_stages()[-1].args("CMD")[-1])
    assert isinstance(cmd, list)
    return [str(word) for word in cmd]


def compose_services() -> dict[str, Any]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert isinstance(services, dict)
    return services


def image_commands() -> dict[str, list[str]]:
    """Every command a container of the image runs, by service (the web's is the CMD)."""
    services = compose_services()
    built = sorted(name for name, service in services.items() if "build" in service)
    assert built == sorted(IMAGE_SERVICES), "a service of the image that this test does not run"
    commands = {name: services[name].get("command", image_cmd()) for name in IMAGE_SERVICES}
    checked = [name for name in IMAGE_SERVICES if "healthcheck" in services[name]]
    assert checked == ["web"], "a health check that this test does not run"
    health = services["web"]["healthcheck"]["test"]
    assert health[0] == "CMD"
    commands["web healthcheck"] = health[1:]
    for name in IMAGE_SERVICES:
        assert "entrypoint" not in services[name], f"{name}: an entrypoint this test does not run"
    return commands


# -- the wheel, installed ------------------------------------------------------------


@dataclass
class Install:
    venv: Path
    #: What the image's /app holds: gunicorn.conf.py and the scenarios.
    app: Path
    #: The environment every command runs in, the venv's bin first on PATH.
    env: dict[str, str]
    logs: Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def run(
        self, *command: str, timeout: float = 60, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=self.app,
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _lay_out(stage: Stage, workdir: Path) -> None:
    """The files a stage copies from the build context, as Docker copies them, below
    `workdir` (its WORKDIR); copies to absolute paths (the lock, into /tmp) are left to
    the caller. .dockerignore keeps __pycache__ out of the context: so does this."""
    ignore = shutil.ignore_patterns("__pycache__", "*.py[cod]")
    workdir.mkdir(parents=True)
    for sources, dest_text in stage.copies():
        if dest_text.startswith("/"):
            continue
        dest = workdir / dest_text
        for source in sources:
            path = ROOT / source
            if path.is_dir():  # its contents, into dest
                shutil.copytree(path, dest, ignore=ignore, dirs_exist_ok=True)
            elif dest_text.endswith("/") or len(sources) > 1:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / path.name)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)


def _check(result: subprocess.CompletedProcess[str], what: str) -> str:
    assert result.returncode == 0, (
        f"{what}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("wheel")
    stages = dockerfile_stages()
    build_stage, final = stages[0], stages[-1]
    assert len(stages) == 2 and build_stage.name == "wheel"

    # The wheel, from a copy holding only what the first stage copies: nothing left over
    # in the checkout (build/, a stale egg-info) can end up in it.
    source, dist = base / "src", base / "dist"
    _lay_out(build_stage, source)
    _check(
        subprocess.run(
            [sys.executable, *PIP, "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)],
            capture_output=True,
            text=True,
            timeout=300,
        ),
        "building the wheel",
    )

    venv = base / "venv"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
        and not key.startswith(("STEPSTREAM_", "FLOWER_"))
    }
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]),
        # Nothing from a user's site-packages either: only the venv, as in the image.
        PYTHONNOUSERSITE="1",
        PYTHONUNBUFFERED="1",
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    python = str(venv / "bin" / "python")
    # As the Dockerfile does: the pins, then the wheel from no index.
    pip_runs = [
        ["install", "--requirement", str(CONSTRAINTS)],
        [
            "install",
            "--no-index",
            "--find-links",
            str(dist),
            "--constraint",
            str(CONSTRAINTS),
            "stepstream[server]",
        ],
    ]
    for args in pip_runs:
        _check(
            subprocess.run(
                [python, *PIP, *args], env=env, capture_output=True, text=True, timeout=600
            ),
            f"pip {shlex.join(args)}",
        )

    app = base / "app"
    _lay_out(final, app)
    logs = base / "logs"
    logs.mkdir()
    return Install(venv, app, env, logs)


# -- the tests -----------------------------------------------------------------------


def test_the_installed_set_is_exactly_the_lock(install: Install) -> None:
    installed = _check(
        install.run(install.python, *PIP, "freeze", "--exclude", "stepstream"), "pip freeze"
    )

    def named(text: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                req = Requirement(line)
                found[canonicalize_name(req.name)] = str(req.specifier)
        return found

    locked, got = named(CONSTRAINTS.read_text()), named(installed)
    assert got == locked, (
        "constraints.txt is not the set the wheel installs (run `make lock`):\n"
        f"installed, not pinned: {sorted(got.keys() - locked.keys())}\n"
        f"pinned, not installed: {sorted(locked.keys() - got.keys())}\n"
        f"other versions: {sorted(k for k in got.keys() & locked.keys() if got[k] != locked[k])}"
    )


def test_every_module_imports_from_the_wheel_outside_the_checkout(install: Install) -> None:
    # Every module of the three packages, each from the venv's site-packages: a
    # subpackage or dependency left out fails here, as it would in the image.
    script = """
import importlib, json, pkgutil, sys
found = {}
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    found[name] = package.__file__
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        found[info.name] = importlib.import_module(info.name).__file__
print(json.dumps(found))
"""
    out = _check(install.run(install.python, "-c", script, *PACKAGES), "importing the packages")
    modules: dict[str, str] = json.loads(out)
    site = next((install.venv / "lib").glob("python3*/site-packages"))
    outside = {name: path for name, path in modules.items() if not path.startswith(str(site))}
    assert not outside, f"imported from outside the venv: {outside}"
    expected = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
    }
    assert expected <= modules.keys(), f"not in the wheel: {sorted(expected - modules.keys())}"

    # Package data: every file that is not Python (the Lua scripts, the UI's static
    # files and templates) is installed too.
    data = {
        p.relative_to(ROOT)
        for package in PACKAGES
        for p in (ROOT / package).rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    }
    assert data, "no package data found in the checkout"
    missing = sorted(str(p) for p in data if not (site / p).is_file())
    assert not missing, f"package data not in the wheel: {missing}"


def test_the_console_script_runs(install: Install) -> None:
    out = _check(install.run("stepstream", "--help"), "stepstream --help")
    assert "run" in out and "tail" in out


@dataclass
class Service:
    name: str
    command: list[str]
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM to the service (as `docker stop` sends it), then nothing of its
        process group may outlive it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def _wait(service: Service, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if service.proc.poll() is not None:
            raise AssertionError(
                f"{service.name} ({shlex.join(service.command)}) exited before {what}:\n"
                + service.log.read_text()
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{service.name}: {what} not within {START_TIMEOUT_S:g} s:\n"
                + service.log.read_text()
            )
        time.sleep(0.2)  # polling a process that is starting


@pytest.fixture(scope="module")
def services(install: Install, databases: Databases) -> Iterator[dict[str, Any]]:
    """The image's services, each started with its compose or Dockerfile command."""
    commands = image_commands()
    final_env = dockerfile_env(dockerfile_stages()[-1])
    compose = compose_services()
    # The image's settings, its paths and addresses turned into this machine's.
    assert final_env["STEPSTREAM_SCENARIOS_DIR"] == "/app/scenarios"
    assert final_env["STEPSTREAM_BIND"] == "0.0.0.0:8000"
    web_port, flower_port = free_port(), free_port()
    # A database of its own on the test Redis: nothing else in the suite reads it.
    redis_url = databases.fresh_url()
    env = {
        "STEPSTREAM_REDIS_URL": redis_url,
        "STEPSTREAM_SCENARIOS_DIR": str(install.app / "scenarios"),
        "STEPSTREAM_BIND": f"127.0.0.1:{web_port}",
        "STEPSTREAM_HEARTBEAT_S": "1",
        "STEPSTREAM_SHUTDOWN_GRACE_S": "5",
    }
    env.update(
        # The secrets compose requires of whoever runs it.
        STEPSTREAM_API_TOKEN=TOKEN,
        FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH),
        # Flower's own defaults in the container: port 5555 on every interface.
        FLOWER_PORT=str(flower_port),
        FLOWER_ADDRESS="127.0.0.1",
    )
    # Every variable compose sets has its counterpart here; the ones it leaves to the
    # user (`${VAR:?message}`) are required.
    for name in IMAGE_SERVICES:
        for key, value in compose[name]["environment"].items():
            assert key in env, f"{name}: {key} is set by compose, not by this test"
            if str(value).startswith("${"):
                assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", str(value)), f"{key}: {value}"
    started: dict[str, Any] = {
        "env": env,
        "web": f"http://127.0.0.1:{web_port}",
        "flower": f"http://127.0.0.1:{flower_port}",
        "commands": commands,
    }
    running: list[Service] = []
    try:
        for name in IMAGE_SERVICES:
            log = install.logs / f"{name}.log"
            proc = subprocess.Popen(
                commands[name],
                cwd=install.app,
                env={**install.env, **env},
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=default_signals,
            )
            service = Service(name, commands[name], proc, log)
            running.append(service)
            started[name + "_service"] = service
        yield started
    finally:
        for service in running:
            service.stop()


def _get(url: str, **kwargs: Any) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=3, **kwargs)
    except httpx.HTTPError:
        return None


def test_the_worker_answers_a_ping(install: Install, services: dict[str, Any]) -> None:
    worker: Service = services["worker_service"]
    assert worker.command[:4] == ["celery", "-A", "worker", "worker"]

    def pong() -> bool:
        result = install.run(
            "celery", "-A", "worker", "inspect", "ping", "--timeout", "2", **services["env"]
        )
        return result.returncode == 0 and "pong" in result.stdout

    _wait(worker, pong, "an answer to `celery -A worker inspect ping`")


def test_flower_answers_behind_basic_auth(services: dict[str, Any]) -> None:
    flower: Service = services["flower_service"]
    assert flower.command[:4] == ["celery", "-A", "worker", "flower"]
    url = services["flower"]

    def answers() -> bool:
        response = _get(url + "/", auth=FLOWER_AUTH)
        return response is not None and response.status_code == 200

    _wait(flower, answers, "Flower's dashboard")
    anonymous = _get(url + "/")
    assert anonymous is not None and anonymous.status_code == 401
    wrong = _get(url + "/", auth=(FLOWER_AUTH[0], "not-the-password"))
    assert wrong is not None and wrong.status_code == 401


def _web_is_healthy(services: dict[str, Any]) -> None:
    def healthy() -> bool:
        response = _get(services["web"] + "/healthz")
        return response is not None and response.status_code == 200

    _wait(services["web_service"], healthy, "/healthz")


def test_gunicorn_serves_healthz_and_the_compose_healthcheck_passes(
    install: Install, services: dict[str, Any]
) -> None:
    web: Service = services["web_service"]
    assert web.command == image_cmd() and web.command[0] == "gunicorn"
    _web_is_healthy(services)
    check = services["commands"]["web healthcheck"]
    _check(install.run(*check, **services["env"]), "the web's compose health check")
    # The token the compose file requires is in force.
    response = _get(services["web"] + "/api/scenarios")
    assert response is not None and response.status_code == 401


def test_the_command_line_runs_a_scenario_through_the_services(
    install: Install, services: dict[str, Any]
) -> None:
    # Lua scripts, scenario loading, the worker's tools, the web's streams: one run
    # through all of them, as a user of the image would start it.
    _web_is_healthy(services)
    result = install.run(
        "stepstream",
        "run",
        "hello_sequence",
        "-i",
        "name=Ada",
        "--follow",
        timeout=90,
        **services["env"],
        STEPSTREAM_URL=services["web"],
    )
    assert result.returncode == 0, (
        f"exit {result.returncode}\n{result.stdout}\n{result.stderr}\n"
        + "\n".join(
            s.log.read_text() for s in (services["web_service"], services["worker_service"])
        )
    )
