from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from console.data.snapshot import Snapshot
from console.screens.base import BaseScreen
from widgets.sparkline import SlaSparkline

COLS = ("symbol", "last", "change", "ticks/s", "volume")


class MarketScreen(BaseScreen):
    TITLE = "market"
    AUTO_FOCUS = "#quotes"

    _quotes: dict[str, tuple[str, ...]]
    _bars: list[tuple[str, ...]]

    def compose_body(self) -> ComposeResult:
        self._quotes, self._bars = {}, []
        with Vertical(id="market"):
            yield Static(id="tps", classes="panel-title")
            yield DataTable(id="quotes", cursor_type="row", zebra_stripes=True)
            yield Static("price", id="spark-title", classes="panel-title")
            yield SlaSparkline(id="spark")
            yield Static("latest 1s bars", classes="panel-title")
            yield DataTable(id="bars", zebra_stripes=True)

    def on_mount(self) -> None:
        q = self.query_one("#quotes", DataTable)
        for c in COLS:
            q.add_column(c, key=c)
        self.query_one("#bars", DataTable).add_columns(
            "start", "symbol", "open", "high", "low", "close", "volume", "trades"
        )
        super().on_mount()

    def render_snapshot(self, snap: Snapshot) -> None:
        self.set_text("#tps", f"[b]{snap.total_tps:,.0f}[/b] ticks/s on md.ticks")
        q = self.query_one("#quotes", DataTable)
        seen = set()
        for m in snap.market:
            if not self.matches(m.symbol):
                continue
            seen.add(m.symbol)
            cells = (m.symbol, f"{m.last:,.6g}", f"{m.change_pct:+.3f}%", f"{m.ticks_per_s:,.0f}", f"{m.volume:,.2f}")
            old = self._quotes.get(m.symbol)
            if old is None:
                q.add_row(*cells, key=m.symbol)
            else:
                for c, v, was in zip(COLS, cells, old, strict=True):
                    if v != was:
                        q.update_cell(m.symbol, c, v)
            self._quotes[m.symbol] = cells
        for key in [k.value for k in q.rows if k.value is not None and k.value not in seen]:
            q.remove_row(key)
            self._quotes.pop(key, None)
        row = q.cursor_row if q.row_count else None
        sel = q.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value if row is not None and q.row_count else None
        pick = next((m for m in snap.market if m.symbol == sel), snap.market[0] if snap.market else None)
        if pick:
            self.set_text("#spark-title", f"{pick.symbol} price")
            self.query_one("#spark", SlaSparkline).set_values(pick.spark)
        rows: list[tuple[str, ...]] = [
            (
                b.start,
                b.symbol,
                f"{b.open:,.6g}",
                f"{b.high:,.6g}",
                f"{b.low:,.6g}",
                f"{b.close:,.6g}",
                f"{b.volume:,.3f}",
                str(b.trades),
            )
            for b in snap.bars
            if self.matches(b.symbol)
        ]
        if rows != self._bars:  # new bars close once a second: redraw the table only then
            self._bars = rows
            bars = self.query_one("#bars", DataTable)
            bars.clear()
            for bar_row in rows:
                bars.add_row(*bar_row)
