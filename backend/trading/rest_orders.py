"""The REST venue's orders in flight, as live-gateway tracks them: each order with its venue
order id, the trade ids already reported and whether its end was reported, turned into
ExecReports from whichever source tells first: the REST answer of `place` / `cancel` / `query`,
the user data stream's `executionReport`, or `myTrades` on a resync. A trade id is reported
once, whatever the source, so a fill seen twice (the REST answer and the stream, or a resync
after a drop) is never reported twice, and one missed by a source is reported by another."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from backend.messages import ExecReport, Order

FINAL = {"FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"}
KIND: dict[str, Literal["canceled", "expired", "rejected"]] = {
    "CANCELED": "canceled",
    "EXPIRED": "expired",
    "REJECTED": "rejected",
    "EXPIRED_IN_MATCH": "expired",
}


@dataclass
class Tracked:
    order: Order
    venue_order_id: str = ""
    state: str = "placing"  # placing (sent, no answer yet), open, done
    known: set[str] = field(default_factory=set)
    cum: float = 0.0
    seen: float = field(default_factory=time.monotonic)

    def encode(self) -> dict[str, Any]:
        return {
            "order": msgspec.to_builtins(self.order),
            "vid": self.venue_order_id,
            "state": self.state,
            "known": sorted(self.known),
            "cum": self.cum,
        }

    @classmethod
    def decode(cls, d: dict[str, Any]) -> Tracked:
        return cls(msgspec.convert(d["order"], Order), d["vid"], d["state"], set(d["known"]), d["cum"])

    def _base(self) -> dict[str, Any]:
        o = self.order
        return dict(
            client_order_id=o.client_order_id,
            venue_order_id=self.venue_order_id,
            account=o.account,
            symbol=o.symbol,
            side=o.side,
        )

    def accepted(self) -> ExecReport:
        return ExecReport(kind="accepted", ts_ns=time.time_ns(), **self._base())

    def fill(self, trade_id: Any, qty: float, price: float) -> list[ExecReport]:
        tid = f"{self.venue_order_id}-{trade_id}"
        if tid in self.known:
            return []
        self.known.add(tid)
        self.cum += qty
        self.seen = time.monotonic()
        return [
            ExecReport(
                kind="fill",
                trade_id=tid,
                fill_qty=qty,
                fill_price=price,
                cum_qty=self.cum,
                leaves_qty=max(0.0, self.order.quantity - self.cum),
                ts_ns=time.time_ns(),
                **self._base(),
            )
        ]

    def status(self, status: str, reason: str = "") -> list[ExecReport]:
        """The end of the order, reported once (after its fills)."""
        if status not in FINAL or self.state == "done":
            return []
        self.state = "done"
        kind = KIND.get(status)
        if kind is None:  # FILLED: the fills said it
            return []
        return [
            ExecReport(
                kind=kind,
                reason=reason or f"venue status {status}",
                cum_qty=self.cum,
                ts_ns=time.time_ns(),
                **self._base(),
            )
        ]

    # -- the sources -----------------------------------------------------------------------------
    def from_body(self, body: dict[str, Any], first: bool = False) -> list[ExecReport]:
        """A REST answer (new order, query, cancel)."""
        self.venue_order_id = str(body.get("orderId", self.venue_order_id))
        out = [self.accepted()] if first else []
        for f in body.get("fills", []):
            out += self.fill(f["tradeId"], float(f["qty"]), float(f["price"]))
        if self.state == "placing":
            self.state = "open"
        return out + self._end(body.get("status", ""), float(body.get("executedQty", 0) or 0))

    def from_event(self, ev: dict[str, Any]) -> list[ExecReport]:
        """A user data stream `executionReport`."""
        if not self.venue_order_id:
            self.venue_order_id = str(ev["i"])
        out: list[ExecReport] = []
        if ev.get("x") == "TRADE":
            out += self.fill(ev["t"], float(ev["l"]), float(ev["L"]))
        return out + self._end(ev.get("X", ""), float(ev.get("z", 0) or 0), ev.get("r", ""))

    def from_trades(self, trades: list[dict[str, Any]]) -> list[ExecReport]:
        """`myTrades` of the order (a resync)."""
        out: list[ExecReport] = []
        for t in sorted(trades, key=lambda t: t["id"]):
            if str(t.get("orderId")) == self.venue_order_id:
                out += self.fill(t["id"], float(t["qty"]), float(t["price"]))
        return out

    def _end(self, status: str, executed: float, reason: str = "") -> list[ExecReport]:
        if status not in FINAL:
            return []
        if status == "FILLED" and self.cum + 1e-12 < executed:
            return []  # fills still to come (from another source): not done yet
        return self.status(status, "" if reason in ("", "NONE") else reason)
