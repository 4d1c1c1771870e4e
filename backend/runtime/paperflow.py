"""Paper orders for the demo: small market and limit orders at a steady rate, so the blotter,
the risk latency and the fills have something to show."""

from __future__ import annotations

import random
import threading
import time

import redis

from backend.bus import codec, publish_sync, streams
from backend.marketdata import ticks as tickcols
from backend.messages import Order


class PaperFlow:
    def __init__(self, url: str, per_s: float = 2.0, seed: int = 7) -> None:
        self.r = redis.Redis.from_url(url)
        self.per_s = per_s
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self.n = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(1.0 / self.per_s):
            last = self.r.xrevrange(streams.MD_TICKS, count=1)
            if not last:
                continue
            prices = tickcols.last_prices(tickcols.decode(codec.payload(last[0][1])))
            sym = self.rng.choice(sorted(prices))
            px = prices[sym]
            limit = round(px * self.rng.uniform(0.995, 1.005), 6) if self.rng.random() < 0.4 else None
            self.n += 1
            publish_sync(self.r, streams.ORDERS_NEW, Order(
                client_order_id=f"demo-{int(time.time())}-{self.n}", account=f"paper-{self.n % 3 + 1}", symbol=sym,
                side=self.rng.choice(["buy", "sell"]), type="limit" if limit else "market",
                quantity=round(max(0.001, 1000 / px * self.rng.uniform(0.1, 1)), 6), limit_price=limit,
                time_in_force="GTC", sent_ns=time.time_ns(), source="demo"))
        self.r.close()
