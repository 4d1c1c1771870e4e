"""ptrc (P4): post-trade risk and compliance. exec.reports -> positions per account and symbol,
realized and unrealized PnL (marked to md.ticks), exposure; limit breaches (exposure,
concentration, drawdown) -> ops.alerts. Positions are published on `positions` and kept in Redis
(`ptrc:pos`), fills counted once per trade id (`ptrc:fills`), so a restart loses nothing."""

from __future__ import annotations

import time

import msgspec

from backend.bus import streams
from backend.bus.publish import queue
from backend.marketdata import ticks as tickcols
from backend.messages import Alert, ExecReport, Position, TickBatch
from backend.posttrade.book import Pos
from backend.services.base import Service

POS_KEY = "ptrc:pos"
FILLS_KEY = "ptrc:fills"


class PtrcConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_exposure: float = 5_000_000.0
    """Per account and symbol."""
    max_concentration: float = 0.8
    """Largest share of an account's exposure in one symbol (when the account holds 2+ symbols)."""
    max_drawdown: float = 100_000.0
    """Loss (realized + unrealized) per account that raises a critical alert."""


class PtrcService(Service):
    name = "ptrc"
    Config = PtrcConfig

    async def setup(self) -> None:
        self.book: dict[tuple[str, str], Pos] = {}
        for k, v in (await self.r.hgetall(POS_KEY)).items():
            acc, _, sym = k.decode().partition("|")
            self.book[(acc, sym)] = Pos(**msgspec.msgpack.decode(v))
        self.fills = 0
        self.last_px: dict[str, float] = {}  # the newest trade per symbol: marks for new positions too
        self.breaches: set[str] = set()
        self.dirty: set[tuple[str, str]] = set()
        # marks follow md.ticks from its newest entry now, read once a second
        self.ticks = self.broadcast({streams.MD_TICKS: "$"}, decode=TickBatch, count=2000, block_ms=None,
                                 min_interval_s=0)
        await self.ticks.start()
        self.worker = self.consume(streams.EXEC_REPORTS, self.on_reports, decode=ExecReport, count=512,
                                   block_ms=100)
        self.every(1.0, self.publish_marks)

    def processed(self) -> int:
        return self.fills

    def metrics(self) -> dict[str, object]:
        return {"positions": len(self.book), "fills": self.fills, "breaches": sorted(self.breaches)}

    async def on_reports(self, reps: list[tuple[bytes, ExecReport]]) -> None:
        touched: set[tuple[str, str]] = set()
        alerts: list[Alert] = []
        for eid, rep in reps:
            if rep.kind != "fill":
                continue
            if not (rep.fill_qty > 0 and rep.fill_price > 0 and rep.account and rep.symbol):
                self.worker.reject(eid, f"bad fill {rep.trade_id!r}: qty {rep.fill_qty}, "
                                        f"price {rep.fill_price}, account {rep.account!r}")
                continue
            if not await self.r.sadd(FILLS_KEY, rep.trade_id):
                continue  # counted already
            key = (rep.account, rep.symbol)
            pos = self.book.setdefault(key, Pos())
            pos.fill(rep.side, rep.fill_qty, rep.fill_price)
            if rep.symbol in self.last_px:
                pos.mark = self.last_px[rep.symbol]
            touched.add(key)
            self.fills += 1
            alerts += self._breaches({rep.account}, time.time_ns())  # after every fill, not per batch
        if touched:
            await self._publish(touched, alerts)

    async def _publish(self, keys: set[tuple[str, str]], alerts: list[Alert] | None = None) -> None:
        now = time.time_ns()
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            p = self.book[key]
            pipe.hset(POS_KEY, f"{key[0]}|{key[1]}", msgspec.msgpack.encode(
                {"quantity": p.quantity, "avg_price": p.avg_price, "realized": p.realized, "mark": p.mark}))
            queue(pipe, streams.POSITIONS, Position(
                account=key[0], symbol=key[1], quantity=p.quantity, avg_price=p.avg_price,
                realized_pnl=p.realized, unrealized_pnl=p.unrealized, mark=p.mark, exposure=p.exposure,
                ts_ns=now))
        if alerts is None:  # a mark moved: check the accounts it touched
            alerts = self._breaches({k[0] for k in keys}, now)
        for alert in alerts:
            queue(pipe, streams.OPS_ALERTS, alert)
        await pipe.execute()

    def _breaches(self, accounts: set[str], now: int) -> list[Alert]:
        out = []
        c = self.cfg
        for acc in accounts:
            rows = {s: p for (a, s), p in self.book.items() if a == acc}
            total = sum(p.exposure for p in rows.values())
            pnl = sum(p.realized + p.unrealized for p in rows.values())
            checks = [(f"exposure:{acc}:{s}", p.exposure > c.max_exposure, "warning",
                       f"{acc} {s} exposure {p.exposure:,.2f} > {c.max_exposure:,.2f}") for s, p in rows.items()]
            if len(rows) >= 2 and total:
                for s, p in rows.items():
                    share = p.exposure / total
                    checks.append((f"concentration:{acc}:{s}", share > c.max_concentration, "warning",
                                   f"{acc} {s} is {share:.0%} of exposure (max {c.max_concentration:.0%})"))
            checks.append((f"drawdown:{acc}", -pnl > c.max_drawdown, "critical",
                           f"{acc} PnL {pnl:,.2f} beyond drawdown limit {c.max_drawdown:,.2f}"))
            for key, bad, sev, msg in checks:
                if bad and key not in self.breaches:  # once per breach, not every fill
                    self.breaches.add(key)
                    out.append(Alert(id=f"ptrc-{key}-{now}", ts_ns=now, severity=sev, source="ptrc",  # type: ignore[arg-type]
                                     kind=key.split(":")[0], message=msg, key=key))
                elif not bad:
                    self.breaches.discard(key)
        return out

    async def publish_marks(self) -> None:
        prices: dict[str, float] = {}
        for _, _, batch in await self.ticks.read():
            prices.update(tickcols.last_prices(batch))
        self.last_px.update(prices)
        changed = set()
        for key, p in self.book.items():
            px = prices.get(key[1])
            if px and px != p.mark and p.quantity:
                p.mark = px
                changed.add(key)
        if changed:
            await self._publish(changed)
