"""The venv holds exactly what the committed locks pin, and the locks agree with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(name: str) -> dict[str, str]:
    """A lock file's {canonical name: version}; each pin must carry hashes."""
    text = (LOCKS / name).read_text(encoding="utf-8")
    found = {canonicalize_name(m.group(1)): m.group(2) for m in map(PIN.match, text.splitlines()) if m}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
    assert unhashed == [], f"{name}: pins without hashes"
    return found


def test_the_venv_holds_exactly_the_locked_versions():
    """What `make test` installed: requirements/dev-airflow.txt plus the build tools, nothing else."""
    expected = {**pins("build.txt"), **pins("dev-airflow.txt")}
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("cdp-lakehouse")
    assert {n: v for n, v in installed.items() if expected.get(n) != v} == {}
    assert {n: v for n, v in expected.items() if installed.get(n) != v} == {}


def test_every_lock_agrees_with_the_full_one():
    full = pins("dev-airflow.txt")
    for name in ("dev.txt", "runtime.txt", "build.txt"):
        subset = pins(name)
        assert {n: v for n, v in subset.items() if full.get(n, v) != v} == {}, name
    assert set(pins("runtime.txt")) < set(pins("dev.txt")) < set(full)


def test_locked_versions_satisfy_the_ranges_pyproject_declares():
    """Someone installing the wheel gets the ranges; the locks must lie inside them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {
        "runtime.txt": project["dependencies"],
        "dev.txt": project["dependencies"] + project["optional-dependencies"]["dev"],
        "dev-airflow.txt": [r for extra in ("dev", "airflow") for r in project["optional-dependencies"][extra]],
    }
    for lock, requirements in declared.items():
        locked = pins(lock)
        for requirement in map(Requirement, requirements):
            if requirement.marker is not None and not requirement.marker.evaluate({"python_version": "3.11"}):
                continue
            version = locked.get(canonicalize_name(requirement.name))
            assert version is not None, f"{lock} does not pin {requirement.name}"
            assert requirement.specifier.contains(version, prereleases=True), (lock, str(requirement), version)
