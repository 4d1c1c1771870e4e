"""Positions as the OMS's orders say they should be, to check what ptrc booked against: the fills
each order's record counted (its trade ids), each once, replayed in the order they were reported.
Pure: the caller reads the records, the exec reports and ptrc's book."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from backend.messages import ExecReport
from backend.posttrade.book import Pos
from backend.posttrade.fills import same_qty
from backend.trading.orders import OrderRecord

Key = tuple[str, str]  # (account, symbol)


def expected_positions(orders: Mapping[str, OrderRecord], reports: Iterable[ExecReport]) -> dict[Key, Pos]:
    """The positions the OMS's orders make: every fill an order's record counted, once."""
    book: dict[Key, Pos] = {}
    seen: set[tuple[str, str]] = set()
    for rep in reports:
        rec = orders.get(rep.client_order_id)
        if rep.kind != "fill" or rec is None or rep.trade_id not in rec.trade_ids:
            continue
        if (rep.client_order_id, rep.trade_id) in seen:
            continue
        seen.add((rep.client_order_id, rep.trade_id))
        o = rec.order
        book.setdefault((o.account, o.symbol), Pos()).fill(o.side, rep.fill_qty, rep.fill_price)
    return book


def differences(expected: Mapping[Key, Pos], booked: Mapping[Key, Pos], pnl_tol: float = 1e-6) -> list[str]:
    """Each position booked otherwise than expected, in words (empty: they agree)."""
    out = []
    for key in sorted(set(expected) | set(booked)):
        e, b = expected.get(key, Pos()), booked.get(key, Pos())
        if not same_qty(e.quantity, b.quantity) or abs(e.realized - b.realized) > pnl_tol * max(1.0, abs(e.realized)):
            out.append(
                f"{key[0]} {key[1]}: booked {b.quantity:g} (realized {b.realized:.2f}), "
                f"the OMS's orders make {e.quantity:g} (realized {e.realized:.2f})"
            )
    return out


def reused_trade_ids(reports: Iterable[ExecReport]) -> list[str]:
    """Trade ids reported for more than one order or quantity (a venue numbering trades twice)."""
    first: dict[str, tuple[str, float]] = {}
    reused: list[str] = []
    for rep in reports:
        if rep.kind != "fill" or not rep.trade_id:
            continue
        was = first.setdefault(rep.trade_id, (rep.client_order_id, rep.fill_qty))
        if (was[0] != rep.client_order_id or not same_qty(was[1], rep.fill_qty)) and rep.trade_id not in reused:
            reused.append(rep.trade_id)
    return reused
