"""The OMS order record and its state machine.

NEW -> PENDING_RISK -> DENIED | ROUTED -> ACCEPTED -> PARTIALLY_FILLED -> FILLED, plus CANCELED,
EXPIRED and REJECTED (by the venue, or an order that is invalid on its face). Any other move is
refused (and logged by the caller). Fills are counted once per venue trade id.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from backend.messages import (
    ACCOUNT_MAX,
    FINAL_STATES,
    ID_MAX,
    SYMBOL_MAX,
    TEXT_MAX,
    Order,
    OrderEvent,
    OrderState,
)

RECORD_KEY = "oms:order:{}"
"""Where the OMS keeps an order's record (a hash: the record `d`, msgpack, and its version `v`);
ptrc reads it to book only fills of orders the OMS knows."""

TRANSITIONS: dict[str, frozenset[OrderState]] = {
    "NEW": frozenset({"PENDING_RISK", "REJECTED"}),
    "PENDING_RISK": frozenset({"DENIED", "ROUTED", "CANCELED"}),
    "ROUTED": frozenset({"ACCEPTED", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "REJECTED"}),
    "ACCEPTED": frozenset({"PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"}),
    "PARTIALLY_FILLED": frozenset({"PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"}),
}


class IllegalTransition(Exception):
    pass


class OrderRecord(msgspec.Struct, kw_only=True):
    """What the OMS keeps per order, in Redis (`oms:order:<client order id>`)."""

    order: Order
    state: OrderState = "NEW"
    filled: float = 0.0
    notional: float = 0.0
    trade_ids: list[str] = []
    venue_order_id: str = ""
    reason: str = ""
    seq: int = 0
    intake_ns: int = 0
    risk_sent_ns: int = 0
    routed_ns: int = 0
    accepted_ns: int = 0
    updated_ns: int = 0
    cancel_requested: bool = False

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def avg_price(self) -> float:
        return self.notional / self.filled if self.filled else 0.0

    def move(self, to: OrderState, now_ns: int, reason: str = "") -> OrderEvent:
        allowed = TRANSITIONS.get(self.state, frozenset())
        if to not in allowed:
            raise IllegalTransition(f"{self.order.client_order_id}: {self.state} -> {to} is not allowed")
        prev = self.state
        self.state = to
        self.seq += 1
        self.updated_ns = now_ns
        if reason:
            self.reason = reason
        o = self.order
        return OrderEvent(
            client_order_id=o.client_order_id,
            account=o.account,
            symbol=o.symbol,
            side=o.side,
            quantity=o.quantity,
            limit_price=o.limit_price,
            state=to,
            prev_state=prev,
            filled_qty=self.filled,
            avg_price=self.avg_price,
            reason=reason,
            ts_ns=now_ns,
            seq=self.seq,
        )


def record_key(client_order_id: str, tag: str = "") -> str:
    """An order's record key; `tag`: its partition's hash tag when the order path is split
    (backend/bus/partitions.py: the record shares its partition's slot)."""
    return RECORD_KEY.format(f"{tag}:{client_order_id}" if tag else client_order_id)


def invalid(order: Order) -> str | None:
    """Why an order cannot be accepted at all (before risk), or None."""
    bounded = (
        ("client order id", order.client_order_id, ID_MAX),
        ("account", order.account, ACCOUNT_MAX),
        ("symbol", order.symbol, SYMBOL_MAX),
        ("source", order.source, TEXT_MAX),
    )
    for name, value, most in bounded:
        if len(value) > most:
            return f"{name} is {len(value):,} characters long, at most {most} are allowed"
    if not order.client_order_id.strip():
        return "empty client order id"
    if not order.account.strip():
        return "empty account"
    if not order.symbol.strip():
        return "empty symbol"
    if not math.isfinite(order.quantity) or order.quantity <= 0:
        return f"quantity must be a positive number, not {order.quantity:g}"
    if order.type == "limit":
        if order.limit_price is None:
            return "a limit order needs a limit price"
        if not math.isfinite(order.limit_price) or order.limit_price <= 0:
            return f"limit price must be a positive number, not {order.limit_price:g}"
    elif order.limit_price is not None:
        return "a market order takes no limit price"
    return None


_record_decoder = msgspec.msgpack.Decoder(OrderRecord)


def find_record(r: Any, coid: str, account: str | None = None) -> OrderRecord | None:
    """An order's record as the OMS keeps it (sync client), wherever the process's layout puts it:
    with the order path split, in its account's partition, or (no account given) in whichever
    partition holds it."""
    from backend.bus import partitions

    n = partitions.count("orders.new")
    tagged = partitions.on_cluster(r)
    parts = [partitions.partition_of(account, n)] if account is not None else range(n)
    tags = [partitions.key_tag(p, n, tagged=tagged) for p in parts]
    for tag in tags:
        raw = r.hget(record_key(coid, tag), "d")
        if raw:
            return _record_decoder.decode(raw)
    return None
