"""A service's place in the dependency graph, drawn: what it needs (upstream, left) joined into it,
what needs it (downstream, right) fanned out of it, with their migration states, and everything
that needs it directly or not (what breaks if it moves). Plain values in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

# (up, down, left, right) -> the box-drawing joint
JOINTS = {
    (False, False, True, True): "─",
    (False, True, True, False): "┐",
    (True, False, True, False): "┘",
    (True, True, True, False): "┤",
    (True, True, False, False): "│",
    (False, True, True, True): "┬",
    (True, False, True, True): "┴",
    (True, True, True, True): "┼",
    (False, True, False, True): "┌",
    (True, False, False, True): "└",
    (True, True, False, True): "├",
    (False, False, False, False): " ",
}


def _spine(n: int, items: range, center: int, *, items_left: bool) -> list[str]:
    """The joint column of a fan: items on rows `items` join the center row (left: into it)."""
    if not len(items):
        return [" "] * n
    top, bottom = min(items.start, center), max(items.stop - 1, center)
    out = []
    for r in range(n):
        if not top <= r <= bottom:
            out.append(" ")
            continue
        has, is_c = r in items, r == center
        left, right = (has, is_c) if items_left else (is_c, has)
        out.append(JOINTS[(r > top, r < bottom, left, right)])
    return out


def draw(service: str, label: str, needs: Sequence[str], needed_by: Sequence[str]) -> list[str]:
    """The graph as lines of text (what the widget shows; tests read it)."""
    n = max(len(needs), len(needed_by), 1)
    c = (n - 1) // 2
    lo = c - (len(needs) - 1) // 2 if needs else 0
    ro = c - (len(needed_by) - 1) // 2 if needed_by else 0
    lrows, rrows = range(lo, lo + len(needs)), range(ro, ro + len(needed_by))
    ls, rs = _spine(n, lrows, c, items_left=True), _spine(n, rrows, c, items_left=False)
    wl = max((len(x) for x in needs), default=0)
    box = f"[ {service} {label} ]"
    lines = []
    for r in range(n):
        left = (f"{needs[r - lo]:<{wl}} ─" if r in lrows else " " * (wl + 2)) if needs else ""
        mid = ("─▶ " + box if needs else box) if r == c else " " * (len(box) + (3 if needs else 0))
        right = (" ─" if r == c and needed_by else "  ") + rs[r] + (f"─▶ {needed_by[r - ro]}" if r in rrows else "")
        lines.append((left + ls[r] if needs else "") + mid + (right if needed_by else ""))
    return [ln.rstrip() for ln in lines]


def draw_tall(service: str, label: str, needs: Sequence[str], needed_by: Sequence[str]) -> list[str]:
    """The same graph top to bottom, for a narrow panel: what it needs joined above it, what needs
    it fanned out below."""
    wl = max((len(x) for x in needs), default=0)
    spine = wl + 2 if needs else 2
    lines = []
    for i, name in enumerate(needs):
        last = i == len(needs) - 1
        joint = ("─" if len(needs) == 1 else "┘") if last else ("┐" if i == 0 else "┤")
        lines.append(f"{name:<{wl}} ─{joint}")
    if needs:
        lines.append(" " * spine + "▼")
    box = f"[ {service} {label} ]"
    lines.append(" " * max(0, spine - 2) + box)
    if needed_by:
        lines.append(" " * spine + "│")
        for i, name in enumerate(needed_by):
            lines.append(" " * spine + ("└" if i == len(needed_by) - 1 else "├") + "─▶ " + name)
    return lines


class DependencyGraph(VerticalScroll):
    DEFAULT_CSS = """
    DependencyGraph { border: round $panel; padding: 0 1; }
    DependencyGraph:focus { border: round $accent; }
    DependencyGraph > Static { width: auto; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._shown: tuple[Any, ...] | None = None
        self.lines: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(id="graph-body")

    def show(
        self,
        title: str,
        service: str,
        label: str,
        needs: Sequence[str],
        needed_by: Sequence[str],
        breaks: Sequence[str],
    ) -> None:
        """`needs` / `needed_by`: "name (state)" of its direct neighbours; `breaks`: everything that
        needs it, directly or through others."""
        key = (title, service, label, tuple(needs), tuple(needed_by), tuple(breaks))
        if key == self._shown:
            return
        self._shown = key
        self.border_title = title
        self._draw()

    def on_resize(self) -> None:
        if self._shown is not None:
            self._draw()

    def _draw(self) -> None:
        """Left to right when it fits the panel, top to bottom when it does not."""
        assert self._shown is not None
        _, service, label, needs, needed_by, breaks = self._shown
        wide = draw(service, label, needs, needed_by)
        fits = max((len(x) for x in wide), default=0) <= max(0, self.content_size.width)
        self.lines = wide if fits or not self.content_size.width else draw_tall(service, label, needs, needed_by)
        body = Text()
        body.append("needs ▶ service ▶ needed by\n", style="dim")
        body.append("\n".join(self.lines) + "\n\n")
        body.append("if it moves, these need it: ", style="bold")
        body.append(", ".join(breaks) if breaks else "nothing")
        self.query_one("#graph-body", Static).update(body)
