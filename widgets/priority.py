"""The migration board's column: one priority, a card per service with its state and health."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.widgets import ListItem, ListView, Static


class PriorityColumn(ListView):
    DEFAULT_CSS = """
    PriorityColumn { width: 1fr; height: 1fr; border: round $panel; }
    PriorityColumn:focus-within { border: round $accent; }
    PriorityColumn > ListItem { padding: 0 1; height: 3; }
    PriorityColumn > ListItem.-migrated { color: $success; }
    PriorityColumn > ListItem.-failed { color: $error; }
    PriorityColumn > ListItem.-deploying, PriorityColumn > ListItem.-validating { color: $warning; }
    """

    def __init__(self, priority: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.priority = priority
        self.border_title = f"P{priority}"
        self.services: list[str] = []
        self._cards: dict[str, tuple[ListItem, Static]] = {}
        self._shown: dict[str, tuple[str, str]] = {}

    def set_cards(self, cards: Sequence[tuple[str, str, str]]) -> None:
        """(service, migration state, health) per card, in order."""
        names = [c[0] for c in cards]
        if names != self.services:
            self.clear()
            self.services = names
            self._cards = {}
            self._shown = {}
            for name, state, health in cards:
                label = Static(f"{name}\n{state} · {health}")
                item = ListItem(label)
                self._cards[name] = (item, label)
                self.append(item)
            if names and self.index is None:
                self.index = 0
        for name, state, health in cards:
            if self._shown.get(name) == (state, health):
                continue  # unchanged: no repaint
            self._shown[name] = (state, health)
            item, label = self._cards[name]
            for s in ("planned", "deploying", "validating", "migrated", "failed", "rolled_back"):
                item.set_class(s == state, f"-{s}")
            label.update(f"{name}\n{state} · {health}", layout=False)  # a card is always 2 lines

    @property
    def selected(self) -> str | None:
        i = self.index
        return self.services[i] if i is not None and 0 <= i < len(self.services) else None
