"""The production Dockerfile stays in step with the package: every package the distribution
ships is copied in, it installs the package, runs as a non-root user, `tradeops` is the entrypoint.
(Building it needs a registry for python:3.11-slim; the docker runtime tests use the local image.)"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_dockerfile_ships_the_package_as_a_non_root_tradeops_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0].startswith("FROM python:3.11-slim")
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
    assert {p.rstrip("*") for p in packages} <= copied
    assert "COPY pyproject.toml README.md ./" in lines
    user = [ln for ln in lines if ln.startswith("USER ")][-1].split()[1]
    assert not user.startswith(("root", "0"))
    entry = [ln for ln in lines if ln.startswith("ENTRYPOINT ")][-1]
    assert json.loads(entry.removeprefix("ENTRYPOINT ")) == ["tradeops"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
