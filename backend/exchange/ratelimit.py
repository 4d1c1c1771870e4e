"""Binance's request limits: each request costs a weight, counted per IP in the current minute
(`X-MBX-USED-WEIGHT-1M` on every answer); new orders are counted per account in ten-second
windows (`X-MBX-ORDER-COUNT-10S`). Over the weight limit the answer is HTTP 429 with
`Retry-After` (seconds to the next minute); an IP that keeps sending after its 429s is banned
for a while: HTTP 418, with `Retry-After` until the ban ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Limits:
    weight_per_minute: int = 6000
    orders_per_10s: int = 100
    ban_after: int = 10  # requests answered 429 in one minute before the IP is banned
    ban_s: int = 120


@dataclass
class _Window:
    start: int = 0  # window number
    used: int = 0
    refused: int = 0


class Limited(Exception):
    def __init__(self, status: int, code: int, msg: str, retry_after: int) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.retry_after = status, code, msg, retry_after


@dataclass
class RateLimiter:
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.weights: dict[str, _Window] = {}
        self.orders: dict[str, _Window] = {}
        self.banned: dict[str, float] = {}

    def spend(self, ip: str, weight: int, now: float | None = None) -> int:
        """Charge `weight` to `ip`; the weight used this minute, or Limited (429 / 418)."""
        now = time.time() if now is None else now
        until = self.banned.get(ip)
        if until is not None:
            if now < until:
                raise Limited(
                    418,
                    -1003,
                    f"Way too much request weight used; IP banned until "
                    f"{int(until * 1000)}. Please use WebSocket Streams for live updates "
                    f"to avoid bans.",
                    max(1, int(until - now + 0.999)),
                )
            del self.banned[ip]
        minute = int(now // 60)
        w = self.weights.get(ip)
        if w is None or w.start != minute:
            w = self.weights[ip] = _Window(minute)
        if w.used + weight > self.limits.weight_per_minute:
            w.refused += 1
            if w.refused > self.limits.ban_after:
                self.banned[ip] = now + self.limits.ban_s
            raise Limited(
                429,
                -1003,
                f"Too much request weight used; current limit is "
                f"{self.limits.weight_per_minute} request weight per 1 MINUTE. Please use "
                f"WebSocket Streams for live updates to avoid polling the API.",
                max(1, int((minute + 1) * 60 - now + 0.999)),
            )
        w.used += weight
        return w.used

    def order(self, account: str, now: float | None = None) -> int:
        """Count a new order of `account`; the count this window, or Limited (429, -1015)."""
        now = time.time() if now is None else now
        slot = int(now // 10)
        w = self.orders.get(account)
        if w is None or w.start != slot:
            w = self.orders[account] = _Window(slot)
        if w.used >= self.limits.orders_per_10s:
            raise Limited(
                429,
                -1015,
                f"Too many new orders; current limit is {self.limits.orders_per_10s} orders per TEN_SECONDS.",
                max(1, int((slot + 1) * 10 - now + 0.999)),
            )
        w.used += 1
        return w.used

    def used(self, ip: str) -> int:
        w = self.weights.get(ip)
        return 0 if w is None or w.start != int(time.time() // 60) else w.used
