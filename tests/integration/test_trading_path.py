"""The trading path with oms, risk and live-gateway as real processes on real Redis."""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict

import pytest
import redis

from backend.bench.harness import BenchStack
from backend.bench.risk import seed_prices
from backend.bus import codec, streams
from backend.messages import FINAL_STATES, CancelRequest, ControlCommand, Heartbeat, Order, OrderEvent
from backend.services.oms import read_order
from backend.trading.killswitch import kill_switch_status, set_kill_switch
from tests.conftest import TRADEOPS, wait_for


def submit(r: redis.Redis, coid: str, **kw) -> None:
    base = dict(client_order_id=coid, account="acc-1", symbol="BTCUSDT", side="buy", type="market", quantity=0.5)
    base.update(kw)
    r.xadd(streams.ORDERS_NEW, codec.fields(Order(**base)))


def events(r: redis.Redis) -> dict[str, list[OrderEvent]]:
    out: dict[str, list[OrderEvent]] = defaultdict(list)
    for _, f in r.xrange(streams.ORDERS_EVENTS):
        ev = codec.decode(codec.payload(f), OrderEvent)
        out[ev.client_order_id].append(ev)
    return out


def final(r: redis.Redis, coid: str) -> OrderEvent | None:
    evs = [e for e in events(r).get(coid, []) if e.state in FINAL_STATES]
    return evs[-1] if evs else None


@pytest.fixture
def stack(redis_url: str):
    with BenchStack(redis_url=redis_url) as st:
        seed_prices(st.r)
        for name in ("risk", "live-gateway", "oms"):
            st.start(name)
        yield st


@pytest.mark.timeout(90)
def test_orders_flow_resubmission_and_bad_input(stack: BenchStack, r: redis.Redis) -> None:
    submit(r, "good-1")
    submit(r, "good-1")  # a resubmission: still one order
    submit(r, "neg", quantity=-2)
    submit(r, "fat", quantity=1e9)
    submit(r, "nosuch", symbol="NOSUCHUSDT")
    r.xadd(streams.ORDERS_NEW, {b"d": b"\x00\x01garbage"})
    r.xadd(streams.ORDERS_NEW, {b"d": codec.encode({"_t": "order.v1", "account": "a"})})  # missing fields
    submit(r, "limit-far", type="limit", limit_price=63000.0)  # rests: price is 65000
    wait_for(lambda: all(final(r, c) for c in ("good-1", "neg", "fat", "nosuch")), 30)
    good = final(r, "good-1")
    assert good.state == "FILLED" and good.filled_qty == 0.5 and good.avg_price == 65000.0
    assert [e.state for e in events(r)["good-1"]].count("NEW") == 1
    assert final(r, "neg").state == "REJECTED"
    assert "quantity must be a positive number, not -2" in final(r, "neg").reason
    assert final(r, "fat").state == "DENIED" and final(r, "fat").reason.startswith("max_quantity:")
    assert final(r, "nosuch").state == "DENIED" and "no trade seen for NOSUCHUSDT" in final(r, "nosuch").reason
    dl = wait_for(
        lambda: r.xrange(streams.dlq(streams.ORDERS_NEW)) if r.xlen(streams.dlq(streams.ORDERS_NEW)) == 2 else None, 10
    )
    assert all(f[b"dlq_reason"].startswith(b"undecodable order:") for _, f in dl)
    assert "Object missing required field" in dl[1][1][b"dlq_reason"].decode()
    # the limit order rests, then is canceled on request
    wait_for(lambda: read_order(r, "limit-far") and read_order(r, "limit-far").state == "ACCEPTED", 10)
    r.xadd(streams.ORDERS_NEW, codec.fields(CancelRequest(client_order_id="limit-far", reason="test")))
    wait_for(lambda: final(r, "limit-far"), 10)
    assert final(r, "limit-far").state == "CANCELED"
    for proc in stack.procs.values():
        assert proc.poll() is None  # nothing crashed


