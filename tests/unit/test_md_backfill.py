"""Gap detection and accounting for the gateway's backfill (pure), the local exchange's trade
ring, and the per-symbol last ids of a raw batch."""

from __future__ import annotations

import pytest

from backend.exchange.history import TradeHistory
from backend.exchange.wire import HistoricalTrade
from backend.marketdata import raw
from backend.marketdata.backfill import (
    Coverage,
    Filled,
    Gap,
    add_trades,
    describe,
    find_gap,
    lost_alert,
)
from backend.marketdata.raw import RawBatchBuilder
from backend.messages import RawTick


def trades(*ids: int) -> list[HistoricalTrade]:
    return [
        HistoricalTrade(
            id=i,
            price="1.5",
            qty="2.0000",
            quote_qty="3.00000000",
            time=1_700_000_000_000 + i,
            is_buyer_maker=bool(i % 2),
        )
        for i in ids
    ]


def test_find_gap_only_above_the_next_id() -> None:
    assert find_gap("BTCUSDT", None, 100) is None  # nothing seen yet: no gap to speak of
    assert find_gap("BTCUSDT", 99, 100) is None  # the next id
    assert find_gap("BTCUSDT", 100, 100) is None  # a repeat
    assert find_gap("BTCUSDT", 120, 100) is None  # older: a regression, not a gap
    g = find_gap("BTCUSDT", 99, 105)
    assert g == Gap("BTCUSDT", 100, 104) and g.size == 5
    assert find_gap("ETHUSDT", 7, 9) == Gap("ETHUSDT", 8, 8)


def test_coverage_of_a_complete_fetch_in_pages() -> None:
    cov = Coverage(Gap("X", 10, 19))
    assert [t.id for t in cov.take(trades(8, 9, 10, 11, 12))] == [10, 11, 12]  # before the gap: skipped
    assert not cov.done and cov.next == 13
    assert [t.id for t in cov.take(trades(12, 13, 14, 15, 16, 17, 18, 19, 20, 21))] == list(range(13, 20))
    assert cov.done and cov.beyond
    cov.finish()
    assert cov.holes == [] and cov.lost == 0 and cov.got == 10


def test_coverage_counts_what_the_history_no_longer_holds() -> None:
    cov = Coverage(Gap("X", 10, 29))
    cov.take(trades(15, 16, 17))  # the history starts at 15
    cov.take(trades(20, 21))  # and skips 18, 19
    assert not cov.done
    cov.finish()  # nothing after 21
    assert cov.holes == [(10, 14), (18, 19), (22, 29)]
    assert cov.lost == 5 + 2 + 8 and cov.got == 5
    assert cov.lost + cov.got == 20


def test_coverage_of_nothing_fetched() -> None:
    cov = Coverage(Gap("X", 10, 12))
    assert cov.take([]) == []
    cov.finish()
    assert cov.holes == [(10, 12)] and cov.lost == 3
    cov.finish()  # idempotent
    assert cov.holes == [(10, 12)]


def test_lost_alert_names_the_symbol_and_the_ranges() -> None:
    f = Filled(Gap("ETHUSDT", 100, 199), fetched=90, holes=[(100, 104), (150, 154)], reason="not held")
    a = lost_alert(f, source="gw-1", now_ns=123)
    assert a.kind == "md_gap" and a.source == "gw-1" and a.severity == "critical" and a.ts_ns == 123
    assert a.key == "md_gap:ETHUSDT:100-199"
    assert "ETHUSDT" in a.message and "100..104, 150..154" in a.message and "10 trade(s) lost" in a.message
    assert "not held" in a.message
    assert describe([(1, 1), (3, 4)]) == "1, 3..4"
    assert describe([(i, i) for i in range(8)], most=2) == "0, 1, and 6 more range(s)"


def test_history_trades_become_raw_ticks() -> None:
    b = RawBatchBuilder("gw")
    add_trades(b, "BTCUSDT", trades(5, 6), recv_ns=42)
    batch = b.build()
    t = raw.tick_at(batch, 1)
    assert t == RawTick(
        symbol="BTCUSDT",
        trade_id=6,
        price="1.5",
        qty="2.0000",
        trade_ns=(1_700_000_000_000 + 6) * 1_000_000,
        event_ns=(1_700_000_000_000 + 6) * 1_000_000,
        buyer_maker=False,
        recv_ns=42,
    )


def test_max_ids_per_symbol_of_a_raw_batch() -> None:
    b = RawBatchBuilder("gw")
    for sym, tid in [("A", 5), ("B", 9), ("A", 7), ("A", 6), ("B", 8)]:
        b.add(sym, tid, "1", "1", 1, 1, False, 1)
    assert raw.max_ids(b.build()) == {"A": 7, "B": 9}
    b.clear()
    b.add("C", 3, "1", "1", 1, 1, False, 1)
    assert raw.max_ids(b.build()) == {"C": 3}


def test_trade_history_ring_keeps_the_last_n_per_symbol() -> None:
    h = TradeHistory(["A", "B"], 4, [2, 6])
    assert h.trades("A", 0) == [] and h.span("A") is None
    for tid in range(100, 110):
        h.add(0, tid, 10.0 + tid / 100, 0.5, tid * 10, tid % 2 == 0)
    h.add(1, 7, 0.123456789, 1.23456, 70, False)
    assert h.span("A") == (106, 109) and h.span("B") == (7, 7)
    assert [t.id for t in h.trades("A", 0)] == [106, 107, 108, 109]  # older than held: from the oldest
    assert [t.id for t in h.trades("A", 108)] == [108, 109]
    assert h.trades("A", 110) == []  # nothing yet
    assert [t.id for t in h.trades("A", None, 2)] == [108, 109]  # the most recent
    assert [t.id for t in h.trades("A", 106, 3)] == [106, 107, 108]
    t = h.trades("A", 107, 1)[0]
    assert (t.price, t.qty, t.time, t.is_buyer_maker) == ("11.07", "0.5000", 1070, False)
    assert t.quote_qty == f"{11.07 * 0.5:.8f}"
    b = h.trades("B")[0]
    assert (b.id, b.price, b.qty) == (7, "0.123457", "1.2346")
    with pytest.raises(KeyError):
        h.trades("C")
    with pytest.raises(ValueError, match="at least 1"):
        TradeHistory(["A"], 0, [2])
