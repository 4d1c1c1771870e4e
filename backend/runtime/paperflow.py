"""Paper orders for the demo: small market and limit orders at a steady rate, so the blotter,
the risk latency and the fills have something to show. Quantities and limits are on the
instrument's lot and tick sizes (refdata), so risk judges them on their merits."""

from __future__ import annotations

import math
import random
import threading
import time

from backend.bus import publish_sync, replies, streams
from backend.bus.broadcast import newest_sync
from backend.bus.connection import Login, client
from backend.bus.entries import Skips, decode_entries, decode_value
from backend.marketdata import ticks as tickcols
from backend.messages import Instrument, Order, TickBatch
from backend.refdata import master as refdata


def on_step(value: float, step: float, minimum: bool = False) -> float:
    """`value` rounded to a whole number of `step`s (at least one step with `minimum`), without
    float noise in the digits."""
    n = round(value / step)
    if minimum:
        n = max(1, n)
    digits = max(0, -math.floor(math.log10(step))) + 2
    return round(n * step, digits)


class PaperFlow:
    def __init__(self, url: str, per_s: float = 2.0, seed: int = 7, auth: Login | None = None) -> None:
        self.r = client(url, auth)  # orders.new: the operator's intake
        self.per_s = per_s
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self.n = 0
        self.steps: dict[str, tuple[float, float]] = {}  # symbol -> (tick size, lot size)
        self.steps_read = 0.0
        self.skips = Skips()  # each look that found the newest md.ticks entry undecodable

    def _steps(self) -> dict[str, tuple[float, float]]:
        """The instrument master as refdata holds it (it can change while the demo runs), else the
        packaged one; read again every 10 s."""
        if self.steps and time.monotonic() - self.steps_read < 10:
            return self.steps
        raw = replies.fields(self.r.hgetall(refdata.KEY))
        insts = [i for i in (decode_value(v, Instrument) for v in raw.values()) if i is not None]
        if not insts:
            insts = refdata.load_file(None)
        self.steps = {i.symbol: (i.tick_size, i.lot_size) for i in insts}
        self.steps_read = time.monotonic()
        return self.steps

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(1.0 / self.per_s):
            last, _ = decode_entries(
                newest_sync(self.r, streams.MD_TICKS, 4),  # the newest few (of each partition, when split)
                TickBatch,
                stream=streams.MD_TICKS,
                skips=self.skips,
            )
            prices = {}
            for _, batch in last:  # oldest first: the newest price wins
                prices.update({s: px for s, px in tickcols.last_prices(batch).items() if math.isfinite(px) and px > 0})
            if not prices:  # no ticks yet, or the newest batch is not one (or has no usable price)
                continue
            sym = self.rng.choice(sorted(prices))
            px = prices[sym]
            tick, lot = self._steps().get(sym, (1e-6, 1e-6))
            limit = (
                on_step(px * self.rng.uniform(0.995, 1.005), tick, minimum=True) if self.rng.random() < 0.4 else None
            )
            qty = on_step(max(0.001, 1000 / px * self.rng.uniform(0.1, 1)), lot, minimum=True)
            self.n += 1
            publish_sync(
                self.r,
                streams.ORDERS_NEW,
                Order(
                    client_order_id=f"demo-{int(time.time())}-{self.n}",
                    account=f"paper-{self.n % 3 + 1}",
                    symbol=sym,
                    side=self.rng.choice(["buy", "sell"]),
                    type="limit" if limit else "market",
                    quantity=qty,
                    limit_price=limit,
                    time_in_force="GTC",
                    sent_ns=time.time_ns(),
                    source="demo",
                ),
            )
        self.r.close()
