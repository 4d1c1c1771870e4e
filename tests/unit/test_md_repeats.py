"""The normalizer's validator and repeats: while two gateways publish the same trades (a
blue/green overlap), the second copy of a published tick is counted as a repeat, not rejected;
a tick at or below the mark that was not published, or with other values, is still a duplicate."""

from __future__ import annotations

import time

from backend.marketdata import raw
from backend.marketdata import ticks as tickcols
from backend.marketdata.normalize import TickValidator, Validated
from backend.messages import RawTick, RawTickBatch

NOW = time.time_ns()


def tick(tid: int, price: str = "", sym: str = "BTCUSDT") -> RawTick:
    return RawTick(sym, tid, price or f"{100 + tid}.5", "0.25", NOW + tid, NOW, False, NOW)


def batch(ticks: list[RawTick], source: str) -> RawTickBatch:
    return raw.build(ticks, source)


def ids(v: Validated) -> list[int]:
    return [t.trade_id for t in tickcols.iter_ticks(v.ticks)] if v.ticks is not None else []


def test_an_overlap_of_two_gateways_counts_repeats() -> None:
    v = TickValidator(["BTCUSDT", "ETHUSDT"])
    legacy = [tick(i) for i in range(1, 11)] + [tick(i, sym="ETHUSDT") for i in range(1, 4)]
    target = [tick(i) for i in range(5, 16)] + [tick(i, sym="ETHUSDT") for i in range(2, 6)]
    first = v.validate([batch(legacy, "gateway-legacy")], NOW)
    assert (ids(first), first.repeats, first.rejected) == ([*range(1, 11), 1, 2, 3], 0, [])
    # the target's batch, and the legacy's next one, in one read: each trade once, the rest repeats
    both = v.validate([batch(target, "gateway-target"), batch([tick(i) for i in range(11, 18)], "gateway-legacy")], NOW)
    assert ids(both) == [11, 12, 13, 14, 15, 4, 5, 16, 17]
    assert (both.repeats, both.rejected) == (6 + 2 + 5, [])


def test_a_copy_with_other_values_or_an_id_never_published_is_still_a_duplicate() -> None:
    v = TickValidator(["BTCUSDT"])
    v.load_hwm({"BTCUSDT": 100})  # a restart: ids up to 100 were accepted before, none remembered
    v.validate([batch([tick(i) for i in range(101, 106)], "a")], NOW)
    res = v.validate([batch([tick(50), tick(102, price="1.5"), tick(103)], "b")], NOW)
    assert ids(res) == [] and res.repeats == 1
    assert [r.reason for r in res.rejected] == [
        "duplicate trade id 50 for BTCUSDT (already seen up to 105)",
        "duplicate trade id 102 for BTCUSDT with another price, quantity, time or side than the tick published",
    ]


def test_repeats_are_recognised_among_the_newest_published_only() -> None:
    v = TickValidator(["BTCUSDT"], remember=10)
    for start in range(1, 40, 5):
        v.validate([batch([tick(i) for i in range(start, start + 5)], "a")], NOW)
    res = v.validate([batch([tick(2), tick(39)], "b")], NOW)  # 2 is long forgotten, 39 is recent
    assert res.repeats == 1 and [r.reason for r in res.rejected] == [
        "duplicate trade id 2 for BTCUSDT (already seen up to 40)"
    ]


def test_a_batch_overtaken_by_the_other_gateways_newer_one_is_late_not_a_duplicate() -> None:
    v = TickValidator(["BTCUSDT"])
    v.validate([batch([tick(i) for i in range(1, 5)], "gateway-legacy")], NOW)
    # the target connected at trade 8 and published first; the legacy's 5..9 come after it
    first = v.validate([batch([tick(i) for i in range(8, 12)], "gateway-target")], NOW)
    late = v.validate([batch([tick(i) for i in range(5, 10)], "gateway-legacy")], NOW)
    assert (ids(first), ids(late), late.repeats, late.rejected) == ([8, 9, 10, 11], [5, 6, 7], 2, [])
