"""Latency recording in HDR histograms, reported as percentiles in milliseconds.

Percentiles and buckets are read off the running totals of the counts array (a C-speed copy and
`accumulate`, then bisection), not with hdrh's iterators: those step through the array's ~17,000
slots in Python, which took 50-170 ms per heartbeat and stalled the service's event loop with it.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from functools import lru_cache
from itertools import accumulate, pairwise

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000  # one minute
SIGNIFICANT = 3
OVERFLOW_MS = 1e9  # the bound of the last bucket: everything slower
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


def _cumulative(h: HdrHistogram) -> list[int]:
    """How many samples are at or below each slot of the counts array, up to the largest value's."""
    n = min(h.counts_len, h.get_counts_array_index(h.max_value) + 1) if h.max_value else h.counts_len
    cum = list(accumulate(h.counts[:n]))
    if not cum or cum[-1] != h.get_total_count():  # the largest value is not where we looked: all of it
        cum = list(accumulate(h.counts[: h.counts_len]))
    return cum


def _value_at_percentile(h: HdrHistogram, cum: list[int], percentile: float) -> int:
    """hdrh's get_value_at_percentile (percentile > 0) by bisection of the running totals."""
    i = bisect_left(cum, h.get_target_count_at_percentile(percentile))
    return h.get_highest_equivalent_value(h.get_value_from_index(min(i, len(cum) - 1)))


@lru_cache(maxsize=256)
def _last_slot_at_or_below(us: float) -> int:
    """The last slot of the counts array whose values all are <= `us` (-1: none); every histogram
    here has the same layout."""
    h = _LAYOUT
    return (
        bisect_right(range(h.counts_len), us, key=lambda i: h.get_highest_equivalent_value(h.get_value_from_index(i)))
        - 1
    )


def summary_ms(h: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/p999/max (ms) and count of a histogram recorded in microseconds."""
    if h.get_total_count() == 0:
        return {}
    cum = _cumulative(h)
    out = {k: _value_at_percentile(h, cum, p) / 1000.0 for k, p in PERCENTILES.items()}
    out["max"] = h.get_max_value() / 1000.0
    out["count"] = float(h.get_total_count())
    return out


_LAYOUT = new_histogram()


class LatencyRecorder:
    """A recent window (the last `window_s` to 2x`window_s` seconds) and a total since start."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.total = new_histogram()
        self._cur = new_histogram()
        self._prev = new_histogram()
        self._rotated = time.monotonic()
        self.sum_ns = 0
        """The sum of every value recorded since start (a Prometheus histogram's `_sum`)."""

    def record_ns(self, ns: int) -> None:
        us = max(LOWEST_US, min(HIGHEST_US, ns // 1000))
        self.sum_ns += ns
        self._cur.record_value(us)
        self.total.record_value(us)

    def record_us(self, us: float) -> None:
        self.record_ns(int(us * 1000))

    def _rotate(self) -> None:
        now = time.monotonic()
        if now - self._rotated >= self.window_s:
            self._prev, self._cur = self._cur, new_histogram()
            self._rotated = now

    def recent(self) -> HdrHistogram:
        self._rotate()
        merged = new_histogram()
        merged.add(self._prev)
        merged.add(self._cur)
        return merged

    def buckets_ms(self, bounds_ms: list[float], recent: bool = True) -> list[list[float]]:
        """[[upper bound ms, count], ...]: how many samples fell at or below each bound (and above
        the previous one); a last bucket (+inf) holds the rest."""
        h = self.recent() if recent else self.total
        if h.get_total_count() == 0:
            return [[b, 0] for b in [*bounds_ms, OVERFLOW_MS]]
        cum = _cumulative(h)
        at_or_below = [0]  # samples whose (highest equivalent) value is <= each bound
        for b in bounds_ms:
            slot = _last_slot_at_or_below(b * 1000.0)
            at_or_below.append(max(at_or_below[-1], cum[min(slot, len(cum) - 1)] if slot >= 0 else 0))
        at_or_below.append(cum[-1])
        counts = [hi - lo for lo, hi in pairwise(at_or_below)]
        return [[b, c] for b, c in zip([*bounds_ms, OVERFLOW_MS], counts, strict=True)]

    def summary_ms(self, recent: bool = True) -> dict[str, float]:
        return summary_ms(self.recent() if recent else self.total)
