"""`tradeops bench faults`, small: the stack under load (market data and paper orders) heals from a
SIGKILL of the gateway, sink-ticks, the OMS and Redis with nothing lost or duplicated and no
operator; and the command's arguments are checked."""

from __future__ import annotations

import subprocess

import pytest

from backend.bench.faults import SMALL, measure
from tests.conftest import TRADEOPS


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_stack_heals_from_each_fault_losing_and_duplicating_nothing() -> None:
    res = measure(SMALL["rate"], SMALL["order_rate"], seconds=5, interval=SMALL["interval"], faults=SMALL["faults"])
    assert [f["fault"] for f in res["faults"]] == SMALL["faults"]
    assert all(f["recovered"] is True and f["recovery_s"] > 0 for f in res["faults"]), res["faults"]
    assert res["ticks_sent"] > 0 and res["orders_submitted"] > 0
    assert res["problems"] == [], res
    assert (res["ticks_lost"], res["ticks_duplicated_stream"], res["ticks_dead_lettered"]) == (0, 0, 0)
    assert (res["ticks_lost_store"], res["ticks_duplicated_store"]) == (0, 0)
    assert res["ticks_stored"] == res["ticks_delivered"] == res["ticks_sent"]
    assert (res["orders_lost"], res["orders_duplicated"], res["orders_not_final"]) == (0, 0, 0)
    assert res["orders_final"] == res["orders_submitted"]
    assert res["operator_actions"] == 0
    assert res["trade_ids_reused"] == [] and res["fills_broken"] == 0 and res["positions_wrong"] == []
    redis_fault = next(f for f in res["faults"] if f["fault"] == "redis")
    assert redis_fault["observed"]["same_url"] and redis_fault["observed"]["ping_s"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "gateway,printer"], "unknown fault(s) printer: choose from gateway, normalizer, sink-ticks"),
        (["--interval", "0"], "--rate, --order-rate and --interval must be positive"),
        (["--store-mb", "1"], "--store-mb at least 8"),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], message: str) -> None:
    out = subprocess.run([*TRADEOPS, "bench", "faults", *args], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("tradeops: error: ") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
