"""An order blotter: rows updated by key, newest first, with follow mode that stops when the
operator scrolls away and counts the rows that arrived since."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.coordinate import Coordinate
from textual.widgets import DataTable


class BlotterTable(DataTable):
    DEFAULT_CSS = """
    BlotterTable { height: 1fr; }
    """
    # the state next to the time: in view on a narrow terminal (80 columns), where the rest scrolls
    COLUMNS = ("time", "state", "client id", "account", "symbol", "side", "qty", "price", "filled", "reason")

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.follow = True
        self.new_since_pause = 0
        self._cells: dict[str, tuple[str, ...]] = {}
        self._placing = False  # the table moves the cursor itself: not the operator scrolling

    def on_mount(self) -> None:
        for c in self.COLUMNS:
            self.add_column(c, key=c)

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value

    def set_rows(self, rows: Sequence[tuple[str, Sequence[str]]]) -> None:
        """(key, cells) newest first: exactly these rows are shown. Existing rows update in place,
        new ones are added, the others (filtered out, aged out) are removed. While not following,
        the cursor stays on the order it was on."""
        self._placing = True
        try:
            self._set_rows(rows)
        finally:
            self._placing = False

    def _set_rows(self, rows: Sequence[tuple[str, Sequence[str]]]) -> None:
        keep = {key for key, _ in rows}
        selected = self.selected_key
        gone = [k for k in self._cells if k not in keep]
        for key in gone:
            self.remove_row(key)
            del self._cells[key]
        new = 0
        for key, cells in reversed(rows):
            cells = tuple(cells)
            old = self._cells.get(key)
            if old == cells:
                continue  # unchanged: no work
            if old is not None:
                for col, val, was in zip(self.COLUMNS, cells, old, strict=True):
                    if val != was:
                        self.update_cell(key, col, val, update_width=True)
            else:
                self.add_row(*cells, key=key)
                new += 1
            self._cells[key] = cells
        if new:
            self.sort("time", "client id", reverse=True)
        if not (new or gone):
            return
        if self.follow:
            self.move_cursor(row=0, animate=False)
        else:
            self.new_since_pause += new
            if selected in self._cells:
                self.move_cursor(row=self.get_row_index(selected), animate=False, scroll=False)

    def watch_cursor_coordinate(self, old: Coordinate, new: Coordinate) -> None:
        super().watch_cursor_coordinate(old, new)
        if self._placing:
            return
        self.follow = new.row == 0
        if self.follow:
            self.new_since_pause = 0
