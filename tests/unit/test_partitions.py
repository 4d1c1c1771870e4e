"""Partition routing: a stable hash, names with their hash tag, budgets shared out, the
rendezvous assignment of partitions to instances."""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections import Counter

import pytest

from backend.bus import partitions, streams
from backend.bus.leases import assign
from backend.errors import ConfigError
from backend.settings import load_settings


def test_a_key_has_one_partition_in_every_process() -> None:
    # CRC-32, not hash(): another interpreter (another PYTHONHASHSEED) routes the same way
    here = [partitions.partition_of(s, 8) for s in ("BTCUSDT", "ETHUSDT", "acc-1", "acc-2")]
    code = (
        "from backend.bus import partitions as P; "
        "print([P.partition_of(s, 8) for s in ('BTCUSDT', 'ETHUSDT', 'acc-1', 'acc-2')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    ).stdout
    assert out.strip() == str(here)
    assert here[0] == zlib.crc32(b"BTCUSDT") % 8
    assert all(partitions.partition_of(s, 1) == 0 for s in ("BTCUSDT", "x"))


def test_names_carry_the_partition_and_the_count_in_one_hash_tag() -> None:
    assert partitions.name(streams.MD_TICKS_RAW, 0, 1) == "md.ticks.raw"  # unchanged when not split
    assert partitions.names("md.ticks.raw", 2) == ["md.ticks.raw:{p0of2}", "md.ticks.raw:{p1of2}"]
    assert partitions.split("md.ticks.raw:{p1of2}") == ("md.ticks.raw", 1, 2)
    assert partitions.split("md.ticks.raw") == ("md.ticks.raw", 0, 1)
    assert partitions.route("md.ticks.raw", "BTCUSDT", 4) == partitions.name(
        "md.ticks.raw", partitions.partition_of("BTCUSDT", 4), 4
    )
    with pytest.raises(ValueError, match="out of range"):
        partitions.name("md.ticks.raw", 4, 4)


def test_a_partition_has_its_share_of_the_stream_budget() -> None:
    whole = streams.budget(streams.MD_TICKS_RAW)
    part = streams.budget("md.ticks.raw:{p1of4}")
    assert part.bytes == whole.bytes // 4 and part.entry == whole.entry and part.max_entry == whole.max_entry
    assert streams.budget("dlq.md.ticks.raw:{p1of4}") == streams.budget(streams.dlq(streams.MD_TICKS_RAW))


def test_the_assignment_is_the_same_everywhere_balanced_and_moves_little() -> None:
    three = assign(["a", "b", "c"], 16)
    assert three == assign(["c", "a", "b"], 16)  # the members' order does not matter
    assert max(Counter(three.values()).values()) <= 6 and set(three.values()) == {"a", "b", "c"}  # ceil(16 / 3)
    four = assign(["a", "b", "c", "d"], 16)
    assert sorted(Counter(four.values()).values()) == [4, 4, 4, 4]
    moved = [p for p in range(16) if three[p] != four[p]]
    assert len(moved) <= 8 and sum(four[p] == "d" for p in moved) == 4  # the newcomer's share, and little more
    for k in (1, 2, 4):  # as many instances as partitions: one each
        assert sorted(assign([f"i{j}" for j in range(k)], k).values()) == [f"i{j}" for j in range(k)]
    assert assign([], 4) == {}


def test_the_config_names_what_is_wrong_with_a_partition_count(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[partitions]\n"orders.nope" = 4\n')
    with pytest.raises(ConfigError, match=r"'orders\.nope' is not a stream that can be partitioned"):
        load_settings(bad)
    bad.write_text('[partitions]\n"md.ticks.raw" = 0\n')
    with pytest.raises(ConfigError, match=r"md.ticks.raw = 0: a count from 1 to 256"):
        load_settings(bad)
    good = tmp_path / "good.toml"
    good.write_text('[partitions]\n"md.ticks.raw" = 4\n')
    s = load_settings(good)
    assert s.partition_count("md.ticks.raw") == 4 and s.partition_count("md.ticks") == 1


def test_a_replicas_entry_must_name_a_service_and_the_base_keys_pass_the_section_check(tmp_path) -> None:
    from backend.services import check_sections

    cfg = tmp_path / "c.toml"
    cfg.write_text("[replicas]\nnormaliser = 2\n")
    with pytest.raises(
        ConfigError, match=r"\[replicas\] normaliser: there is no service 'normaliser' \(did you mean normalizer\?\)"
    ):
        check_sections(load_settings(cfg))
    # the Service base's own keys are not its Config's: a section holding them is fine
    cfg.write_text("[replicas]\nnormalizer = 2\n\n[services.normalizer]\nmetrics_port = 0\nclaim_idle_ms = 5000\n")
    check_sections(load_settings(cfg))


def test_the_order_path_is_split_whole_by_orders_new(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[partitions]\n"exec.reports" = 4\n')
    with pytest.raises(ConfigError, match=r"'exec\.reports' is split as orders\.new is: set \"orders\.new\" = N"):
        load_settings(cfg)
    cfg.write_text('[partitions]\n"orders.new" = 4\n')
    s = load_settings(cfg)
    path = ("orders.new", "risk.requests", "risk.decisions", "exec.orders", "exec.reports", "orders.events")
    assert [s.partition_count(x) for x in path] == [4] * 6 and s.partition_count("md.ticks") == 1
    # the process routes as its settings say: an order to its account's partition, its copy alike
    from backend.bus.publish import Unroutable, routed
    from backend.messages import CancelRequest

    assert partitions.count("exec.reports.ptrc") == 4
    o = CancelRequest(client_order_id="c1", account="acct-7")
    assert routed("orders.new", o) == partitions.route("orders.new", "acct-7", 4)
    assert streams.copies("exec.reports:{p3of4}") == ("exec.reports.ptrc:{p3of4}",)
    with pytest.raises(Unroutable, match=r"orders\.new: the stream is split into 4 partitions by account"):
        routed("orders.new", CancelRequest(client_order_id="c1"))
