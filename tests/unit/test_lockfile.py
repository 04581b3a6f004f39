"""The Docker image installs docker/requirements.lock with --require-hashes. It must pin
every dependency pyproject.toml declares, at a version the declared range allows, each with
its hashes: otherwise the image silently drifts from the package (or fails to build)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "docker" / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked() -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes)."""
    pins: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            name = canonicalize_name(match[1])
            pins[name] = (Version(match[2]), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def test_lock_pins_every_declared_dependency_within_its_range() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]
    pins = locked()
    for text in declared:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"sys_platform": "linux"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not in {LOCK.name}"
        version, _ = pins[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"{LOCK.name} pins {req.name}=={version}, outside pyproject's {req.specifier}: refresh the lock"
        )


def test_every_pin_carries_hashes() -> None:
    pins = locked()
    assert len(pins) > 10
    unhashed = sorted(name for name, (_, hashes) in pins.items() if hashes == 0)
    assert not unhashed, f"pins without --hash (pip --require-hashes refuses them): {unhashed}"
