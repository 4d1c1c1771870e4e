"""Marketplace subscriptions end to end, every service a real process on real Redis: signals on
`signals` become paper orders for each subscribed account through oms -> risk -> live-gateway,
fills become ptrc positions that follow the signals; an order risk denies gives its quantity
back to the sleeve (the next signal tries again from what is held); a redelivered signal never
trades twice; signals from before a subscription, or too old, are not traded; a marketplace
killed and restarted carries on; bad input goes to the DLQ with its reason."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import msgspec
import pytest
import redis

from backend.bench.harness import BenchStack
from backend.bench.risk import PRICES, seed_prices
from backend.bus import codec, streams
from backend.catalog import store
from backend.messages import FINAL_STATES, Heartbeat, Order, OrderEvent, Position, Signal
from tests.conftest import TRADEOPS, wait_for

ITEM = "strategy:alpha-momentum"
CONFIG = """
[services.risk.accounts.acct-capped]
max_order_notional = 1000.0
"""


def signal(side: str | None, ts: int, symbol: str = "BTCUSDT") -> dict[bytes, bytes]:
    return codec.fields(Signal(symbol=symbol, ts_ns=ts, model="alpha", version=1, score=1.0, side=side))


def orders(r: redis.Redis) -> list[Order]:
    return [codec.decode(codec.payload(f), Order) for _, f in r.xrange(streams.ORDERS_NEW)]


def finals(r: redis.Redis) -> dict[str, OrderEvent]:
    out = {}
    for _, f in r.xrange(streams.ORDERS_EVENTS):
        try:
            ev = codec.decode(codec.payload(f), OrderEvent)
        except msgspec.DecodeError:
            continue  # the junk this test puts there
        if ev.state in FINAL_STATES:
            out[ev.client_order_id] = ev
    return out


def positions(r: redis.Redis) -> dict[str, float]:
    out = {}
    for _, f in r.xrange(streams.POSITIONS):
        p = codec.decode(codec.payload(f), Position)
        out[p.account] = p.quantity
    return out


def counts(r: redis.Redis) -> dict[str, int]:
    raw = r.hget("health:marketplace:mk-1", codec.FIELD_STR)
    return codec.decode(raw, Heartbeat).extra if raw else {}


def sleeve(r: redis.Redis, account: str) -> float:
    return store.targets(r, account).get((ITEM, "BTCUSDT"), 0.0)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_subscriptions_trade_signals_through_oms_and_risk(
    redis_url: str, r: redis.Redis, tradeops_env, tmp_path: Path
) -> None:
    cfg = tmp_path / "mk.toml"
    cfg.write_text(CONFIG)
    env = dict(tradeops_env, TRADEOPS_CONFIG=str(cfg), TRADEOPS_OPERATOR="mona")

    def cli(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TRADEOPS, *a], capture_output=True, text=True, env=env, timeout=60)

    with BenchStack(redis_url=redis_url) as st:
        seed_prices(st.r)
        for name in ("risk", "live-gateway", "oms", "ptrc"):
            st.start(name, config=cfg)
        st.start("marketplace", instance="mk-1", config=cfg)
        for acct, qty in (("acct-a", "2"), ("acct-capped", "1")):
            out = cli("market", "subscribe", ITEM, "--account", acct, "--quantity", qty)
            assert out.returncode == 0 and f"{acct} subscribed to {ITEM}" in out.stdout, out.stderr
        # a subscription from an hour ago, and a signal published two minutes ago (a backlog after
        # downtime): too old for the old subscription, from before the new ones
        r.hset(
            store.k_subs(ITEM),
            "acct-old",
            msgspec.json.encode(
                store.Subscription(
                    account="acct-old", item=ITEM, quantity=1.0, operator="mona", since_ns=time.time_ns() - 3600 * 10**9
                )
            ),
        )
        r.xadd(streams.SIGNALS, signal("buy", 1), id=f"{int(time.time() * 1000) - 120_000}-0")
        wait_for(lambda: counts(r).get("signals_in") == 1, 20, what="the old signal read")
        assert counts(r)["stale"] == 1 and r.xlen(streams.ORDERS_NEW) == 0

        # buy: acct-a and acct-old go long; acct-capped's order is denied by risk and given back
        r.xadd(streams.SIGNALS, signal("buy", 2))
        wait_for(
            lambda: (
                positions(r).get("acct-a") == 2.0
                and positions(r).get("acct-old") == 1.0
                and counts(r).get("given_back") == 1
            ),
            30,
            what="the buy filled, the capped order given back",
        )
        assert sleeve(r, "acct-capped") == 0.0 and sleeve(r, "acct-a") == 2.0
        capped = [o for o in orders(r) if o.account == "acct-capped"]
        assert len(capped) == 1 and finals(r)[capped[0].client_order_id].state == "DENIED"
        assert finals(r)[capped[0].client_order_id].reason.startswith("max_order_notional")

        # sell: from +2 to -2 is one order of 4; the capped account tries again from 0 (and is denied again)
        r.xadd(streams.SIGNALS, signal("sell", 3))
        wait_for(
            lambda: positions(r).get("acct-a") == -2.0 and counts(r).get("given_back") == 2, 30, what="the sell filled"
        )
        a = [o for o in orders(r) if o.account == "acct-a"]
        assert [(o.side, o.quantity) for o in a] == [("buy", 2.0), ("sell", 4.0)]
        assert all(finals(r)[o.client_order_id].state == "FILLED" for o in a)
        assert all(o.source == f"marketplace:{ITEM}" for o in orders(r))

        # a neutral signal, a redelivered sell, junk: no order; junk dead-lettered with its reason
        n_orders = r.xlen(streams.ORDERS_NEW)
        r.xadd(streams.SIGNALS, signal(None, 4))
        r.xadd(streams.SIGNALS, signal("sell", 3))
        r.xadd(streams.SIGNALS, {b"d": b"\xc1junk"})
        r.xadd(streams.ORDERS_EVENTS, {b"d": b"\xc1junk"})
        wait_for(
            lambda: (
                counts(r).get("signals_in") == 5
                and r.xlen(streams.dlq(streams.SIGNALS)) == 1
                and r.xlen(streams.dlq(streams.ORDERS_EVENTS)) == 1
            ),
            20,
            what="the last signals read",
        )
        assert r.xlen(streams.ORDERS_NEW) == n_orders
        assert r.xrange(streams.dlq(streams.SIGNALS))[0][1][b"dlq_reason"].startswith(b"undecodable signal:")
        assert r.xrange(streams.dlq(streams.ORDERS_EVENTS))[0][1][b"dlq_reason"].startswith(b"undecodable order event:")

        # killed and restarted, the marketplace carries on from where the sleeves are
        st.stop("mk-1", kill=True)
        r.xadd(streams.SIGNALS, signal("buy", 5))
        st.start("marketplace", instance="mk-1", config=cfg)
        wait_for(
            lambda: positions(r).get("acct-a") == 2.0 and positions(r).get("acct-old") == 1.0,
            30,
            what="the buy after the restart filled",
        )
        wait_for(
            lambda: all(o.client_order_id in finals(r) for o in orders(r)) and not r.hlen(store.OPEN_ORDERS),
            30,
            what="every marketplace order ended and settled",
        )
        # what ptrc holds is what each sleeve wants: the signals, less what risk refused
        for acct in ("acct-a", "acct-old", "acct-capped"):
            assert positions(r).get(acct, 0.0) == sleeve(r, acct), acct
        out = cli("positions")
        assert out.returncode == 0 and "acct-a" in out.stdout and "acct-capped" not in out.stdout
        out = cli("market", "targets", "acct-a")
        assert out.returncode == 0 and out.stdout.splitlines()[2].split() == [ITEM, "BTCUSDT", "2"]
        assert {o.symbol for o in orders(r)} == {"BTCUSDT"} and PRICES["BTCUSDT"] * 1 > 1000.0
