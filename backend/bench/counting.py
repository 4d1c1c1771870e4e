"""What the load benchmarks count once the load has stopped and everything has drained, read back
from the streams (and the tick store): `bench cutover` and `bench faults` count the same way.

- ticks: every trade the exchange sent to the gateway (per symbol, from the first trade id that
  reached md.ticks.raw to the last id the exchange says it sent) on md.ticks exactly once, by
  trade id; the same for the Parquet tick store;
- orders: every order submitted (by client order id) with one NEW event, one final state, routed
  to the venue once and placed there once (one `accepted` report);
- fills and positions: no trade id reported for two orders or quantities, no fill ptrc could not
  book, and ptrc's positions the ones the OMS's orders make;
- alerts still active.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from backend.bench.md_pipeline import delivered_ids
from backend.bus import codec, streams
from backend.marketdata import raw as rawcols
from backend.messages import (
    FINAL_STATES,
    ExecOrder,
    ExecReport,
    OrderEvent,
    RawTickBatch,
)
from backend.trading.orders import OrderRecord, record_key

_raw = msgspec.msgpack.Decoder(RawTickBatch)
_ev = msgspec.msgpack.Decoder(OrderEvent)
_eo = msgspec.msgpack.Decoder(ExecOrder)
_rep = msgspec.msgpack.Decoder(ExecReport)
_rec = msgspec.msgpack.Decoder(OrderRecord)
PAGE = 5000


def entries(r: Any, stream: str) -> Any:
    """Every entry of `stream`, oldest first, read a page at a time."""
    start = "-"
    while True:
        page = r.xrange(stream, min=start, count=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0].decode()


def raw_first_ids(r: Any) -> dict[str, int]:
    """Per symbol, the first trade id the gateway wrote to md.ticks.raw."""
    first: dict[str, int] = {}
    for _, f in entries(r, streams.MD_TICKS_RAW):
        b = _raw.decode(codec.payload(f))
        ids, codes = rawcols.ints(b, "trade_id"), rawcols.codes(b)
        for k, sym in enumerate(b.symbols):
            sel = ids[codes == k]
            if len(sel):
                first[sym] = min(first.get(sym, int(sel.min())), int(sel.min()))
    return first


def expected_ranges(r: Any, last_ids: dict[str, int], *seen: dict[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """Per symbol, the trade ids that must have arrived: from the first the gateway wrote to the
    last the exchange sent (`last_ids`, what it said when it stopped). md.ticks.raw is trimmed to
    its memory budget, so its first entry may be later than the run's first trade: the smallest id
    of any other place that kept them (`seen`: md.ticks, the store) starts the range then, so the
    early ticks are counted too."""
    first = raw_first_ids(r)
    for ids_by_symbol in seen:
        for sym, ids in ids_by_symbol.items():
            if len(ids) and sym in first:
                first[sym] = min(first[sym], int(ids.min()))
    return {sym: (lo, last_ids[sym]) for sym, lo in first.items()}


def lost_and_duplicated(ranges: dict[str, tuple[int, int]], got: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """(sent, lost, duplicated): of each symbol's range, the ids not in `got`; and every id of
    `got` there more than once."""
    sent = lost = dup = 0
    for sym, (lo, hi) in ranges.items():
        ids = got.get(sym, np.empty(0, np.int64))
        uniq = np.unique(ids[(ids >= lo) & (ids <= hi)])
        sent += hi - lo + 1
        lost += hi - lo + 1 - len(uniq)
    for ids in got.values():
        dup += len(ids) - len(np.unique(ids))
    return int(sent), int(lost), int(dup)


def tick_counts(r: Any, ranges: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """md.ticks against the exchange's ranges: sent, delivered, lost, duplicated, dead-lettered."""
    got, _ = delivered_ids(r)
    sent, lost, dup = lost_and_duplicated(ranges, got)
    return {
        "ticks_sent": sent,
        "ticks_delivered": int(sum(len(v) for v in got.values())),
        "ticks_lost": lost,
        "ticks_duplicated": dup,
        "ticks_dead_lettered": r.xlen(streams.dlq(streams.MD_TICKS_RAW)),
    }


def stored_ids(data_dir: Path) -> dict[str, np.ndarray]:
    """Every trade id in the Parquet tick store by symbol (repeats kept), read back with pyarrow."""
    from backend.marketdata import (
        store,  # pandas and pyarrow: loaded by the benchmarks that read the store
    )

    df = store.read_ticks(data_dir)
    return {str(sym): g["trade_id"].to_numpy(np.int64) for sym, g in df.groupby("symbol")}


