"""backend and gates are headless: importing them must not import textual, and no file of theirs
names the console, in an import or in a module string (`-m console.cli`, `import_module(...)`):
the services, the exchange and the supervisor start through their own entry points."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

HEADLESS = ["backend", "gates"]
ROOT = Path(__file__).parents[2]
UI = ("console", "widgets")  # (textual is looked up, not imported, by a gate check: find_spec)
_MODULE_STRING = re.compile(rf"^({'|'.join(UI)})(\.\w+)*(:\w+)?$")


def ui_references(source: str) -> list[str]:
    """Where a Python source names a UI package: an import of it, or a string that is a module
    path into it ("console.cli", "console.cli:main")."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value] if _MODULE_STRING.match(node.value) else []
        else:
            continue
        out += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0].split(":")[0] in UI]
    return out


def test_the_check_sees_imports_and_module_strings() -> None:
    src = (
        "import console.cli\nfrom widgets import x\nfrom . import console\n"
        "cmd = [sys.executable, '-m', 'console.cli']\nimportlib.import_module('widgets.log')\n"
        "print('the console: see console/cli')\n"
    )
    assert ui_references(src) == [
        "line 1: console.cli",
        "line 2: widgets",
        "line 4: console.cli",
        "line 5: widgets.log",
    ]


@pytest.mark.parametrize("pkg", HEADLESS)
def test_headless_sources_do_not_name_the_console(pkg: str) -> None:
    bad = {
        str(f.relative_to(ROOT)): refs
        for f in sorted((ROOT / pkg).rglob("*.py"))
        if (refs := ui_references(f.read_text()))
    }
    assert bad == {}


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
