"""The Binance JSON of the engine's records: orders (the ACK / RESULT / FULL answers of a new
order, a query, a cancel), an account's trades, its balances, and the user data stream's
`executionReport` and `outboundAccountPosition` events. Prices and quantities are strings on the
symbol's tick and step (`backend.exchange.filters`)."""

from __future__ import annotations

from typing import Any

from backend.exchange.accounts import Accounts
from backend.exchange.engine import Execution, Fill, OrderRec
from backend.exchange.filters import SymbolFilters, dec8, fmt8

ZERO8 = "0.00000000"


def _price(rec: OrderRec, f: SymbolFilters) -> str:
    return f.price_str(rec.price) if rec.price is not None else ZERO8


def _base(rec: OrderRec, f: SymbolFilters) -> dict[str, Any]:
    return {
        "price": _price(rec, f),
        "origQty": f.qty_str(rec.orig_qty),
        "executedQty": f.qty_str(rec.executed),
        "cummulativeQuoteQty": dec8(rec.cum_quote),
        "status": rec.status,
        "timeInForce": rec.tif,
        "type": rec.type,
        "side": rec.side,
    }


def fill(x: Fill, f: SymbolFilters) -> dict[str, Any]:
    return {
        "price": f.price_str(x.price),
        "qty": f.qty_str(x.qty),
        "commission": dec8(x.commission),
        "commissionAsset": x.commission_asset,
        "tradeId": x.trade_id,
    }


def new_order(rec: OrderRec, f: SymbolFilters, execs: list[Execution], resp_type: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "symbol": rec.symbol,
        "orderId": rec.order_id,
        "orderListId": -1,
        "clientOrderId": rec.client_order_id,
        "transactTime": rec.time_ms,
    }
    if resp_type == "ACK":
        return out
    out.update(_base(rec, f))
    out.update(
        {
            "origQuoteOrderQty": dec8(rec.quote_qty) if rec.quote_qty is not None else ZERO8,
            "workingTime": rec.time_ms if rec.status != "EXPIRED" or rec.executed else -1,
            "selfTradePreventionMode": "NONE",
        }
    )
    if resp_type == "FULL":
        out["fills"] = [
            fill(e.fill, f) for e in execs if e.exec_type == "TRADE" and e.order is rec and e.fill is not None
        ]
    return out


def order(rec: OrderRec, f: SymbolFilters) -> dict[str, Any]:
    return {
        "symbol": rec.symbol,
        "orderId": rec.order_id,
        "orderListId": -1,
        "clientOrderId": rec.client_order_id,
        **_base(rec, f),
        "stopPrice": ZERO8,
        "icebergQty": ZERO8,
        "time": rec.time_ms,
        "updateTime": rec.update_ms,
        "isWorking": rec.resting is not None,
        "workingTime": rec.time_ms,
        "origQuoteOrderQty": dec8(rec.quote_qty) if rec.quote_qty is not None else ZERO8,
        "selfTradePreventionMode": "NONE",
    }


def canceled(rec: OrderRec, f: SymbolFilters, cancel_id: str, at_ms: int) -> dict[str, Any]:
    return {
        "symbol": rec.symbol,
        "origClientOrderId": rec.client_order_id,
        "orderId": rec.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_id,
        "transactTime": at_ms,
        **_base(rec, f),
        "origQuoteOrderQty": dec8(rec.quote_qty) if rec.quote_qty is not None else ZERO8,
        "selfTradePreventionMode": "NONE",
    }


def my_trade(x: Fill, f: SymbolFilters) -> dict[str, Any]:
    return {
        "symbol": x.symbol,
        "id": x.trade_id,
        "orderId": x.order_id,
        "orderListId": -1,
        "price": f.price_str(x.price),
        "qty": f.qty_str(x.qty),
        "quoteQty": dec8(x.quote),
        "commission": dec8(x.commission),
        "commissionAsset": x.commission_asset,
        "time": x.time_ms,
        "isBuyer": x.is_buyer,
        "isMaker": x.is_maker,
        "isBestMatch": True,
    }


def balances(acc: Accounts, account: str, assets: list[str] | None = None, omit_zero: bool = False) -> list[dict]:
    out = []
    for a in acc.assets(account) if assets is None else assets:
        free, locked = acc.balance(account, a)
        if omit_zero and free == 0 and locked == 0:
            continue
        out.append({"asset": a, "free": dec8(free), "locked": dec8(locked)})
    return out


def account(acc: Accounts, account: str, uid: int, now_ms: int, omit_zero: bool, fee_bp: int) -> dict[str, Any]:
    rate = fmt8(fee_bp * 10**4)
    return {
        "makerCommission": fee_bp,
        "takerCommission": fee_bp,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": rate, "taker": rate, "buyer": ZERO8, "seller": ZERO8},
        "canTrade": True,
        "canWithdraw": False,
        "canDeposit": False,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": now_ms,
        "accountType": "SPOT",
        "balances": balances(acc, account, omit_zero=omit_zero),
        "permissions": ["SPOT"],
        "uid": uid,
    }


def execution_report(e: Execution, f: SymbolFilters, event_ms: int) -> dict[str, Any]:
    rec, x = e.order, e.fill
    return {
        "e": "executionReport",
        "E": event_ms,
        "s": rec.symbol,
        "c": rec.client_order_id,
        "S": rec.side,
        "o": rec.type,
        "f": rec.tif,
        "q": f.qty_str(rec.orig_qty),
        "p": _price(rec, f),
        "P": ZERO8,
        "F": ZERO8,
        "g": -1,
        "C": "",
        "x": e.exec_type,
        "X": e.status,
        "r": "NONE",
        "i": rec.order_id,
        "l": f.qty_str(x.qty) if x else ZERO8,
        "z": f.qty_str(e.executed),
        "L": f.price_str(x.price) if x else ZERO8,
        "n": dec8(x.commission) if x else "0",
        "N": x.commission_asset if x else None,
        "T": e.time_ms,
        "t": x.trade_id if x else -1,
        "I": 0,
        "w": e.status in ("NEW", "PARTIALLY_FILLED") and rec.resting is not None,
        "m": x.is_maker if x else False,
        "M": False,
        "O": rec.time_ms,
        "Z": dec8(e.cum_quote),
        "Y": dec8(x.quote) if x else ZERO8,
        "Q": dec8(rec.quote_qty) if rec.quote_qty is not None else ZERO8,
        "W": rec.time_ms,
        "V": "NONE",
    }


def account_position(acc: Accounts, account: str, assets: list[str], event_ms: int) -> dict[str, Any]:
    return {
        "e": "outboundAccountPosition",
        "E": event_ms,
        "u": event_ms,
        "B": [{"a": b["asset"], "f": b["free"], "l": b["locked"]} for b in balances(acc, account, assets)],
    }
