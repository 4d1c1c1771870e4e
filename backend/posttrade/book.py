"""Positions from fills (average cost, realized PnL when a fill reduces or flips a position) and
unrealized PnL marked to the last price."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Pos:
    quantity: float = 0.0
    avg_price: float = 0.0
    realized: float = 0.0
    mark: float = 0.0

    def fill(self, side: str, qty: float, price: float) -> None:
        signed = qty if side == "buy" else -qty
        q = self.quantity
        if q == 0 or (q > 0) == (signed > 0):  # opening or adding
            new = q + signed
            self.avg_price = (abs(q) * self.avg_price + abs(signed) * price) / abs(new)
            self.quantity = new
        else:  # reducing, closing or flipping
            closed = min(abs(q), abs(signed))
            self.realized += closed * (price - self.avg_price) * (1 if q > 0 else -1)
            new = q + signed
            if abs(new) < 1e-12:
                self.quantity, self.avg_price = 0.0, 0.0
            elif (new > 0) != (q > 0):  # flipped: the rest opens at this price
                self.quantity, self.avg_price = new, price
            else:
                self.quantity = new
        if not self.mark:
            self.mark = price

    @property
    def unrealized(self) -> float:
        return self.quantity * (self.mark - self.avg_price) if self.quantity and self.mark else 0.0

    @property
    def exposure(self) -> float:
        return abs(self.quantity) * (self.mark or self.avg_price)
