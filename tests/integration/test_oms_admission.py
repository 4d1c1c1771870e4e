"""Admission control with oms, risk and live-gateway as real processes on real Redis: flooded past
its bounds the OMS refuses new orders at once (REJECTED, reason `overloaded`), every order ends
exactly once, and once the flood is over new orders are taken again. The floods are made so by
construction (risk not running; the OMS stopped while orders wait), never by timing."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backend.bench.harness import BenchStack
from backend.bench.risk import seed_prices
from backend.bus import codec, streams
from backend.messages import FINAL_STATES, ExecOrder, RiskRequest
from backend.services.oms import read_order
from backend.trading.admission import OVERLOADED, entry_ms
from tests.conftest import wait_for
from tests.integration.test_trading_path import events, submit


def finals(r: redis.Redis) -> dict[str, list[tuple[str, str]]]:
    """Each order's final events as (state, reason)."""
    return {c: [(e.state, e.reason) for e in evs if e.state in FINAL_STATES] for c, evs in events(r).items()}


def ended_once(r: redis.Redis, coids: list[str]) -> dict[str, tuple[str, str]]:
    """Every order of `coids` has exactly one final event (and that is its record's state)."""
    got = finals(r)
    for c in coids:
        assert len(got.get(c, [])) == 1, (c, [(e.state, e.reason) for e in events(r).get(c, [])])
        assert read_order(r, c).state == got[c][0][0]
    return {c: got[c][0] for c in coids}


def all_final(r: redis.Redis, coids: list[str]) -> bool:
    got = finals(r)
    return all(got.get(c) for c in coids)


def routed(r: redis.Redis) -> set[str]:
    """Orders that reached risk or the venue."""
    out = {
        codec.decode(codec.payload(f), RiskRequest).order.client_order_id for _, f in r.xrange(streams.RISK_REQUESTS)
    }
    return out | {codec.decode(codec.payload(f), ExecOrder).client_order_id for _, f in r.xrange(streams.EXEC_ORDERS)}


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[BenchStack]:
    with BenchStack(redis_url=redis_url) as st:
        seed_prices(st.r)
        yield st


def config(tmp_path: Path, **admission: float) -> Path:
    path = tmp_path / "oms.toml"
    path.write_text("[services.oms.admission]\n" + "".join(f"{k} = {v}\n" for k, v in admission.items()))
    return path


@pytest.mark.timeout(120)
def test_in_flight_past_the_bound_is_refused_and_taken_again_once_answered(
    stack: BenchStack, r: redis.Redis, tmp_path: Path
) -> None:
    # risk is not running: whatever the OMS admits stays in flight (PENDING_RISK)
    stack.start("live-gateway")
    stack.start("oms", config=config(tmp_path, max_in_flight=20, max_intake_age_ms=600_000))
    flood = [f"f{i}" for i in range(60)]
    for c in flood:
        submit(r, c, quantity=0.01)
    wait_for(
        lambda: sum(1 for v in finals(r).values() if v == [("REJECTED", OVERLOADED)]) == 40,
        30,
        what="40 of 60 orders refused past 20 in flight",
    )
    refused = [c for c in flood if finals(r).get(c)]
    admitted = [c for c in flood if c not in refused]
    assert len(admitted) == 20 and all(read_order(r, c).state == "PENDING_RISK" for c in admitted)
    assert not routed(r) & set(refused)  # refused at once: never sent to risk or the venue
    assert all([e.state for e in events(r)[c]] == ["REJECTED"] for c in refused)  # one event each
    submit(r, refused[0], quantity=0.01)  # a resubmission of a refused order is still that order

    stack.start("risk")  # the flood is answered: what was in flight fills, and new orders are taken
    wait_for(lambda: all_final(r, admitted), 60, what="the admitted orders to end")
    after = [f"a{i}" for i in range(5)]
    for c in after:
        submit(r, c, quantity=0.01)
    wait_for(lambda: all_final(r, after), 60, what="the orders after the flood to end")

    end = ended_once(r, flood + after)
    assert all(end[c] == ("FILLED", "") for c in admitted + after)
    assert all(end[c] == ("REJECTED", OVERLOADED) for c in refused)
    for proc in stack.procs.values():
        assert proc.poll() is None


@pytest.mark.timeout(120)
def test_orders_queued_past_the_bound_are_refused_and_the_backlog_drains(
    stack: BenchStack, r: redis.Redis, tmp_path: Path
) -> None:
    bound_ms = 1000
    stack.start("risk")
    stack.start("live-gateway")
    oms = stack.start("oms", config=config(tmp_path, max_intake_age_ms=bound_ms))
    submit(r, "warm", quantity=0.01)  # the OMS has read orders.new: a wait now counts from the entry
    wait_for(lambda: all_final(r, ["warm"]), 30, what="the first order")

    os.kill(oms.pid, signal.SIGSTOP)  # the OMS falls behind: orders queue in orders.new
    try:
        backlog = [f"q{i}" for i in range(50)]
        for c in backlog:
            submit(r, c, quantity=0.01)
        last = entry_ms(r.xrevrange(streams.ORDERS_NEW, count=1)[0][0])

        def redis_ms() -> int:
            sec, usec = r.time()
            return sec * 1000 + usec // 1000

        # every entry of the backlog has waited past the bound (with room for the clocks' offset)
        wait_for(lambda: redis_ms() > last + bound_ms + 100, 30, interval=0.05, what="the backlog to age")
    finally:
        os.kill(oms.pid, signal.SIGCONT)
    wait_for(lambda: all_final(r, backlog), 30, what="the backlog to drain")
    after = [f"a{i}" for i in range(5)]
    for c in after:
        submit(r, c, quantity=0.01)
    wait_for(lambda: all_final(r, after), 30, what="the orders after the backlog to end")

    end = ended_once(r, ["warm", *backlog, *after])
    assert all(end[c] == ("REJECTED", OVERLOADED) for c in backlog)
    assert not routed(r) & set(backlog)
    assert all(end[c] == ("FILLED", "") for c in ["warm", *after])
    assert oms.poll() is None