@pytest.mark.timeout(90)
def test_kill_switch_blocks_cancels_and_is_audited(stack: BenchStack, r: redis.Redis, tradeops_env) -> None:
    submit(r, "resting", type="limit", limit_price=64000.0)
    wait_for(lambda: read_order(r, "resting") and read_order(r, "resting").state == "ACCEPTED", 15)
    env = dict(tradeops_env, TRADEOPS_OPERATOR="alice")
    out = subprocess.run([*TRADEOPS, "risk", "kill", "on"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "needs --reason" in out.stderr
    out = subprocess.run(
        [*TRADEOPS, "risk", "kill", "on", "--reason", "runaway algo"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    wait_for(lambda: final(r, "resting"), 15)
    assert final(r, "resting").state == "CANCELED"
    assert "kill switch on (alice: runaway algo)" in final(r, "resting").reason
    submit(r, "blocked")
    wait_for(lambda: final(r, "blocked"), 15)
    assert final(r, "blocked").state == "DENIED" and final(r, "blocked").reason.startswith("kill_switch:")
    subprocess.run([*TRADEOPS, "risk", "kill", "off", "--reason", "fixed"], check=True, env=env, capture_output=True)
    submit(r, "after")
    wait_for(lambda: final(r, "after"), 15)
    assert final(r, "after").state == "FILLED"
    status = subprocess.run([*TRADEOPS, "risk", "kill", "status"], capture_output=True, text=True, env=env)
    assert "kill switch: off" in status.stdout and "runaway algo" in status.stdout and "alice" in status.stdout


@pytest.mark.timeout(90)
def test_a_toggle_on_ops_control_alone_changes_nothing(stack: BenchStack, r: redis.Redis) -> None:
    """The kill switch's key is its one truth: a toggle written on ops.control without the key (a
    forged or half-written one) neither turns it off in the risk engine nor cancels orders."""
    set_kill_switch(r, True, "alice", "runaway algo")
    wait_for(lambda: risk_kill_switch(r) is True, 15)
    submit(r, "resting-2", type="limit", limit_price=64000.0)  # denied: the switch is on
    wait_for(lambda: final(r, "resting-2"), 15)
    forged = ControlCommand(
        target="risk",
        command="kill_switch",
        args={"on": False},
        operator="mallory",
        reason="forged",
        ts_ns=time.time_ns(),
    )
    r.xadd(streams.OPS_CONTROL, codec.fields(forged))
    submit(r, "after-forged")
    wait_for(lambda: final(r, "after-forged"), 15)
    assert final(r, "after-forged").state == "DENIED" and final(r, "after-forged").reason.startswith("kill_switch:")
    assert risk_kill_switch(r) is True and kill_switch_status(r).on is True
    set_kill_switch(r, False, "alice", "fixed")
    wait_for(lambda: risk_kill_switch(r) is False, 15)


def risk_kill_switch(r: redis.Redis) -> bool | None:
    """What the risk engine's own heartbeat says of the kill switch."""
    for key in r.scan_iter(match="health:risk:*"):
        raw = r.hget(key, codec.FIELD_STR)
        if raw:
            return bool(codec.decode(raw, Heartbeat).extra.get("kill_switch"))
    return None


@pytest.mark.timeout(120)
def test_oms_killed_mid_stream_every_order_ends_once(stack: BenchStack, r: redis.Redis) -> None:
    n = 600
    for i in range(n):
        submit(r, f"k{i}", side="buy" if i % 2 else "sell", quantity=0.01)
        if i == 200:
            stack.stop("oms-bench", kill=True)  # SIGKILL, mid-stream
    stack.start("oms", instance="oms-bench")  # the same instance restarts and resumes
    wait_for(lambda: sum(1 for c, evs in events(r).items() if any(e.state in FINAL_STATES for e in evs)) >= n, 60)
    evs = events(r)
    for i in range(n):
        finals = [e.state for e in evs[f"k{i}"] if e.state in FINAL_STATES]
        assert finals == ["FILLED"], (i, [e.state for e in evs[f"k{i}"]])
        rec = read_order(r, f"k{i}")
        assert rec.filled == pytest.approx(0.01) and len(rec.trade_ids) == len(set(rec.trade_ids)) == 1
