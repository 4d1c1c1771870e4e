"""A document of headed sections (a service's sheet on the migration board): plain strings in,
shown as they are (no markup is read from them), scrollable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static


class SheetView(VerticalScroll):
    DEFAULT_CSS = """
    SheetView { border: round $panel; padding: 0 1; }
    SheetView:focus { border: round $accent; }
    SheetView > Static { width: 1fr; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._shown: tuple[str, tuple[tuple[str, tuple[str, ...]], ...]] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="sheet-body")

    def show(self, title: str, sections: Sequence[tuple[str, Sequence[str]]]) -> None:
        """`title` on the border; each section a bold heading and its lines, indented."""
        key = (title, tuple((h, tuple(lines)) for h, lines in sections))
        if key == self._shown:
            return
        self._shown = key
        self.border_title = title
        body = Text()
        for i, (head, lines) in enumerate(sections):
            if i:
                body.append("\n")
            body.append(head + "\n", style="bold")
            for line in lines:
                body.append("  " + line + "\n")
        self.query_one("#sheet-body", Static).update(body)
        self.scroll_home(animate=False)

    @property
    def text(self) -> str:
        """What it shows, as plain text (tests)."""
        if self._shown is None:
            return ""
        return "\n".join([self._shown[0]] + [f"{h}\n" + "\n".join(lines) for h, lines in self._shown[1]])
