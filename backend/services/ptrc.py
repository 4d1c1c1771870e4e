"""ptrc (P4): post-trade risk and compliance. exec.reports (its copy for ptrc, exec.reports.ptrc:
the OMS consumes exec.reports itself; backend/bus/streams.py COPIES; with the order path split by
account, the partitions its instances own) -> positions per account and symbol,
realized and unrealized PnL (marked to md.ticks), exposure; limit breaches (exposure,
concentration, drawdown) -> ops.alerts, and a resolution there when a breach is over. Positions are
published on `positions` and kept in Redis (`ptrc:pos`).

Only fills of an order the OMS knows (its record, `oms:order:<id>`), within the order's quantity,
are booked, each trade id once (backend/posttrade/fills.py); what ptrc booked is kept per trade id
(`ptrc:trades`) and per order (`ptrc:filled`), written with the positions in one transaction, so
a restart loses nothing and books nothing twice. A fill that does not fit is a break: it goes to
dlq.exec.reports.ptrc with the reason and raises a critical alert; the positions are left as they were.

With the order path split by account (backend/bus/partitions.py) ptrc's instances share its
partitions: an instance owning partition p keeps p's accounts' positions, ledger and breaches
(`ptrc:pos:{p1of4}`, `ptrc:trades:{p1of4}`, `ptrc:filled:{p1of4}`: loaded when p becomes its own,
dropped when p goes), so each account's book has one writer."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import msgspec
import redis

from backend.bus import partitions, replies, streams
from backend.bus.access import Keys, Reads, Writes
from backend.bus.publish import queue
from backend.bus.worker import StreamWorker
from backend.marketdata import ticks as tickcols
from backend.messages import Alert, ExecReport, Position, TickBatch
from backend.posttrade.book import Pos
from backend.posttrade.fills import Booked, Ledger
from backend.services.base import Service
from backend.trading.orders import RECORD_KEY, OrderRecord, record_key

POS_KEY = "ptrc:pos"
TRADES_KEY = "ptrc:trades"
"""Trade id -> the trade as booked (order and quantity)."""
FILLED_KEY = "ptrc:filled"
"""Client order id -> the quantity booked for it."""
_record = msgspec.msgpack.Decoder(OrderRecord)
_booked = msgspec.msgpack.Decoder(Booked)


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
    reads = (Reads(streams.EXEC_REPORTS_PTRC, group=True), Reads(streams.MD_TICKS))
    writes = (Writes(streams.POSITIONS), Writes(streams.OPS_ALERTS))
    keys = (
        Keys(POS_KEY + "*", write=True),
        Keys(TRADES_KEY + "*", write=True),
        Keys(FILLED_KEY + "*", write=True),
        Keys(RECORD_KEY.format("*")),
    )  # the OMS's orders: only their fills are booked

    async def setup(self) -> None:
        self.book: dict[tuple[str, str], Pos] = {}  # the owned partitions' positions (loaded with each)
        self.fills = 0
        self.duplicates = 0  # fills reported again (same trade, order and quantity): skipped
        self.breaks = 0  # fills that do not fit an order the OMS knows: dead-lettered
        self.last_px: dict[str, float] = {}  # the newest trade per symbol: marks for new positions too
        self.breaches: set[str] = set()
        self.dirty: set[tuple[str, str]] = set()
        self.unsure: set[tuple[str, str]] = set()  # positions whose last write may or may not be in Redis
        # marks follow md.ticks from its newest entry now, read once a second
        self.ticks = self.broadcast(
            {streams.MD_TICKS: "$"}, decode=TickBatch, count=2000, block_ms=None, min_interval_s=0
        )
        await self.ticks.start()
        self.n = self.settings.partition_count(streams.EXEC_REPORTS_PTRC)  # the order path's, by account
        self.tagged = partitions.on_cluster(self.r)
        self.parts = self.consume_partitions(
            streams.EXEC_REPORTS_PTRC,
            lambda p: partial(self.on_reports, p),
            decode=ExecReport,
            on_acquire=self._acquired,
            on_release=self._released,
            count=512,
            block_ms=100,
        )
        self.every(1.0, self.publish_marks)

    def processed(self) -> int:
        return self.fills

    def metrics(self) -> dict[str, object]:
        return {
            "positions": len(self.book),
            "fills": self.fills,
            "duplicates": self.duplicates,
            "breaks": self.breaks,
            "breaches": sorted(self.breaches),
            **({"partitions": self.parts.partitions(), "of": self.n} if self.n > 1 else {}),
        }

    def part_of(self, account: str) -> int:
        return partitions.partition_of(account, self.n)

    def key(self, base: str, p: int) -> str:
        """ptrc's `base` hash (positions, trades, filled) of partition p: the one hash unsplit."""
        return partitions.name(base, p, self.n, tagged=self.tagged)

    async def _acquired(self, p: int, token: int) -> None:
        """Partition p is ours: its accounts' positions, as Redis holds them."""
        for k, v in (await self.r.hgetall(self.key(POS_KEY, p))).items():
            acc, _, sym = replies.text(k).partition("|")
            self.book[(acc, sym)] = Pos(**msgspec.msgpack.decode(replies.blob(v)))

    def _released(self, p: int) -> None:
        """Partition p went to another instance: its accounts' book and breaches are its now."""
        gone = {acc for acc, _ in self.book if self.part_of(acc) == p}
        for key in [key for key in self.book if key[0] in gone]:
            del self.book[key]
        self.breaches = {b for b in self.breaches if b.split(":")[1] not in gone}

    def record_key(self, coid: str, account: str) -> str:
        """The OMS's record of an order of `account` (in its partition's slot when split)."""
        return record_key(coid, partitions.key_tag(self.part_of(account), self.n, tagged=self.tagged))

    async def on_reports(self, p: int, reps: list[tuple[bytes, ExecReport]]) -> None:
        worker = self.parts.owned[p].workers[0]  # partition p's: what is rejected goes to its dead letters
        fills: list[tuple[bytes, ExecReport]] = []
        for eid, rep in reps:
            if rep.kind != "fill":
                continue
            if not (rep.fill_qty > 0 and rep.fill_price > 0 and rep.account and rep.symbol):
                worker.reject(
                    eid,
                    f"bad fill {rep.trade_id!r}: qty {rep.fill_qty}, price {rep.fill_price}, account {rep.account!r}",
                )
                continue
            fills.append((eid, rep))
        if fills:
            await self._book(p, fills, worker)

    async def _ledger(self, p: int, reps: list[ExecReport]) -> Ledger:
        """The OMS's orders and what was booked, for these fills (one round trip)."""
        accounts = {r.client_order_id: r.account for r in reps}
        coids = list(accounts)
        tids = list(dict.fromkeys(r.trade_id for r in reps if r.trade_id))
        pipe = self.r.pipeline(transaction=False)
        for c in coids:
            pipe.hget(self.record_key(c, accounts[c]), "d")
            pipe.hget(self.key(FILLED_KEY, p), c)
        for t in tids:
            pipe.hget(self.key(TRADES_KEY, p), t)
        got = await pipe.execute()
        led = Ledger()
        for i, c in enumerate(coids):
            rec, filled = got[2 * i], got[2 * i + 1]
            led.orders[c] = _record.decode(rec).order if rec else None
            led.filled[c] = float(filled) if filled else 0.0
        for t, raw in zip(tids, got[2 * len(coids) :], strict=True):
            led.booked[t] = _booked.decode(raw) if raw else None
        return led

    async def _book(self, part: int, fills: list[tuple[bytes, ExecReport]], worker: StreamWorker) -> None:
        """Book the fills that fit their orders; dead-letter and alert the breaks. If the write
        fails (the batch is then delivered again), the positions it touched are taken again from
        Redis: it may have been made."""
        if self.unsure:
            await self._reload()
        led = await self._ledger(part, [rep for _, rep in fills])
        touched: set[tuple[str, str]] = set()
        alerts: list[Alert] = []
        before: dict[tuple[str, str], Pos | None] = {}
        breaches = set(self.breaches)
        booked = duplicates = 0
        for eid, rep in fills:
            v = led.check(rep)
            if v.action == "duplicate":
                duplicates += 1
                continue
            now = time.time_ns()
            if v.action == "break":
                worker.reject(eid, f"break: {v.reason}")
                self.breaks += 1
                alerts.append(
                    Alert(
                        id=f"ptrc-break-{eid.decode()}",
                        ts_ns=now,
                        severity="critical",
                        source="ptrc",
                        kind="break",
                        key=f"break:{rep.client_order_id}:{rep.trade_id}",
                        message=f"fill not booked: {v.reason}",
                    )
                )
                continue
            key = (rep.account, rep.symbol)
            if key not in before:
                p = self.book.get(key)
                before[key] = replace(p) if p is not None else None
            pos = self.book.setdefault(key, Pos())
            pos.fill(rep.side, rep.fill_qty, rep.fill_price)
            if rep.symbol in self.last_px:
                pos.mark = self.last_px[rep.symbol]
            touched.add(key)
            booked += 1
            alerts += self._breaches({rep.account}, now)  # after every fill, not per batch
        if touched or alerts:
            try:
                await self._publish(part, touched, alerts, led)
            except BaseException:
                # the write may have been made without our knowing (Redis went away before it
                # answered): the positions it touched are read back from Redis before the next
                # batch, where the ledger written with them says which fills are booked
                for key in before:
                    self.book.pop(key, None)
                self.unsure.update(before)
                self.breaches = breaches
                raise
        self.fills += booked
        self.duplicates += duplicates

    async def _reload(self) -> None:
        """The positions a failed write touched, as Redis holds them (the truth, with the ledger)."""
        keys = sorted(self.unsure)
        pipe = self.r.pipeline(transaction=False)  # one round trip (each key in its partition's hash)
        for a, s in keys:
            pipe.hget(self.key(POS_KEY, self.part_of(a)), f"{a}|{s}")
        raws = await pipe.execute()
        for key, raw in zip(keys, raws, strict=True):
            if isinstance(raw, bytes):
                self.book[key] = Pos(**msgspec.msgpack.decode(raw))
            else:
                self.book.pop(key, None)
        self.unsure.clear()

    async def _publish(
        self, part: int, keys: set[tuple[str, str]], alerts: list[Alert] | None = None, led: Ledger | None = None
    ) -> None:
        """Partition `part`'s positions `keys` (and, for fills, its ledger) written and published."""
        now = time.time_ns()
        pipe = self.r.pipeline(transaction=led is not None)  # fills: the book and the ledger together
        if led is not None and led.new_trades:
            pipe.hset(
                self.key(TRADES_KEY, part), mapping={t: msgspec.msgpack.encode(b) for t, b in led.new_trades.items()}
            )
            pipe.hset(self.key(FILLED_KEY, part), mapping={c: repr(q) for c, q in led.new_filled.items()})
        for key in keys:
            p = self.book[key]
            pipe.hset(
                self.key(POS_KEY, part),
                f"{key[0]}|{key[1]}",
                msgspec.msgpack.encode(
                    {"quantity": p.quantity, "avg_price": p.avg_price, "realized": p.realized, "mark": p.mark}
                ),
            )
            queue(
                pipe,
                streams.POSITIONS,
                Position(
                    account=key[0],
                    symbol=key[1],
                    quantity=p.quantity,
                    avg_price=p.avg_price,
                    realized_pnl=p.realized,
                    unrealized_pnl=p.unrealized,
                    mark=p.mark,
                    exposure=p.exposure,
                    ts_ns=now,
                ),
            )
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
            checks = [
                (
                    f"exposure:{acc}:{s}",
                    p.exposure > c.max_exposure,
                    "warning",
                    f"{acc} {s} exposure {p.exposure:,.2f} > {c.max_exposure:,.2f}",
                )
                for s, p in rows.items()
            ]
            if len(rows) >= 2 and total:
                for s, p in rows.items():
                    share = p.exposure / total
                    checks.append(
                        (
                            f"concentration:{acc}:{s}",
                            share > c.max_concentration,
                            "warning",
                            f"{acc} {s} is {share:.0%} of exposure (max {c.max_concentration:.0%})",
                        )
                    )
            checks.append(
                (
                    f"drawdown:{acc}",
                    -pnl > c.max_drawdown,
                    "critical",
                    f"{acc} PnL {pnl:,.2f} beyond drawdown limit {c.max_drawdown:,.2f}",
                )
            )
            for key, bad, sev, msg in checks:
                if bad and key not in self.breaches:  # once per breach, not every fill
                    self.breaches.add(key)
                    out.append(
                        Alert(
                            id=f"ptrc-{key}-{now}",
                            ts_ns=now,
                            severity=sev,  # type: ignore[arg-type]  # "warning" or "critical" above
                            source="ptrc",
                            kind=key.split(":")[0],
                            message=msg,
                            key=key,
                        )
                    )
                elif not bad and key in self.breaches:  # over: alerting clears the alert
                    self.breaches.discard(key)
                    out.append(
                        Alert(
                            id=f"ptrc-{key}-{now}",
                            ts_ns=now,
                            severity="info",
                            source="ptrc",
                            kind=key.split(":")[0],
                            message=f"{key} back within its limit",
                            key=key,
                            resolved="back within its limit",
                        )
                    )
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
        by_part: dict[int, set[tuple[str, str]]] = {}
        for key in changed:
            by_part.setdefault(self.part_of(key[0]), set()).add(key)
        for part, keys in sorted(by_part.items()):
            await self._publish(part, keys)


def read_positions(r: redis.Redis) -> dict[tuple[str, str], Pos]:
    """ptrc's book as kept in Redis: (account, symbol) -> position (every partition's, when the
    process's layout splits the order path)."""
    n = partitions.count(streams.ORDERS_NEW)
    names = partitions.names(POS_KEY, n, tagged=partitions.on_cluster(r))
    out = {}
    for k, v in ((k, v) for name in names for k, v in r.hgetall(name).items()):
        acc, _, sym = replies.text(k).partition("|")
        out[(acc, sym)] = Pos(**msgspec.msgpack.decode(replies.blob(v)))
    return out
