"""Health tiles: one per service or infrastructure piece, coloured by state."""

from __future__ import annotations

from textual.widgets import Static

STATES = ("ok", "degraded", "down", "idle", "absent")


class HealthTile(Static):
    DEFAULT_CSS = """
    HealthTile { width: 1fr; height: 4; padding: 0 1; border: round $panel; border-title-align: left; }
    HealthTile.-ok { border: round $success; }
    HealthTile.-degraded { border: round $warning; }
    HealthTile.-down { border: round $error; }
    HealthTile.-idle { border: round $panel; color: $text-muted; }
    HealthTile.-absent { border: round $panel; color: $text-disabled; }
    """

    _shown: tuple[str, str, tuple[str, ...]] | None = None

    def show_state(self, title: str, state: str, lines: list[str]) -> None:
        if self._shown == (title, state, tuple(lines)):
            return  # unchanged: no repaint
        self._shown = (title, state, tuple(lines))
        for s in STATES:
            self.set_class(s == state, f"-{s}")
        self.border_title = title
        self.border_subtitle = state
        self.update("\n".join(lines), layout=False)  # a tile's size never depends on its text
