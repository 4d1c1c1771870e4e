"""Each pre-trade rule denies with its reason and numbers, and a good order passes."""

from __future__ import annotations

import pytest

from backend.exchange.matching import MatchingEngine
from backend.messages import ExecReport, Order
from backend.trading.orders import IllegalTransition, OrderRecord, invalid
from backend.trading.risk_rules import Limits, RiskConfig, RiskEngine


def order(**kw) -> Order:
    base = dict(
        client_order_id="c1", account="acc", symbol="BTCUSDT", side="buy", type="limit", quantity=1.0, limit_price=100.0
    )
    base.update(kw)
    return Order(**base)


def engine(**limits) -> RiskEngine:
    cfg = RiskConfig(limits=Limits(**limits), symbols={"ETHUSDT": {"max_quantity": 2}}, restricted=["LUNAUSDT"])
    e = RiskEngine(cfg)
    e.book.prices.update({"BTCUSDT": 100.0, "ETHUSDT": 10.0, "LUNAUSDT": 1.0})
    return e


@pytest.mark.parametrize(
    ("o", "limits", "rule", "reason"),
    [
        (order(quantity=50), {"max_order_notional": 1000}, "max_order_notional", "notional 5,000.00 > max 1,000.00"),
        (order(limit_price=120.0), {"price_band_pct": 5}, "price_band", "limit 120 is 20.00% from last 100 (band 5%)"),
        (order(quantity=11), {"max_position": 10}, "max_position", "position would be 11 (now 0), max 10"),
        (order(quantity=1000), {"max_quantity": 500}, "max_quantity", "quantity 1000 > max 500 (fat finger)"),
        (order(symbol="ETHUSDT", quantity=3, limit_price=10.0), {}, "max_quantity", "quantity 3 > max 2 (fat finger)"),
        (order(symbol="LUNAUSDT", limit_price=1.0), {}, "restricted_symbol", "LUNAUSDT is restricted"),
        (order(symbol="XRPUSDT", type="market", limit_price=None), {}, "no_price", "no trade seen for XRPUSDT"),
    ],
)
def test_each_rule_denies_with_its_numbers(o, limits, rule, reason) -> None:
    e = engine(**limits)
    d = e.check(o)
    assert not d.approved and d.rule == rule and reason in d.reason
    assert e.check(order(client_order_id="good")).approved


def test_rate_limit_and_open_orders() -> None:
    e = engine(max_orders_per_s=3)
    assert [e.check(order(client_order_id=f"r{i}"), now=10.0).approved for i in range(4)] == [True] * 3 + [False]
    d = e.check(order(client_order_id="r5"), now=10.5)
    assert d.rule == "rate_limit" and "3 orders in the last second, max 3/s" in d.reason
    assert e.check(order(client_order_id="r6"), now=11.01).approved  # the window moved on
    e = engine(max_open_orders=2)
    assert e.check(order(client_order_id="a")).approved and e.check(order(client_order_id="b")).approved
    d = e.check(order(client_order_id="c"))
    assert d.rule == "max_open_orders" and "2 open orders, max 2" in d.reason
    e.book.on_report(ExecReport(client_order_id="a", venue_order_id="v", kind="canceled", account="acc"))
    assert e.check(order(client_order_id="c")).approved


def test_kill_switch_blocks_new_but_lets_risk_reducing_orders_through() -> None:
    e = engine()
    e.book.on_report(
        ExecReport(
            client_order_id="f",
            venue_order_id="v",
            kind="fill",
            account="acc",
            symbol="BTCUSDT",
            side="buy",
            trade_id="t1",
            fill_qty=5,
            fill_price=100,
        )
    )
    e.book.on_report(
        ExecReport(
            client_order_id="f",
            venue_order_id="v",
            kind="fill",
            account="acc",
            symbol="BTCUSDT",
            side="buy",
            trade_id="t1",
            fill_qty=5,
            fill_price=100,
        )
    )
    assert e.book.positions[("acc", "BTCUSDT")] == 5  # the repeated fill counted once
    e.kill_switch = True
    d = e.check(order(side="buy"))
    assert d.rule == "kill_switch" and not d.approved
    assert e.check(order(client_order_id="x", side="sell", quantity=5)).approved  # reduces the long
    assert not e.check(order(client_order_id="y", side="sell", quantity=6)).approved  # would flip it


def test_state_machine_refuses_illegal_moves() -> None:
    rec = OrderRecord(order=order())
    ev = rec.move("PENDING_RISK", 1)
    assert ev.prev_state == "NEW" and ev.state == "PENDING_RISK" and ev.seq == 1
    with pytest.raises(IllegalTransition, match="PENDING_RISK -> FILLED is not allowed"):
        rec.move("FILLED", 2)
    rec.move("DENIED", 3, "no")
    assert rec.final
    with pytest.raises(IllegalTransition):
        rec.move("ROUTED", 4)


@pytest.mark.parametrize(
    ("o", "why"),
    [
        (order(quantity=-1), "quantity must be a positive number, not -1"),
        (order(quantity=float("nan")), "quantity must be a positive number"),
        (order(limit_price=None), "a limit order needs a limit price"),
        (order(type="market"), "a market order takes no limit price"),
        (order(symbol=" "), "empty symbol"),
    ],
)
def test_invalid_orders_are_named(o, why) -> None:
    assert why in invalid(o)


def test_limit_orders_fill_only_when_they_cross_with_partial_fills() -> None:
    m = MatchingEngine(liquidity=0.4)
    m.on_price("BTCUSDT", 101.0)
    reps = m.place(order(quantity=1.0, limit_price=100.0))
    assert [r.kind for r in reps] == ["accepted"]  # 101 > 100: a buy limit at 100 rests
    assert m.on_price("BTCUSDT", 100.5) == []
    fills = m.on_price("BTCUSDT", 99.9) + m.on_price("BTCUSDT", 99.8) + m.on_price("BTCUSDT", 99.7)
    assert [r.fill_qty for r in fills] == pytest.approx([0.4, 0.4, 0.2])
    assert all(r.fill_price == 100.0 for r in fills)
    assert fills[-1].leaves_qty == 0 and len({r.trade_id for r in fills}) == 3
    assert m.on_price("BTCUSDT", 90.0) == []
    sell = m.place(order(client_order_id="s", side="sell", quantity=1, limit_price=95.0, time_in_force="IOC"))
    assert [r.kind for r in sell] == ["accepted", "canceled"]  # 90 < 95: IOC does not cross, rest canceled


def test_refdata_status_halts_a_symbol() -> None:
    e = engine()
    e.book.status["BTCUSDT"] = "halted"
    d = e.check(order())
    assert d.rule == "instrument_status" and d.reason == "BTCUSDT is halted (refdata)"
