"""A gate's checklist: one row per check with its outcome and evidence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.widgets import DataTable

COLUMNS = ("check", "outcome", "req", "kind", "evidence")  # the outcome next to the name: never cut
GLYPH = {
    "passed": "✔ passed",
    "failed": "✘ failed",
    "inconclusive": "? inconclusive",
    "pending": "· pending",
    "running": "… running",
}


class Checklist(DataTable):
    DEFAULT_CSS = """
    Checklist { height: 1fr; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", **kw)
        self._cells: dict[str, tuple[str, ...]] = {}

    def on_mount(self) -> None:
        for c in COLUMNS:
            self.add_column(c, key=c)

    def set_checks(self, checks: Sequence[tuple[str, str, bool, str, str]]) -> None:
        """(id, kind, required, outcome, evidence) per check."""
        keep = {c[0] for c in checks}
        for key in [k.value for k in self.rows if k.value is not None and k.value not in keep]:
            self.remove_row(key)
            self._cells.pop(key, None)
        for cid, kind, req, outcome, ev in checks:
            cells = (cid, GLYPH.get(outcome, outcome), "yes" if req else "no", kind, ev)
            old = self._cells.get(cid)
            if old is None:
                self.add_row(*cells, key=cid)
                for col, val in zip(COLUMNS, cells, strict=True):  # widths sized as for an update
                    self.update_cell(cid, col, val, update_width=True)
            elif old != cells:  # any change redraws the whole table: change only what did
                for col, val, was in zip(COLUMNS, cells, old, strict=True):
                    if val != was:
                        self.update_cell(cid, col, val, update_width=True)
            self._cells[cid] = cells
