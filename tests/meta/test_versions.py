"""The versions we declare are the versions we test: every floor in pyproject.toml is pinned exactly in
.ci/constraints-min.txt (which .ci/min-versions installs on requires-python's floor and tests), and the
"Tested versions" table of docs/install.md states the same floors."""
from __future__ import annotations

import re

from packaging.requirements import Requirement
from packaging.version import Version

from helpers import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (the min-versions leg): pytest brings tomli there
    import tomli as tomllib

CONSTRAINTS = ROOT / ".ci" / "constraints-min.txt"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared_floors() -> dict[str, Version]:
    """{package: floor} of every dependency and extra; each must have one (>=)."""
    project = pyproject()
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    floors = {}
    for r in reqs:
        lows = [Version(s.version) for s in r.specifier if s.operator == ">="]
        assert len(lows) == 1, f"{r}: every dependency declares one floor (>=), the version the min leg tests"
        floors[norm(r.name)] = lows[0]
    return floors


def constraint_blocks() -> list[dict[str, Version]]:
    """The constraints file's blocks (separated by a blank line) as {package: pinned version}."""
    blocks: list[dict[str, Version]] = [{}]
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            if blocks[-1]:
                blocks.append({})
            continue
        name, _, version = line.partition("==")
        assert version, f"{CONSTRAINTS.name}: {line!r} is not an exact pin"
        blocks[-1][norm(name)] = Version(version)
    return [b for b in blocks if b]


def test_the_constraints_first_block_is_pyprojects_floors():
    first, *rest = constraint_blocks()
    assert first == declared_floors()
    pinned_later = {n for b in rest for n in b}
    assert not pinned_later & set(first), "a floor is pinned twice"


def test_the_min_leg_runs_on_the_python_floor_with_these_constraints():
    assert pyproject()["requires-python"] == ">=3.10"
    leg = (ROOT / ".ci" / "min-versions").read_text()
    assert "sys.version_info[:2] != (3, 10)" in leg and "-c .ci/constraints-min.txt" in leg
    assert '-e ".[dev,wandb,eval]"' in leg  # every extra's floor is installed, so tested
    assert 'python -m pytest -m "not slow"' in leg
    assert "bash .ci/min-versions" in (ROOT / ".ci" / "run").read_text()


def test_the_install_page_states_the_floors():
    text = (ROOT / "docs" / "install.md").read_text()
    section = text.split("## Tested versions", 1)[1].split("\n## ", 1)[0]
    stated = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.match(r"^[\d.]+(, [\d.]+)*$", cells[1]):
            continue  # the header, its rule and the text around the table
        names = [n.strip() for n in cells[0].removeprefix("extras:").split(",")]
        versions = [Version(v) for v in cells[1].split(",")]
        assert len(names) == len(versions), row
        stated.update(zip(map(norm, names), versions))
    python = stated.pop("python")
    assert python == Version(pyproject()["requires-python"].removeprefix(">="))
    assert stated == declared_floors()
