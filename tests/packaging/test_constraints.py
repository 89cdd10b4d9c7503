"""constraints.txt, the image's lock, against what pyproject.toml asks for.

The image installs `stepstream[server]` through constraints.txt, from no index once the
pins are in (Dockerfile): a requirement the lock does not pin, or pins outside its
range, breaks the image build. This catches it without Docker and without a network;
tests/packaging/test_wheel.py checks the full set (transitive dependencies included)
by installing it. `make lock` rewrites the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
#: The extras the image installs (Dockerfile: `stepstream[server]`).
IMAGE_EXTRAS = ("server",)


def project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(data, dict)
    return data


def image_requirements(meta: Mapping[str, object], extras: tuple[str, ...]) -> list[Requirement]:
    """The project's dependencies and those of `extras`, its own extras followed
    (`stepstream[dev]` names `stepstream[server]`, say), for this interpreter."""
    name = canonicalize_name(str(meta["name"]))
    optional = meta.get("optional-dependencies", {})
    assert isinstance(optional, dict)
    found: list[Requirement] = []
    seen: set[str] = set()

    def add(lines: list[str]) -> None:
        for line in lines:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            if canonicalize_name(req.name) == name:
                for extra in sorted(req.extras - seen):
                    seen.add(extra)
                    add(optional[extra])
            else:
                found.append(req)

    dependencies = meta["dependencies"]
    assert isinstance(dependencies, list)
    add(dependencies)
    for extra in extras:
        assert extra in optional, f"pyproject.toml has no extra {extra!r}"
        seen.add(extra)
        add(optional[extra])
    return found


def pins(text: str) -> dict[NormalizedName, Version]:
    """`name==version` lines (comments and blank lines aside); anything else fails."""
    pinned: dict[NormalizedName, Version] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", (
            f"constraints.txt:{number}: {raw!r} is not a pin (name==version)"
        )
        assert not req.extras and req.marker is None and req.url is None, (
            f"constraints.txt:{number}: {raw!r}: a pin carries no extras, markers or URL"
        )
        name = canonicalize_name(req.name)
        assert name not in pinned, f"constraints.txt:{number}: {req.name} pinned twice"
        pinned[name] = Version(specs[0].version)
    return pinned


def test_every_requirement_of_the_image_is_pinned_within_its_range() -> None:
    pinned = pins(CONSTRAINTS.read_text())
    requirements = image_requirements(project(), IMAGE_EXTRAS)
    assert {"gunicorn", "gevent", "flower"} <= {canonicalize_name(r.name) for r in requirements}
    problems = []
    for req in requirements:
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req} is not pinned")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req} is pinned to {version}, outside its range")
    assert not problems, "constraints.txt is stale (run `make lock`):\n" + "\n".join(problems)


def test_the_project_itself_is_not_pinned() -> None:
    # A pin of stepstream would make the wheel just built uninstallable next to it.
    assert canonicalize_name(str(project()["name"])) not in pins(CONSTRAINTS.read_text())


def test_the_check_sees_a_missing_and_an_out_of_range_pin() -> None:
    meta: dict[str, object] = {
        "name": "demo",
        "dependencies": ["a>=2", "b; python_version < '3'"],
        "optional-dependencies": {"server": ["demo[web]"], "web": ["c[x]>=1,<2"]},
    }
    requirements = image_requirements(meta, ("server",))
    assert [str(r) for r in requirements] == ["a>=2", "c[x]<2,>=1"]
    pinned = pins("# lock\na==1.0\nC==1.5  # comment\n")
    assert pinned == {"a": Version("1.0"), "c": Version("1.5")}
    assert not requirements[0].specifier.contains(pinned[canonicalize_name("a")])
    for bad in ("a>=1", "a==1\na==2", "a[x]==1"):
        try:
            pins(bad)
        except AssertionError:
            continue
        raise AssertionError(f"{bad!r} was accepted as a lock")
