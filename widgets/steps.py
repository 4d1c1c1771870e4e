"""A service's migration checklist (the plan's eight steps): each step ticked or not, how it is
ticked (observed by the platform, or attested by an operator) and the evidence; hours estimated
against logged. Plain values in; scrollable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

Row = tuple[str, str, bool, str]  # step, "auto" | "manual", done, evidence


class StepsView(VerticalScroll):
    DEFAULT_CSS = """
    StepsView { border: round $panel; padding: 0 1; }
    StepsView:focus { border: round $accent; }
    StepsView > Static { width: 1fr; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._shown: tuple[str, tuple[Row, ...], tuple[float, float]] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="steps-body")

    def show(self, title: str, rows: Sequence[Row], hours: tuple[float, float]) -> None:
        """`title` on the border; a summary line, then each step with its evidence below it."""
        key = (title, tuple(tuple(r) for r in rows), tuple(hours))
        if key == self._shown:
            return
        self._shown = key  # type: ignore[assignment]
        self.border_title = title
        est, logged = hours
        done = sum(1 for r in rows if r[2])
        body = Text()
        body.append(f"{done} of {len(rows)} steps done", style="bold")
        body.append(f" · {logged:g} of {est:g} estimated hours logged\n")
        legend = "✔ done · ○ to do; auto: ticked by what the platform sees; manual: attested by an operator"
        body.append(legend + "\n", style="dim")
        for step, how, ok, evidence in rows:
            body.append("✔ " if ok else "○ ", style="green" if ok else "yellow")
            body.append(step, style="bold" if not ok else "")
            body.append(f"  {how}\n", style="dim")
            body.append(f"    {evidence}\n")
        self.query_one("#steps-body", Static).update(body)

    @property
    def text(self) -> str:
        """What it shows, as plain text (tests)."""
        return str(self.query_one("#steps-body", Static).render())
