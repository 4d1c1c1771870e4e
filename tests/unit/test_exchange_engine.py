"""The matching engine against hand-worked books: price-time priority, marketable orders at the
resting prices, partial fills across levels, IOC / FOK / LIMIT_MAKER / MARKET by quantity and by
quote, fees and balances, the filters, and the rendering on the tick and the step."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from backend.exchange.accounts import Accounts
from backend.exchange.engine import Engine, Reject
from backend.exchange.filters import FilterFailure, SymbolFilters, fmt8

F = SymbolFilters("BTCUSDT", "BTC", "USDT", D("0.01"), D("0.001"))


def engine() -> Engine:
    acc = Accounts(unlimited=["mm"])
    for a in ("alice", "bob", "carol"):
        acc.open(a, {"USDT": "100000", "BTC": "10"})
    return Engine({"BTCUSDT": F}, acc)


def px(p: str) -> int:
    return F.ticks_of(D(p))


def qty(q: str) -> int:
    return F.steps_of(D(q))


def bal(e: Engine, a: str, asset: str) -> tuple[D, D]:
    return e.accounts.balance(a, asset)


def test_price_time_priority_and_a_buy_across_levels_at_the_resting_prices() -> None:
    e = engine()
    a, _ = e.place("alice", "BTCUSDT", "SELL", "LIMIT", qty("1"), px("100"))
    b, _ = e.place("bob", "BTCUSDT", "SELL", "LIMIT", qty("0.5"), px("100"))  # same price, later
    c, _ = e.place("carol", "BTCUSDT", "SELL", "LIMIT", qty("2"), px("101"))
    e.place("alice", "BTCUSDT", "SELL", "LIMIT", qty("1"), px("102"))
    taker, ex = e.place("bob", "BTCUSDT", "BUY", "LIMIT", qty("2"), px("105"))
    fills = [
        (x.fill.order_id, F.price_str(x.fill.price), F.qty_str(x.fill.qty))
        for x in ex
        if x.exec_type == "TRADE" and x.order is not taker
    ]  # the makers' side of each trade
    # oldest first at 100, then 101; never at the taker's 105
    assert fills == [
        (a.order_id, "100.00000000", "1.00000000"),
        (b.order_id, "100.00000000", "0.50000000"),
        (c.order_id, "101.00000000", "0.50000000"),
    ]
    assert taker.status == "FILLED" and taker.cum_quote == D("200.5")
    assert (a.status, b.status, c.status, F.qty_str(c.leaves)) == ("FILLED", "FILLED", "PARTIALLY_FILLED", "1.50000000")
    bids, asks = e.books["BTCUSDT"].depth(5)
    assert bids == [] and asks == [(px("101"), qty("1.5")), (px("102"), qty("1"))]
    # the public trades: buyer is the taker, so not the maker
    assert [(p.price, p.qty, p.buyer_maker) for p in e.take_prints()] == [
        (px("100"), qty("1"), False),
        (px("100"), qty("0.5"), False),
        (px("101"), qty("0.5"), False),
    ]


def test_fees_and_balances_move_with_each_fill() -> None:
    e = engine()
    e.place("alice", "BTCUSDT", "SELL", "LIMIT", qty("2"), px("100"))
    assert bal(e, "alice", "BTC") == (D("8"), D("2"))  # the sell locks its base
    _, ex = e.place("bob", "BTCUSDT", "BUY", "MARKET", qty("1.5"))
    trade = next(x.fill for x in ex if x.exec_type == "TRADE" and x.order.account == "bob")
    assert (trade.commission, trade.commission_asset, trade.is_maker) == (D("0.0015"), "BTC", False)
    # bob paid 150 USDT and received 1.5 BTC less 0.1 %
    assert bal(e, "bob", "USDT") == (D("99850.00"), D("0"))
    assert bal(e, "bob", "BTC") == (D("11.4985"), D("0"))
    # alice (maker) received 150 USDT less 0.1 % in USDT, 0.5 BTC still locked in the book
    assert bal(e, "alice", "USDT") == (D("100149.85000"), D("0"))
    assert bal(e, "alice", "BTC") == (D("8"), D("0.500"))
    # a buy limit locks its quote at the limit; filling below it frees the difference
    e.place("carol", "BTCUSDT", "BUY", "LIMIT", qty("1"), px("90"))
    assert bal(e, "carol", "USDT") == (D("99910.00000"), D("90.00000"))
    o, _ = e.place("carol", "BTCUSDT", "BUY", "LIMIT", qty("0.5"), px("120"))
    assert o.status == "FILLED" and o.cum_quote == D("50")
    assert bal(e, "carol", "USDT") == (D("99860.00000"), D("90.00000"))


def test_a_resting_buy_is_filled_at_its_own_price_when_a_later_sell_crosses_it() -> None:
    e = engine()
    b, _ = e.place("bob", "BTCUSDT", "BUY", "LIMIT", qty("1"), px("100"))
    s, ex = e.place("alice", "BTCUSDT", "SELL", "LIMIT", qty("0.4"), px("95"))
    assert [(x.order.order_id, x.fill.price) for x in ex if x.exec_type == "TRADE"] == [
        (s.order_id, px("100")),
        (b.order_id, px("100")),
    ]
    assert b.status == "PARTIALLY_FILLED" and F.qty_str(b.leaves) == "0.60000000"


def test_ioc_fok_limit_maker_and_market_by_quote() -> None:
    e = engine()
    e.place("alice", "BTCUSDT", "SELL", "LIMIT", qty("1"), px("100"))
    e.place("alice", "BTCUSDT", "SELL", "LIMIT", qty("1"), px("110"))
    ioc, ex = e.place("bob", "BTCUSDT", "BUY", "LIMIT", qty("1.5"), px("105"), "IOC")
    assert (ioc.status, F.qty_str(ioc.executed)) == ("EXPIRED", "1.00000000")
    assert [x.exec_type for x in ex if x.order is ioc] == ["NEW", "TRADE", "EXPIRED"]
    assert bal(e, "bob", "USDT")[1] == 0  # nothing stays locked
    fok, ex = e.place("bob", "BTCUSDT", "BUY", "LIMIT", qty("2"), px("110"), "FOK")
    assert fok.status == "EXPIRED" and fok.executed == 0 and not any(x.exec_type == "TRADE" for x in ex)
    with pytest.raises(Reject, match=r"Order would immediately match and take\.") as err:
        e.place("bob", "BTCUSDT", "BUY", "LIMIT_MAKER", qty("0.1"), px("110"))
    assert err.value.code == -2010
    maker, _ = e.place("bob", "BTCUSDT", "BUY", "LIMIT_MAKER", qty("0.1"), px("99"))
    assert maker.status == "NEW"
    q, _ = e.place("carol", "BTCUSDT", "BUY", "MARKET", quote_qty=D("55.5"))
    # 55.5 USDT at 110 buys 0.504 BTC (whole steps), spending 55.44
    assert (q.status, F.qty_str(q.executed), q.cum_quote) == ("FILLED", "0.50400000", D("55.44"))
    mkt, ex = e.place("carol", "BTCUSDT", "SELL", "MARKET", qty("0.2"))
    assert [F.price_str(x.fill.price) for x in ex if x.exec_type == "TRADE" and x.order is mkt] == ["99.00000000"]
    assert (mkt.status, F.qty_str(mkt.executed)) == ("EXPIRED", "0.10000000")  # the book had 0.1 bid


def test_filters_balance_duplicates_and_cancels_answer_binance_codes() -> None:
    e = engine()
    for kw, msg in [
        (dict(qty=0, price=px("100")), "Invalid quantity."),
        (dict(qty=qty("0.01"), price=px("100")), "Filter failure: MIN_NOTIONAL"),
        (dict(qty=qty("2000"), price=px("100")), "Account has insufficient balance for requested action."),
    ]:
        with pytest.raises(FilterFailure, match=msg.replace(".", r"\.")):
            e.place("alice", "BTCUSDT", "BUY", "LIMIT", **kw)
    with pytest.raises(FilterFailure, match="PRICE_FILTER"):
        F.ticks_of(D("100.001"))
    with pytest.raises(FilterFailure, match="LOT_SIZE"):
        F.steps_of(D("0.0005"))
    with pytest.raises(Reject, match="Invalid symbol"):
        e.place("alice", "ETHUSDT", "BUY", "LIMIT", 1, 1)
    o, _ = e.place("alice", "BTCUSDT", "BUY", "LIMIT", qty("1"), px("90"), client_order_id="x1")
    with pytest.raises(Reject, match=r"Duplicate order sent\.") as err:
        e.place("alice", "BTCUSDT", "BUY", "LIMIT", qty("1"), px("90"), client_order_id="x1")
    assert err.value.code == -2010
    assert bal(e, "alice", "USDT") == (D("99910.00000"), D("90.00000"))
    assert [x.exec_type for x in e.cancel(o)] == ["CANCELED"]
    assert bal(e, "alice", "USDT") == (D("100000.00000"), D("0.00000"))
    with pytest.raises(Reject, match=r"Unknown order sent\.") as err:
        e.cancel(o)
    assert err.value.code == -2011
    # once x1 is no longer open, its client order id may be used again (as on Binance)
    again, _ = e.place("alice", "BTCUSDT", "BUY", "LIMIT", qty("1"), px("90"), client_order_id="x1")
    assert again.order_id != o.order_id and e.order("BTCUSDT", client_order_id="x1", account="alice") is again


def test_a_market_maker_requotes_without_trading_with_itself() -> None:
    e = engine()
    e.quote("mm", "BTCUSDT", [("SELL", px("100"), qty("1")), ("BUY", px("100"), qty("1"))])
    assert e.books["BTCUSDT"].best_bid() == (px("100"), qty("1")) == e.books["BTCUSDT"].best_ask()
    b, _ = e.place("bob", "BTCUSDT", "BUY", "LIMIT", qty("0.5"), px("99"))
    # the market falls through bob's bid: the new ask takes it at bob's price
    ex = e.quote("mm", "BTCUSDT", [("SELL", px("98"), qty("1")), ("BUY", px("98"), qty("1"))])
    assert [(x.order.account, x.exec_type, x.fill.price) for x in ex] == [("bob", "TRADE", px("99"))]
    assert b.status == "FILLED" and len(e.open_orders("mm")) == 2 and e.open_orders("bob") == []


def test_rendering_is_on_the_tick_and_the_step() -> None:
    assert fmt8(6535969 * 1_000_000) == "65359.69000000"
    assert F.qty_str(1) == "0.00100000" and F.price_str(px("0.01")) == "0.01000000"
    assert F.nearest_ticks(65359.69310005821) == 6535969
    info = F.info()
    assert [f["filterType"] for f in info["filters"]] == ["PRICE_FILTER", "LOT_SIZE", "MIN_NOTIONAL"]
    assert info["filters"][0]["tickSize"] == "0.01000000" and info["filters"][1]["stepSize"] == "0.00100000"
