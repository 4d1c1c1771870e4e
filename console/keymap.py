"""The config's `[keymap]` checked when the console starts: every id must name a key binding of the
console (its app, screens, modals and widgets), so a misspelt id is an error naming it, not a
remap that silently does nothing."""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Iterable

from textual.binding import Binding

from backend.errors import ConfigError

PACKAGES = ("console.screens", "widgets")
MODULES = ("console.app", "console.modals", "console.player")


def _modules() -> Iterable[object]:
    for name in MODULES:
        yield importlib.import_module(name)
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            yield importlib.import_module(f"{pkg_name}.{info.name}")


def binding_ids() -> set[str]:
    """The id of every key binding the console declares."""
    ids: set[str] = set()
    for mod in _modules():
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            for klass in cls.__mro__:
                for b in vars(klass).get("BINDINGS", []) or []:
                    if isinstance(b, Binding) and b.id:
                        ids.add(b.id)
    return ids


def check(keymap: dict[str, str]) -> None:
    """ConfigError naming each `[keymap]` id that is no binding's, with the nearest real one."""
    if not keymap:
        return
    known = binding_ids()
    wrong = [k for k in keymap if k not in known]
    if not wrong:
        return
    parts = []
    for k in wrong:
        near = difflib.get_close_matches(k, known, n=1)
        parts.append(f"{k!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    raise ConfigError(f"[keymap]: no key binding has the id {', '.join(parts)}; `?` in the console lists every id")
