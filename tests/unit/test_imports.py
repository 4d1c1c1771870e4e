"""backend and gates are headless: importing them must not import textual."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEADLESS = ["backend", "gates"]


@pytest.mark.parametrize("pkg", HEADLESS)
def test_headless_packages_do_not_import_textual(pkg: str) -> None:
    code = f"""
import importlib, pkgutil, sys
import {pkg}
for m in pkgutil.walk_packages({pkg}.__path__, prefix="{pkg}."):
    importlib.import_module(m.name)
bad = sorted(n for n in sys.modules if n == "textual" or n.startswith("textual.")
             or n.startswith(("console", "widgets")))
print(",".join(bad))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{pkg} imported: {out.stdout.strip()}"


def test_widgets_do_not_import_backend() -> None:
    code = """
import importlib, pkgutil, sys
import widgets
for m in pkgutil.walk_packages(widgets.__path__, prefix="widgets."):
    importlib.import_module(m.name)
print(",".join(sorted(n for n in sys.modules if n.startswith(("backend", "gates", "redis")))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_cli_starts_without_pandas() -> None:
    """Every `tradeops` command (the console among them) builds the whole parser first: pandas
    loads only in the commands that use it (it cost 0.2 s of every start)."""
    code = """
import sys
from console.cli import build_parser
build_parser()
print("pandas" if "pandas" in sys.modules else "")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the CLI parser imported: {out.stdout.strip()}"
