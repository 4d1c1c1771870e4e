"""A table of rows by key, in the order given: redrawn only when its rows changed, the cursor kept
on the row it was on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable


class KeyedTable(DataTable):
    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[str], **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.column_names = tuple(columns)
        self._rows: tuple[tuple[str, tuple[Text, ...]], ...] = ()
        self._given: tuple[tuple[str, tuple[str | Text, ...]], ...] = ()

    def on_mount(self) -> None:
        for c in self.column_names:
            self.add_column(c, key=c)

    def set_columns(self, columns: Sequence[str]) -> None:
        """Other columns (and no rows until the next set_rows)."""
        if tuple(columns) == self.column_names:
            return
        self.column_names = tuple(columns)
        self.clear(columns=True)
        self._rows, self._given = (), ()
        for c in self.column_names:
            self.add_column(c, key=c)

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value

    def set_rows(self, rows: Sequence[tuple[str, Sequence[str | Text]]]) -> None:
        """(key, cells) per row: exactly these, in this order. A str cell is shown as it is (no
        markup: an alert's message may hold brackets); a Text keeps its style."""
        given = tuple((k, tuple(cells)) for k, cells in rows)
        if given == self._given:  # unchanged: nothing built, nothing drawn
            return
        self._given = given
        new = tuple((k, tuple(c if isinstance(c, Text) else Text(c) for c in cells)) for k, cells in given)
        selected = self.selected_key
        self._rows = new
        self.clear()
        for key, cells in new:
            self.add_row(*cells, key=key)
        if selected is not None and any(k == selected for k, _ in new):
            self.move_cursor(row=self.get_row_index(selected), animate=False, scroll=False)
