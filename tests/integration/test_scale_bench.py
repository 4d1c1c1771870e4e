"""`tradeops bench scale` run small: two sizes, an instance killed under the paced flow, and every
trade accounted for per symbol (none lost, none twice, none out of order)."""

from __future__ import annotations

import argparse

import pytest

from backend.bench import scale


@pytest.mark.timeout(180)
def test_the_scale_bench_counts_every_trade_through_an_instance_killed() -> None:
    args = argparse.Namespace(
        sizes="1,2", ticks=20_000, rate=5_000, batch=500, seconds=1.5, kill=True, cluster=False, only="normalizer"
    )
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
    args.orders, args.order_rate = 600, 200
    args.single = False  # the single Redis is the other tests' (this one is about the cluster)
    res = scale.run(args)
    # the order path too: each partition's records, open set and streams in one slot, the OMS's
    # compare-and-set on its node, risk's and the venue's broadcasts read slot by slot
    (oms_on_cluster,) = res["oms_cluster"]
    assert (oms_on_cluster["lost"], oms_on_cluster["duplicated"], oms_on_cluster["out_of_order"]) == (0, 0, 0)
    assert sum(oms_on_cluster["states"].values()) == oms_on_cluster["orders_checked"] > 600
    # and the primary of the order path's partition 0 killed under the paced orders: what the
    # replication lag lost is counted; nothing doubled or reordered; every order left is final once
    oms_failover = res["oms_cluster_failover"]
    assert oms_failover["killed"]["slot_of"] == "orders.new:{p0of2}" and oms_failover["killed"]["recovered_s"] > 0
    assert oms_failover["lost"] >= 0 and (oms_failover["duplicated"], oms_failover["out_of_order"]) == (0, 0)
    assert sum(oms_failover["states"].values()) == oms_failover["orders_checked"] - oms_failover["lost"]
    (on_cluster,) = res["cluster"]
    assert (on_cluster["lost"], on_cluster["duplicated"], on_cluster["out_of_order"]) == (0, 0, 0), on_cluster
    failover = res["cluster_failover"]
    assert failover["killed"]["slot_of"] == "md.ticks.raw:{p0of2}" and failover["killed"]["recovered_s"] > 0
    # what the replication lag lost is counted (it may be 0); nothing doubled, nothing out of order
    assert failover["lost"] >= 0 and (failover["duplicated"], failover["out_of_order"]) == (0, 0), failover


@pytest.mark.timeout(240)
def test_the_order_path_split_by_account_loses_doubles_and_reorders_nothing_through_an_oms_killed() -> None:
    # orders.new and every stream after it split in 2 by account, two instances each of oms,
    # risk and live-gateway (real processes, a real Redis); one OMS SIGKILLed under the paced flow:
    # the other takes its partition and the pending entries over, in order
    args = argparse.Namespace(
        sizes="1,2", orders=2_000, order_rate=300, seconds=3.0, kill=True, cluster=False, only="oms", batch=500
    )
    args.ticks, args.rate = 1_000, 1_000
    res = scale.run(args)
    assert "single" not in res and [s["partitions"] for s in res["oms_single"]] == [1, 2]
    for size in res["oms_single"]:
        assert size["orders_checked"] > size["backlog_orders"] == 2_000
        assert (size["lost"], size["duplicated"], size["out_of_order"]) == (0, 0, 0), size
        assert sum(size["states"].values()) == size["orders_checked"], size  # each order final, once
        assert size["orders_per_s"] > 0 and size["cpu_s_per_million"] > 0
    assert res["oms_single"][1]["killed"]["instance"] == "oms-1"
