"""Latency recording in HDR histograms, reported as percentiles in milliseconds."""

from __future__ import annotations

import time

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000  # one minute
SIGNIFICANT = 3
OVERFLOW_MS = 1e9  # the bound of the last bucket: everything slower
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


def summary_ms(h: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/p999/max (ms) and count of a histogram recorded in microseconds."""
    if h.get_total_count() == 0:
        return {}
    out = {k: h.get_value_at_percentile(p) / 1000.0 for k, p in PERCENTILES.items()}
    out["max"] = h.get_max_value() / 1000.0
    out["count"] = float(h.get_total_count())
    return out


class LatencyRecorder:
    """A recent window (the last `window_s` to 2x`window_s` seconds) and a total since start."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.total = new_histogram()
        self._cur = new_histogram()
        self._prev = new_histogram()
        self._rotated = time.monotonic()

    def record_ns(self, ns: int) -> None:
        us = max(LOWEST_US, min(HIGHEST_US, ns // 1000))
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
        counts = [0] * (len(bounds_ms) + 1)
        for it in h.get_recorded_iterator():
            ms = it.value_iterated_to / 1000.0
            i = next((k for k, b in enumerate(bounds_ms) if ms <= b), len(bounds_ms))
            counts[i] += it.count_added_in_this_iter_step
        return [[b, c] for b, c in zip([*bounds_ms, OVERFLOW_MS], counts, strict=True)]

    def summary_ms(self, recent: bool = True) -> dict[str, float]:
        return summary_ms(self.recent() if recent else self.total)
