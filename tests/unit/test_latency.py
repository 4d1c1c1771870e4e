"""The latency summaries read off running totals give what hdrh's own (slow) iteration gives."""

from __future__ import annotations

import random

import pytest

from backend.latency import OVERFLOW_MS, PERCENTILES, LatencyRecorder, new_histogram, summary_ms

BOUNDS = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0]


def slow_buckets(h, bounds_ms: list[float]) -> list[list[float]]:
    """What LatencyRecorder.buckets_ms computed before: hdrh's recorded iterator."""
    counts = [0] * (len(bounds_ms) + 1)
    for it in h.get_recorded_iterator():
        ms = it.value_iterated_to / 1000.0
        i = next((k for k, b in enumerate(bounds_ms) if ms <= b), len(bounds_ms))
        counts[i] += it.count_added_in_this_iter_step
    return [[b, c] for b, c in zip([*bounds_ms, OVERFLOW_MS], counts, strict=True)]


@pytest.mark.parametrize("seed", range(6))
def test_percentiles_and_buckets_match_hdrh(seed: int) -> None:
    rnd = random.Random(seed)
    rec = LatencyRecorder()
    n = rnd.choice([1, 3, 500, 20_000])
    for _ in range(n):
        # mostly around a millisecond, a tail up to seconds, and exact bucket bounds now and then
        ns = rnd.choice(
            [int(rnd.lognormvariate(0, 1.2) * 1e6), int(rnd.choice(BOUNDS) * 1e6), rnd.randrange(1, 3_000_000_000)]
        )
        rec.record_ns(ns)
    h = rec.recent()
    expect = {k: h.get_value_at_percentile(p) / 1000.0 for k, p in PERCENTILES.items()}
    got = summary_ms(h)
    assert {k: got[k] for k in PERCENTILES} == expect
    assert got["count"] == n and got["max"] == h.get_max_value() / 1000.0
    assert rec.buckets_ms(BOUNDS) == slow_buckets(h, BOUNDS)
    assert sum(c for _, c in rec.buckets_ms(BOUNDS)) == n


def test_an_empty_recorder() -> None:
    rec = LatencyRecorder()
    assert rec.summary_ms() == {} and summary_ms(new_histogram()) == {}
    assert rec.buckets_ms([1.0, 2.0]) == [[1.0, 0], [2.0, 0], [OVERFLOW_MS, 0]]