def store_counts(data_dir: Path, ranges: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The tick store against the exchange's ranges: rows, lost, duplicated."""
    got = stored_ids(data_dir)
    _, lost, dup = lost_and_duplicated(ranges, got)
    return {
        "ticks_stored": int(sum(len(v) for v in got.values())),
        "ticks_lost_store": lost,
        "ticks_duplicated_store": dup,
    }


def order_counts(r: Any, coids: list[str]) -> dict[str, Any]:
    """What became of each order submitted (`coids`), from orders.events, exec.orders and
    exec.reports: final (one final state), lost (no event at all), not final (events, none
    final), duplicated (more than one NEW event, final state, routing or venue placement)."""
    news: Counter[str] = Counter()
    seen: set[str] = set()
    finals: dict[str, list[str]] = defaultdict(list)
    for _, f in entries(r, streams.ORDERS_EVENTS):
        ev = _ev.decode(codec.payload(f))
        seen.add(ev.client_order_id)
        if ev.state == "NEW":
            news[ev.client_order_id] += 1
        elif ev.state in FINAL_STATES:
            finals[ev.client_order_id].append(ev.state)
    routed: Counter[str] = Counter()
    for _, f in entries(r, streams.EXEC_ORDERS):
        eo = _eo.decode(codec.payload(f))
        if eo.action == "new":
            routed[eo.client_order_id] += 1
    placed: Counter[str] = Counter()
    for _, f in entries(r, streams.EXEC_REPORTS):
        rep = _rep.decode(codec.payload(f))
        if rep.kind == "accepted":
            placed[rep.client_order_id] += 1
    final = [c for c in coids if finals.get(c)]
    dup = [c for c in coids if len(finals.get(c, ())) > 1 or news[c] > 1 or routed[c] > 1 or placed[c] > 1]
    return {
        "orders_sent": len(coids),
        "orders_final": len(final),
        "orders_lost": sum(1 for c in coids if c not in seen),
        "orders_not_final": sum(1 for c in coids if c in seen and not finals.get(c)),
        "orders_duplicated": len(dup),
        "order_states": dict(Counter(finals[c][0] for c in final)),
    }


def final_orders(r: Any, coids: set[str], cursor: str = "-") -> tuple[set[str], str]:
    """Of `coids`, those with a final state on orders.events after `cursor` (an entry id, "-" for
    all), and the new cursor: polled while waiting for orders to finish."""
    done: set[str] = set()
    start = cursor
    while True:
        page = r.xrange(streams.ORDERS_EVENTS, min=start, count=PAGE)
        for _, f in page:
            ev = _ev.decode(codec.payload(f))
            if ev.state in FINAL_STATES and ev.client_order_id in coids:
                done.add(ev.client_order_id)
        if page:
            cursor = page[-1][0].decode()
            start = "(" + cursor
        if len(page) < PAGE:
            return done, cursor


def fill_counts(r: Any, coids: list[str], ptrc_duplicates: int | None) -> dict[str, Any]:
    """Every fill's trade id used once, none ptrc could not book (dead-lettered breaks), and
    ptrc's positions the ones the OMS's orders (`coids`) make; `ptrc_duplicates` from its
    heartbeat."""
    from backend.posttrade.reconcile import (
        differences,
        expected_positions,
        reused_trade_ids,
    )
    from backend.services.ptrc import read_positions

    pipe = r.pipeline(transaction=False)
    for c in coids:
        pipe.hget(record_key(c), "d")
    records = {c: _rec.decode(d) for c, d in zip(coids, pipe.execute(), strict=True) if d}
    reports = [_rep.decode(codec.payload(f)) for _, f in entries(r, streams.EXEC_REPORTS)]
    booked = read_positions(r)
    expected = expected_positions(records, reports)
    return {
        "fills": sum(rep.kind == "fill" for rep in reports),
        "trade_ids_reused": reused_trade_ids(reports),
        # dead letters of the reports: the OMS's (exec.reports) and ptrc's breaks (its copy)
        "fills_broken": sum(r.xlen(streams.dlq(s)) for s in (streams.EXEC_REPORTS, streams.EXEC_REPORTS_PTRC)),
        "fills_repeated": ptrc_duplicates,
        "positions": len(expected),
        "positions_wrong": differences(expected, booked),
    }


def active_alerts(r: Any) -> list[str]:
    """The alerts still active, as `key: message`."""
    from backend.services.alerting import active

    return [f"{k}: {a.message}" for k, a in sorted(active(r), key=lambda x: x[0])]
