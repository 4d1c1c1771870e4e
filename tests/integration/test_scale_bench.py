"""`tradeops bench scale` run small: two sizes, an instance killed under the paced flow, and every
trade accounted for per symbol (none lost, none twice, none out of order)."""

from __future__ import annotations

import argparse

import pytest

from backend.bench import scale


@pytest.mark.timeout(180)
def test_the_scale_bench_counts_every_trade_through_an_instance_killed() -> None:
    args = argparse.Namespace(sizes="1,2", ticks=20_000, rate=5_000, batch=500, seconds=1.5, kill=True)
    res = scale.run(args)
    assert [s["partitions"] for s in res["sizes"]] == [1, 2]
    for size in res["sizes"]:
        assert size["ticks_checked"] > size["backlog_ticks"] >= 20_000
        assert (size["lost"], size["duplicated"], size["out_of_order"]) == (0, 0, 0), size
        assert size["ticks_per_s"] > 0 and size["cpu_s_per_million"] > 0
    assert res["sizes"][1]["killed"]["instance"] == "normalizer-1"
