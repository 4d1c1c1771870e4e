"""`tradeops bench scale` run small: two sizes, an instance killed under the paced flow, and every
trade accounted for per symbol (none lost, none twice, none out of order)."""

from __future__ import annotations

import argparse

import pytest

from backend.bench import scale


@pytest.mark.timeout(180)
def test_the_scale_bench_counts_every_trade_through_an_instance_killed() -> None:
    args = argparse.Namespace(sizes="1,2", ticks=20_000, rate=5_000, batch=500, seconds=1.5, kill=True, cluster=False)
    res = scale.run(args)
    assert [s["partitions"] for s in res["single"]] == [1, 2]
    for size in res["single"]:
        assert size["ticks_checked"] > size["backlog_ticks"] >= 20_000
        assert (size["lost"], size["duplicated"], size["out_of_order"]) == (0, 0, 0), size
        assert size["ticks_per_s"] > 0 and size["cpu_s_per_million"] > 0
    assert res["single"][1]["killed"]["instance"] == "normalizer-1"


@pytest.mark.timeout(300)
def test_on_a_local_cluster_partitions_keep_every_trade_and_a_primary_failover_is_ridden_through() -> None:
    # the bus on a Redis Cluster (3 primaries, a replica each) started from the embedded server's
    # binary: each partition's keys in one slot, the normalizer's fenced commit on its node; then
    # the primary of partition 0 is SIGKILLed under the flow and its replica takes over
    args = argparse.Namespace(sizes="2", ticks=10_000, rate=4_000, batch=500, seconds=3.0, kill=False, cluster=True)
    res = scale.run(args)
    (on_cluster,) = res["cluster"]
    assert (on_cluster["lost"], on_cluster["duplicated"], on_cluster["out_of_order"]) == (0, 0, 0), on_cluster
    failover = res["cluster_failover"]
    assert failover["killed"]["slot_of"] == "md.ticks.raw:{p0of2}" and failover["killed"]["recovered_s"] > 0
    # what the replication lag lost is counted (it may be 0); nothing doubled, nothing out of order
    assert failover["lost"] >= 0 and (failover["duplicated"], failover["out_of_order"]) == (0, 0), failover
