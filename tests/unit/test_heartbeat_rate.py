"""The heartbeat's rate means what it says: a service that writes in batches (sink-ticks flushes
every flush_s) shows its average over several flushes, not 0/s between flushes and a burst at
each (the console read "0/s pend 476" as a stall)."""

from __future__ import annotations

from backend.services.base import RATE_WINDOW_S, Rate
from backend.services.sink_ticks import SinkTicksService


def test_a_batch_writer_shows_its_average_rate_not_bursts() -> None:
    sink = SinkTicksService(redis_url="redis://127.0.0.1:1", config={"flush_s": 2.0})
    window = sink.rate_window_s()
    assert window == 10.0  # five flushes
    rate, written, rates = Rate(), 0, []
    for second in range(1, 41):  # 1,000 rows/s arriving, written 2,000 at a time every 2 s; a beat each second
        if second % 2 == 0:
            written += 2000
        rates.append(rate.update(1000.0 + second, written, window))
    steady = rates[12:]  # once a window has passed
    assert min(steady) >= 900 and max(steady) <= 1100, steady
    assert 0 not in rates[1:]  # never "0/s" while rows flow


def test_the_rate_falls_to_zero_within_a_window_once_nothing_moves() -> None:
    rate, n = Rate(), 0
    for s in range(10):
        n += 500
        assert rate.update(float(s), n, RATE_WINDOW_S) in (0.0, 500.0)
    for s in range(10, 11 + int(RATE_WINDOW_S)):
        last = rate.update(float(s), n, RATE_WINDOW_S)
    assert last == 0.0
