"""`tradeops up` with md.ticks.raw split in two and two normalizer replicas: the gateway routes
each symbol to its partition, each replica owns one (ps says which), and every partition's
trades reach md.ticks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from backend.bus import connection, partitions, streams
from tests.conftest import TRADEOPS, wait_for

CONFIG = """
[partitions]
"md.ticks.raw" = 2

[replicas]
normalizer = 2
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_normalizer_replicas_own_a_partition_each_under_tradeops_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOPS_")}
    env.update(TRADEOPS_DATA_DIR=str(data), TRADEOPS_CONFIG=str(config), PYTHONUNBUFFERED="1")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(TRADEOPS + list(args), capture_output=True, text=True, env=env, timeout=240, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    try:
        cli("up", "--rate", "200")

        def normalizers() -> dict[str, str]:
            rows = json.loads(cli("ps", "--json").stdout)
            return {r["instance"]: r["partitions"] for r in rows if r["service"] == "normalizer"}

        owned = wait_for(
            lambda: (n := normalizers()) and sorted(n.values()) == ["0 of 2", "1 of 2"] and n,
            60,
            what="each replica owning one partition",
        )
        assert sorted(owned) == ["normalizer-legacy", "normalizer-legacy-2"]
        table = cli("ps").stdout
        assert "PARTITIONS" in table and "0 of 2" in table and "1 of 2" in table
        # the console's overview says it too: the partitions each instance owns, instance by instance
        from backend.settings import Settings
        from console.data.live import LiveSource

        src = LiveSource(connection.require_url(None, data), Settings(data_dir=str(data)), "ann")
        try:
            row = wait_for(
                lambda: next((h for h in src.poll().health if h.service == "normalizer" and h.partitions), None),
                30,
                what="the console's normalizer row with its partitions",
            )
        finally:
            src.close()
        assert row.partitions in ("0|1 of 2", "1|0 of 2") and row.legacy == 2
        admin = connection.client(connection.require_url(None, data), connection.admin_login(data_dir=data))
        try:
            names = partitions.names(streams.MD_TICKS_RAW, 2)
            wait_for(lambda: all(admin.xlen(s) > 0 for s in names), 60, what="trades in both partitions")
            assert not admin.exists(streams.MD_TICKS_RAW)  # the single stream is not written any more
            wait_for(lambda: admin.xlen(streams.MD_TICKS) > 0, 60, what="clean ticks")
        finally:
            admin.close()
    finally:
        subprocess.run([*TRADEOPS, "down"], capture_output=True, env=env, timeout=120, check=False)


ORDER_PATH_CONFIG = """
[partitions]
"orders.new" = 2

[replicas]
oms = 2
risk = 2
live-gateway = 2
ptrc = 2
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_order_path_split_by_account_under_tradeops_up(tmp_path: Path) -> None:
    # orders.new and the streams after it split in two by account, two instances each of oms,
    # risk, live-gateway and ptrc: each owns one partition (ps says which), orders of accounts in
    # both partitions reach FILLED through the CLI and are booked once each by the ptrc owning
    # their account, and a cancel finds its order's partition
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text(ORDER_PATH_CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOPS_")}
    env.update(TRADEOPS_DATA_DIR=str(data), TRADEOPS_CONFIG=str(config), PYTHONUNBUFFERED="1")

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(TRADEOPS + list(args), capture_output=True, text=True, env=env, timeout=240, check=False)
        assert not ok or out.returncode == 0, out.stdout + out.stderr
        return out

    try:
        cli("up", "--rate", "200")

        def owners(service: str) -> dict[str, str]:
            rows = json.loads(cli("ps", "--json").stdout)
            return {r["instance"]: r["partitions"] for r in rows if r["service"] == service}

        for service in ("oms", "risk", "live-gateway", "ptrc"):
            wait_for(
                lambda s=service: sorted(owners(s).values()) == ["0 of 2", "1 of 2"],
                60,
                what=f"each {service} instance owning one partition",
            )
        accounts = ["desk-1", "desk-2", "desk-3", "desk-4"]  # not the demo flow's
        assert len({partitions.partition_of(a, 2) for a in accounts}) == 2  # both partitions get orders
        for i, account in enumerate(accounts):
            out = cli(
                "order", "submit", "buy", "0.001", "BTCUSDT", "--account", account, "--id", f"split-{i}", "--wait", "30"
            )
            assert "FILLED" in out.stdout, out.stdout
        # a resting order (3% under the last fill: inside risk's price band), canceled: the cancel
        # goes to its account's partition
        listed = lambda: json.loads(cli("order", "list", "--json").stdout)  # noqa: E731
        last = next(o["avg_price"] for o in listed() if o["client_order_id"] == "split-3")
        limit = f"{last * 0.97:.2f}"
        cli("order", "submit", "buy", "0.001", "BTCUSDT", "--account", "desk-2", "--limit", limit, "--id", "rest-1")
        wait_for(
            lambda: any(o["client_order_id"] == "rest-1" and o["state"] == "ACCEPTED" for o in listed()),
            30,
            what="the resting order accepted",
        )
        cli("order", "cancel", "rest-1")
        wait_for(
            lambda: any(o["client_order_id"] == "rest-1" and o["state"] == "CANCELED" for o in listed()),
            30,
            what="the resting order canceled",
        )
        booked = lambda: {  # noqa: E731
            p["account"]: p["quantity"]
            for p in json.loads(cli("positions", "--json").stdout)
            if p["account"] in accounts and p["symbol"] == "BTCUSDT"
        }
        wait_for(lambda: len(booked()) == 4, 30, what="the four accounts' positions")
        assert booked() == dict.fromkeys(accounts, pytest.approx(0.001))  # each fill booked once
        admin = connection.client(connection.require_url(None, data), connection.admin_login(data_dir=data))
        try:
            for stream in (streams.ORDERS_NEW, streams.EXEC_REPORTS, streams.ORDERS_EVENTS):
                assert not admin.exists(stream), stream  # only the partitions are written
                assert all(admin.xlen(s) > 0 for s in partitions.names(stream, 2)), stream
        finally:
            admin.close()
    finally:
        subprocess.run([*TRADEOPS, "down"], capture_output=True, env=env, timeout=120, check=False)
