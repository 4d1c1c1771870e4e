"""Which fills ptrc books (backend/posttrade/fills.py): only fills of an order the OMS knows,
within its quantity, each trade once; a repeat of a booked trade is a duplicate; the rest are
breaks with their reason. And the paper venue's ids never repeat across engines."""

from __future__ import annotations

from backend.exchange.matching import MatchingEngine
from backend.messages import ExecReport, Order
from backend.posttrade.fills import Booked, Ledger, judge


def order(coid: str = "o1", qty: float = 0.001, side: str = "buy", **kw) -> Order:
    return Order(
        **{
            "client_order_id": coid,
            "account": "acc",
            "symbol": "BTCUSDT",
            "side": side,
            "type": "market",
            "quantity": qty,
            **kw,
        }
    )


def fill(tid: str, qty: float, coid: str = "o1", side: str = "buy", **kw) -> ExecReport:
    return ExecReport(
        **{
            "client_order_id": coid,
            "venue_order_id": "v",
            "kind": "fill",
            "account": "acc",
            "symbol": "BTCUSDT",
            "side": side,
            "trade_id": tid,
            "fill_qty": qty,
            "fill_price": 65000.0,
            **kw,
        }
    )


def test_a_fill_within_its_order_is_booked() -> None:
    assert judge(fill("t1", 0.001), order(), 0.0, None).action == "book"


def test_breaks_name_what_does_not_fit() -> None:
    cases = [
        (fill("t1", 0.001), None, 0.0, None, "fill 't1' of 0.001 BTCUSDT for order 'o1', which the OMS does not know"),
        (fill("t1", 50.0), order(), 0.0, None, "over-fill: fill 't1' of 50 takes order 'o1' to 50 filled of 0.001"),
        (
            fill("t2", 0.0006),
            order(),
            0.0006,
            None,
            "over-fill: fill 't2' of 0.0006 takes order 'o1' to 0.0012 filled of 0.001",
        ),
        (
            fill("t1", 0.001, account="other"),
            order(),
            0.0,
            None,
            "fill 't1' for order 'o1' has account 'other' (the order's is 'acc')",
        ),
        (
            fill("t1", 0.001, side="sell", symbol="ETHUSDT"),
            order(),
            0.0,
            None,
            (
                "fill 't1' for order 'o1' has symbol 'ETHUSDT' (the order's is 'BTCUSDT'), side 'sell' (the order's "
                "is 'buy')"
            ),
        ),
        (fill("", 0.001), order(), 0.0, None, "fill for order 'o1' has no trade id"),
        (
            fill("paper-1-1", 0.01, coid="o2", side="sell"),
            order("o2", 0.01, "sell"),
            0.0,
            Booked("o1", 0.01),
            "trade id 'paper-1-1' reused: booked for order 'o1' qty 0.01, reported again for order 'o2' qty 0.01",
        ),
        (
            fill("t1", 0.0005),
            order(),
            0.0005,
            Booked("o1", 0.001),
            "trade id 't1' reused: booked for order 'o1' qty 0.001, reported again for order 'o1' qty 0.0005",
        ),
    ]
    for rep, o, filled, booked, reason in cases:
        v = judge(rep, o, filled, booked)
        assert (v.action, v.reason) == ("break", reason)


def test_a_trade_booked_before_with_the_same_order_and_quantity_is_a_duplicate() -> None:
    assert judge(fill("t1", 0.001), order(), 0.001, Booked("o1", 0.001)).action == "duplicate"
    # the sum of partial fills is compared with some slack for float rounding
    assert judge(fill("t4", 0.1), order(qty=0.3), 0.1 + 0.1, None).action == "book"


def test_the_ledger_sees_the_batch_it_books() -> None:
    led = Ledger(orders={"o1": order(qty=1.0)}, filled={"o1": 0.5}, booked={})
    assert [led.check(f).action for f in (fill("t1", 0.25), fill("t1", 0.25), fill("t2", 0.25), fill("t3", 0.25))] == [
        "book",
        "duplicate",
        "book",
        "break",
    ]
    assert led.new_trades == {"t1": Booked("o1", 0.25), "t2": Booked("o1", 0.25)}
    assert led.new_filled == {"o1": 1.0}
    assert led.check(fill("t9", 0.1, coid="nosuch")).action == "break"


def test_paper_ids_never_repeat_across_engines() -> None:
    """Two engines (a second instance during a cutover, a restart) number orders in sessions of
    their own: the same orders get other venue order and trade ids."""
    ids = []
    for session in ("s1", "s2", None, None):
        m = MatchingEngine(liquidity=None, session=session)
        m.on_price("BTCUSDT", 100.0)
        reps = m.place(order(qty=1.0)) + m.place(order("o2", qty=1.0, side="sell"))
        ids += [r.trade_id for r in reps if r.kind == "fill"]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert ids[:2] == ["paper-s1-1-1", "paper-s1-2-1"]
